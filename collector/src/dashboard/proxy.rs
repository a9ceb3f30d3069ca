//! The Graphite proxy: forwards the page's `render` and `metrics/find`
//! queries to one graphite-web, and nothing else.
//!
//! # What it forwards
//! `GET /graphite/render?…`, `POST /graphite/render` (a form body, for a
//! page asking for many targets at once) and `GET /graphite/metrics/find?…`
//! go to the same path under the `--graphite` base URL. Only the query
//! string or form body travel upstream, with a fixed set of headers: no
//! cookies, no `Host` of the page's choosing, no other path. The path is
//! matched against [`ALLOWED`], so the dashboard is never an open proxy.
//!
//! # Limits
//! A query string over [`MAX_QUERY_BYTES`] or a body over
//! [`MAX_BODY_BYTES`] is refused (414, 413) before anything goes upstream;
//! graphite-web's answer must arrive within the `--graphite-timeout` (504
//! otherwise) and be at most [`MAX_RESPONSE_BYTES`] (502 otherwise).
//!
//! # When things fail
//! graphite-web unreachable: 502 with the reason in one line of plain text,
//! which the page shows. graphite-web's own errors (a bad target is a 400
//! or 500 there) pass through with its status and body.

use std::time::Duration;

use anyhow::{Result, bail};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The graphite-web paths the page may reach, and the methods for each:
/// the render API and the metric tree's find API.
pub(crate) const ALLOWED: &[(&str, &[Method])] = &[
    ("render", &[Method::GET, Method::POST]),
    ("metrics/find", &[Method::GET]),
];

/// Longest query string forwarded. The page's longest query (twenty
/// guests' summaries in one request) is about 6 KiB, and goes as a POST.
pub(crate) const MAX_QUERY_BYTES: usize = 16 * 1024;

/// Largest request body forwarded (a form of render targets): four times
/// what the page sends at most.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// Largest graphite-web answer passed on. A week of 1 s points for one
/// series in JSON is about 15 MiB; the page asks for far less (it sets
/// `maxDataPoints`), so this only stops a runaway query from filling the
/// dashboard's memory.
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Where the queries go.
#[derive(Clone)]
pub(crate) struct Upstream {
    /// `http://host:port` plus the base path without a trailing `/`.
    base: String,
    /// How long one query may take, graphite-web's answer included.
    timeout: Duration,
    /// One connection pool for every query.
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Upstream {
    /// Checks `--graphite` (an `http://` URL without query or fragment).
    pub(crate) fn parse(url: &str, timeout: Duration) -> Result<Upstream> {
        let Some(rest) = url.strip_prefix("http://") else {
            bail!(
                "invalid --graphite {url:?}: expected an http:// URL such as http://graphite:8080\n\
                 (https is not supported: put the dashboard next to graphite-web)"
            );
        };
        let authority = rest.split('/').next().unwrap_or("");
        if authority.is_empty() || rest.contains(['?', '#', '@', ' ']) {
            bail!("invalid --graphite {url:?}: expected http://HOST[:PORT][/PATH]");
        }
        let base = url.trim_end_matches('/').to_owned();
        base.parse::<hyper::Uri>()
            .map_err(|e| anyhow::anyhow!("invalid --graphite {url:?}: {e}"))?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Upstream {
            base,
            timeout,
            client,
        })
    }

    /// Forwards one page request for graphite-web path `path` (without the
    /// `/graphite/` prefix); answers what goes back to the page.
    pub(crate) async fn forward(
        &self,
        path: &str,
        method: &Method,
        query: Option<&str>,
        body: Bytes,
    ) -> Response<Full<Bytes>> {
        let Some((_, methods)) = ALLOWED.iter().find(|(p, _)| *p == path) else {
            return text(StatusCode::NOT_FOUND, "not a forwarded graphite-web path");
        };
        if !methods.contains(method) {
            return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        }
        let query = query.unwrap_or("");
        if query.len() > MAX_QUERY_BYTES {
            return text(StatusCode::URI_TOO_LONG, "query string too long");
        }
        if body.len() > MAX_BODY_BYTES {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
        }
        let mut uri = format!("{}/{}", self.base, path);
        if !query.is_empty() {
            uri.push('?');
            uri.push_str(query);
        }
        let mut request = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header(header::ACCEPT, "application/json");
        if *method == Method::POST {
            request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let request = match request.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => return text(StatusCode::BAD_REQUEST, &format!("bad query: {e}")),
        };
        match tokio::time::timeout(self.timeout, self.fetch(request)).await {
            Err(_) => text(
                StatusCode::GATEWAY_TIMEOUT,
                &format!(
                    "graphite-web did not answer within {} s",
                    self.timeout.as_secs_f64()
                ),
            ),
            Ok(Err(reason)) => {
                tracing::warn!(message = "graphite-web query failed.", uri = %uri, error = %reason);
                text(StatusCode::BAD_GATEWAY, &reason)
            }
            Ok(Ok(response)) => response,
        }
    }

    /// Sends `request` and reads the whole answer, at most
    /// [`MAX_RESPONSE_BYTES`].
    async fn fetch(&self, request: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, String> {
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("graphite-web at {} is unreachable: {e:#}", self.base))?;
        let status = response.status();
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading graphite-web's answer failed: {e}"))?
            .to_bytes();
        let mut out = Response::builder()
            .status(status)
            .header(header::CACHE_CONTROL, "no-store");
        if let Some(ct) = content_type {
            out = out.header(header::CONTENT_TYPE, ct);
        }
        out.body(Full::new(body)).map_err(|e| e.to_string())
    }
}

/// Whether `prefix` is a valid first path component (what the agent's
/// sanitizer lets through).
pub(crate) fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A plain-text answer.
pub(crate) fn text(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{msg}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(url: &str) -> Result<Upstream> {
        Upstream::parse(url, Duration::from_secs(1))
    }

    #[test]
    fn graphite_urls() {
        assert_eq!(upstream("http://g:8080").unwrap().base, "http://g:8080");
        assert_eq!(upstream("http://g:8080/").unwrap().base, "http://g:8080");
        assert_eq!(
            upstream("http://g/graphite/").unwrap().base,
            "http://g/graphite"
        );
        for bad in [
            "https://g",
            "g:8080",
            "http://",
            "http://g/?x=1",
            "http://u@g/",
        ] {
            let err = upstream(bad).err().expect(bad).to_string();
            assert!(err.starts_with("invalid --graphite"), "{bad}: {err}");
        }
    }

    #[test]
    fn prefixes() {
        assert!(valid_prefix("hyperstats"));
        assert!(valid_prefix("hs_1-a"));
        assert!(!valid_prefix(""));
        assert!(!valid_prefix("a.b"));
        assert!(!valid_prefix("a*"));
    }

    #[tokio::test]
    async fn only_allowed_paths_and_methods_are_forwarded() {
        // Nothing listens on port 9 of 127.0.0.1: a forwarded request
        // would answer 502; refused ones answer before connecting.
        let up = upstream("http://127.0.0.1:9").unwrap();
        let cases: &[(&str, Method, &str, usize, StatusCode)] = &[
            ("admin", Method::GET, "", 0, StatusCode::NOT_FOUND),
            ("../render", Method::GET, "", 0, StatusCode::NOT_FOUND),
            ("composer", Method::GET, "", 0, StatusCode::NOT_FOUND),
            (
                "metrics/find",
                Method::POST,
                "",
                0,
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (
                "render",
                Method::DELETE,
                "",
                0,
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (
                "render",
                Method::GET,
                "x",
                MAX_QUERY_BYTES + 1,
                StatusCode::URI_TOO_LONG,
            ),
            (
                "render",
                Method::POST,
                "",
                MAX_BODY_BYTES + 1,
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (
                "render",
                Method::GET,
                "target=a",
                0,
                StatusCode::BAD_GATEWAY,
            ),
            (
                "metrics/find",
                Method::GET,
                "query=*",
                0,
                StatusCode::BAD_GATEWAY,
            ),
        ];
        for (path, method, query, size, want) in cases {
            let query = if *method == Method::GET && *size > 0 {
                query.repeat(*size)
            } else {
                query.to_string()
            };
            let body = if *method == Method::POST {
                Bytes::from(vec![b'a'; *size])
            } else {
                Bytes::new()
            };
            let r = up.forward(path, method, Some(&query), body).await;
            assert_eq!(r.status(), *want, "{method} {path} ({size} bytes)");
        }
    }
}
