//! A small blocking HTTP/1.1 client for the daemons the tests start on
//! 127.0.0.1 (graphite-web, chromedriver, the dashboard): one request per
//! connection (`Connection: close`), read to the end. Enough for JSON APIs
//! on loopback; not a general client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long one request may take, connect to last byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A response: status code and body.
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics naming the body if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends `method path` to `127.0.0.1:port` with `body` of `content_type`.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    s.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers in the response"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok(Response { status, body })
}

/// `GET path`, panicking if the connection fails.
pub fn get(port: u16, path: &str) -> Response {
    request(port, "GET", path, "text/plain", b"")
        .unwrap_or_else(|e| panic!("GET 127.0.0.1:{port}{path}: {e}"))
}

/// `POST path` with a JSON body, panicking if the connection fails.
pub fn post_json(port: u16, path: &str, body: &serde_json::Value) -> Response {
    request(port, "POST", path, "application/json", body.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("POST 127.0.0.1:{port}{path}: {e}"))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..eol]).split(';').next().unwrap().trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

/// Percent-encodes `s` for a query string or form body.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
