//! The client side of the query socket: one request line out, one answer
//! line back, over the agent's Unix socket, with a deadline on every step.
//!
//! `check_hyper_stats` and `hyper-stats top` both talk to the agent through
//! [`query`], so they fail the same way and say so in the same words. Every
//! way an exchange can fail becomes a [`ClientError`] whose text says what
//! happened in the operator's terms (agent not running, permission, no
//! answer in time, another protocol version) and what to do about it.

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{Request, Response, VERSION};

/// The longest answer read: a `list` of a few hundred domains with all
/// their series stays well under this; anything longer is not our agent.
pub const MAX_ANSWER_BYTES: u64 = 16 * 1024 * 1024;

/// Why an exchange with the agent failed, as a sentence for the operator
/// (lowercase, names the socket, says what to check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError(pub String);

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClientError {}

fn connect_error(path: &Path, e: &io::Error) -> ClientError {
    let p = path.display();
    ClientError(match e.kind() {
        io::ErrorKind::NotFound => format!(
            "agent not running: query socket {p} does not exist (is hyper-stats running with [query] enabled?)"
        ),
        io::ErrorKind::ConnectionRefused => {
            format!("agent not running: connection refused on {p}")
        }
        io::ErrorKind::PermissionDenied => format!(
            "permission denied on query socket {p}: this user must be in the socket's group (query.group, default nagios)"
        ),
        _ => format!("cannot connect to query socket {p}: {e}"),
    })
}

/// Sends `request` to the socket at `path` and reads the answer, all within
/// `timeout`. An error answer of the agent (`{"error":...}`) is a
/// [`Response`] like any other: what it means is the caller's to judge.
pub fn query(path: &Path, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let started = Instant::now();
    let timed_out = || {
        ClientError(format!(
            "no answer from the agent on {} within {:.0?}",
            path.display(),
            timeout
        ))
    };
    let left = || {
        timeout
            .checked_sub(started.elapsed())
            .filter(|d| !d.is_zero())
            .ok_or_else(timed_out)
    };
    let mut stream = UnixStream::connect(path).map_err(|e| connect_error(path, &e))?;
    let io_error = |what: &str, e: io::Error| {
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            timed_out()
        } else {
            ClientError(format!(
                "failed to {what} the agent on {}: {e}",
                path.display()
            ))
        }
    };
    stream
        .set_write_timeout(Some(left()?))
        .map_err(|e| io_error("write to", e))?;
    stream
        .write_all(request.to_line().as_bytes())
        .map_err(|e| io_error("write to", e))?;
    stream
        .set_read_timeout(Some(left()?))
        .map_err(|e| io_error("read from", e))?;
    let mut line = String::new();
    BufReader::new(io::Read::take(&stream, MAX_ANSWER_BYTES))
        .read_line(&mut line)
        .map_err(|e| io_error("read from", e))?;
    if started.elapsed() > timeout {
        return Err(timed_out());
    }
    if line.is_empty() {
        return Err(ClientError(format!(
            "the agent on {} closed the connection without answering",
            path.display()
        )));
    }
    serde_json::from_str(&line).map_err(|e| {
        // An agent of another protocol version may answer in a shape this
        // client cannot read: say so rather than "bad JSON".
        let v = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v.get("v").and_then(serde_json::Value::as_u64));
        match v {
            Some(v) if v != u64::from(VERSION) => ClientError(format!(
                "the agent speaks query protocol version {v}, this client {VERSION}: upgrade one of them"
            )),
            _ => ClientError(format!("unreadable answer from the agent: {e}")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Outcome, Query};
    use std::os::unix::net::UnixListener;

    /// A one-shot server on a socket in a fresh directory that answers the
    /// first connection with `answer` (or nothing when `None`).
    fn serve(answer: Option<&'static str>) -> (tempdir::Dir, std::path::PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).unwrap();
            if let Some(answer) = answer {
                (&stream).write_all(answer.as_bytes()).unwrap();
            }
        });
        (dir, path)
    }

    /// A temporary directory removed on drop (this crate has no
    /// dev-dependencies).
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "hs-query-client-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    const LIST: &str =
        "{\"v\":1,\"list\":{\"newest_age_s\":null,\"histograms\":[],\"domains\":[]}}\n";

    #[test]
    fn an_answer_is_read() {
        let (_dir, path) = serve(Some(LIST));
        let r = query(&path, &Request::new(Query::List), Duration::from_secs(5)).unwrap();
        assert!(matches!(r.outcome, Outcome::List(_)), "{r:?}");
    }

    #[test]
    fn failures_say_what_happened() {
        let t = Duration::from_secs(5);
        let list = Request::new(Query::List);
        let dir = tempdir::Dir::new();
        let missing = dir.0.join("none.sock");
        let e = query(&missing, &list, t).unwrap_err();
        assert!(e.0.starts_with("agent not running: query socket"), "{e}");

        // A socket file nobody listens on: connection refused.
        let stale = dir.0.join("stale.sock");
        drop(UnixListener::bind(&stale).unwrap());
        let e = query(&stale, &list, t).unwrap_err();
        assert!(e.0.contains("connection refused"), "{e}");

        let (_d, path) = serve(None);
        let e = query(&path, &list, t).unwrap_err();
        assert!(
            e.0.contains("closed the connection without answering"),
            "{e}"
        );

        let (_d, path) = serve(Some("{\"v\":2,\"whatever\":{}}\n"));
        let e = query(&path, &list, t).unwrap_err();
        assert!(e.0.contains("protocol version 2"), "{e}");

        let (_d, path) = serve(Some("nonsense\n"));
        let e = query(&path, &list, t).unwrap_err();
        assert!(e.0.starts_with("unreadable answer"), "{e}");
    }

    #[test]
    fn a_silent_agent_times_out() {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("silent.sock");
        // Accepts (the backlog does) but never answers.
        let _listener = UnixListener::bind(&path).unwrap();
        let started = Instant::now();
        let e = query(
            &path,
            &Request::new(Query::List),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(e.0.starts_with("no answer from the agent"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
