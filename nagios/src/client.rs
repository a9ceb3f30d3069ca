//! Talking to the agent: one request line out, one answer line back, over
//! the agent's Unix socket, with a deadline on every step.
//!
//! Every way this can fail becomes a [`Failure`] whose text says what
//! happened in the operator's terms (agent not running, permission, no
//! answer in time) and what to do about it.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use hyper_stats_query::{Request, Response, VERSION};

use crate::check::Failure;

/// The longest answer read: a `list` of a few hundred domains with all
/// their series stays well under this; anything longer is not our agent.
pub const MAX_ANSWER_BYTES: u64 = 16 * 1024 * 1024;

fn connect_failure(path: &Path, e: &io::Error) -> Failure {
    let p = path.display();
    Failure(match e.kind() {
        io::ErrorKind::NotFound => format!(
            "agent not running: query socket {p} does not exist (is hyper-stats running with [query] enabled?)"
        ),
        io::ErrorKind::ConnectionRefused => {
            format!("agent not running: connection refused on {p}")
        }
        io::ErrorKind::PermissionDenied => format!(
            "permission denied on query socket {p}: the plugin's user must be in the socket's group (query.group, default nagios)"
        ),
        _ => format!("cannot connect to query socket {p}: {e}"),
    })
}

/// Sends `request` to the socket at `path` and reads the answer, all within
/// `timeout`.
pub fn query(path: &Path, request: &Request, timeout: Duration) -> Result<Response, Failure> {
    let started = Instant::now();
    let timed_out = || {
        Failure(format!(
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
    let mut stream = UnixStream::connect(path).map_err(|e| connect_failure(path, &e))?;
    let io_failure = |what: &str, e: io::Error| {
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            timed_out()
        } else {
            Failure(format!(
                "failed to {what} the agent on {}: {e}",
                path.display()
            ))
        }
    };
    stream
        .set_write_timeout(Some(left()?))
        .map_err(|e| io_failure("write to", e))?;
    stream
        .write_all(request.to_line().as_bytes())
        .map_err(|e| io_failure("write to", e))?;
    stream
        .set_read_timeout(Some(left()?))
        .map_err(|e| io_failure("read from", e))?;
    let mut line = String::new();
    BufReader::new(io::Read::take(&stream, MAX_ANSWER_BYTES))
        .read_line(&mut line)
        .map_err(|e| io_failure("read from", e))?;
    if started.elapsed() > timeout {
        return Err(timed_out());
    }
    if line.is_empty() {
        return Err(Failure(format!(
            "the agent on {} closed the connection without answering",
            path.display()
        )));
    }
    let response: Response = serde_json::from_str(&line).map_err(|e| {
        // An agent of another protocol version may answer in a shape this
        // plugin cannot read: say so rather than "bad JSON".
        let v = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v.get("v").and_then(serde_json::Value::as_u64));
        match v {
            Some(v) if v != u64::from(VERSION) => Failure(format!(
                "the agent speaks query protocol version {v}, this plugin {VERSION}: upgrade one of them"
            )),
            _ => Failure(format!("unreadable answer from the agent: {e}")),
        }
    })?;
    Ok(response)
}
