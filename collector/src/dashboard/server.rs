//! The dashboard's HTTP server: routes a request to an embedded asset, the
//! page's config or the Graphite proxy.
//!
//! # Routes
//! - `GET /`: the single-page app (`index.html`); the view lives in the
//!   URL's fragment, so every view is this one page.
//! - `GET /assets/NAME`: the embedded scripts and styles.
//! - `GET /config.json`: what the page needs to know (the path prefix).
//! - `/graphite/render`, `/graphite/metrics/find`: forwarded (see
//!   [`super::proxy`]).
//!
//! # Limits
//! At most [`MAX_CONNECTIONS`] connections at once (further ones wait in
//! the kernel's backlog), a client must send its request head within
//! [`HEADER_TIMEOUT`], and a body is read only up to the proxy's limit.
//!
//! # When things fail
//! A connection that fails is logged at debug level and dropped; the
//! server goes on. SIGINT or SIGTERM stop it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::assets;
use super::proxy::{self, Upstream};

/// Connections served at once: a handful of browsers each keep about six;
/// this bounds the server's memory, not its normal use.
const MAX_CONNECTIONS: usize = 256;

/// How long a client may take to send a request's head (slow-loris guard).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What every request handler shares.
struct State {
    /// The one graphite-web.
    upstream: Upstream,
    /// `/config.json`, made once.
    config_json: Bytes,
}

/// Binds `listen`.
pub(crate) async fn bind(listen: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(listen).await.with_context(|| {
        format!(
            "failed to listen on {listen}\n(is another dashboard running? pick another address with --listen)"
        )
    })
}

/// Serves on `listener` until SIGINT or SIGTERM.
pub(crate) async fn serve(listener: TcpListener, upstream: Upstream, prefix: String) -> Result<()> {
    let state = Arc::new(State {
        upstream,
        config_json: Bytes::from(serde_json::json!({ "prefix": prefix }).to_string()),
    });
    tracing::info!(message = "Dashboard listening.", url = %format!("http://{}/", listener.local_addr()?));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("failed to install the SIGTERM handler")?;
    loop {
        let permit = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            p = slots.clone().acquire_owned() => p.context("connection limit closed")?,
        };
        let (stream, peer) = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(error) => {
                    // EMFILE and the like: back off briefly, keep serving.
                    tracing::warn!(message = "Accepting a connection failed.", error = %error);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&state, req).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = conn.await {
                tracing::debug!(message = "Connection ended with an error.", peer = %peer, error = %error);
            }
            drop(permit);
        });
    }
    tracing::info!(message = "Dashboard stopped.");
    Ok(())
}

/// Answers one request.
async fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let method = req.method().clone();
    if let Some(upstream_path) = path.strip_prefix("/graphite/") {
        // Read the body first, bounded: a form of render targets.
        let body = match Limited::new(req.into_body(), proxy::MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => return proxy::text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
        };
        return state
            .upstream
            .forward(upstream_path, &method, query.as_deref(), body)
            .await;
    }
    if method != Method::GET && method != Method::HEAD {
        return proxy::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let (body, content_type) = match path.as_str() {
        "/" | "/index.html" => match assets::get("index.html") {
            Some(a) => (Bytes::from_static(a.body), a.content_type),
            None => return proxy::text(StatusCode::INTERNAL_SERVER_ERROR, "index.html missing"),
        },
        "/config.json" => (state.config_json.clone(), "application/json"),
        p => match p.strip_prefix("/assets/").and_then(assets::get) {
            Some(a) => (Bytes::from_static(a.body), a.content_type),
            None => return proxy::text(StatusCode::NOT_FOUND, "not found"),
        },
    };
    let mut r = Response::new(Full::new(body));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    // Everything the page loads comes from here: no CDN, no inline script.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'",
        ),
    );
    r
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};

    use super::*;

    /// A fake graphite-web: answers every request with a JSON body naming
    /// the request line and body it received.
    fn fake_graphite() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in l.incoming() {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut length = 0;
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    if h == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let answer = serde_json::json!({
                    "line": line.trim_end(),
                    "body": String::from_utf8_lossy(&body),
                })
                .to_string();
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                )
                .unwrap();
            }
        });
        port
    }

    /// Sends one request to the dashboard on `port`: (status, content
    /// type, body).
    async fn ask(port: u16, method: Method, path: &str, body: &str) -> (u16, String, String) {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let req = Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:{port}{path}"))
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let r = client.request(req).await.unwrap();
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, ct, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn routes_assets_and_forwards_only_graphite_queries() {
        let graphite = fake_graphite();
        let upstream = Upstream::parse(
            &format!("http://127.0.0.1:{graphite}/graphite-web"),
            Duration::from_secs(5),
        )
        .unwrap();
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(serve(listener, upstream, "hs".into()));

        let (status, ct, body) = ask(port, Method::GET, "/", "").await;
        assert_eq!((status, ct.as_str()), (200, "text/html; charset=utf-8"));
        assert!(body.contains("/assets/app.js"));
        let (status, ct, _) = ask(port, Method::GET, "/assets/d3.min.js", "").await;
        assert_eq!(
            (status, ct.as_str()),
            (200, "text/javascript; charset=utf-8")
        );
        let (status, _, body) = ask(port, Method::GET, "/config.json", "").await;
        assert_eq!((status, body.as_str()), (200, r#"{"prefix":"hs"}"#));
        for path in [
            "/assets/../Cargo.toml",
            "/nothing",
            "/graphite/composer/",
            "/graphite/",
        ] {
            assert_eq!(ask(port, Method::GET, path, "").await.0, 404, "{path}");
        }
        assert_eq!(ask(port, Method::POST, "/", "x").await.0, 405);

        // Forwarded under the base path, query and form body unchanged.
        let (status, _, body) = ask(
            port,
            Method::GET,
            "/graphite/metrics/find?query=hs.*&format=treejson",
            "",
        )
        .await;
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["line"],
            "GET /graphite-web/metrics/find?query=hs.*&format=treejson HTTP/1.1"
        );
        let (status, _, body) = ask(
            port,
            Method::POST,
            "/graphite/render",
            "target=a.b&format=json",
        )
        .await;
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["line"], "POST /graphite-web/render HTTP/1.1");
        assert_eq!(v["body"], "target=a.b&format=json");
    }
}
