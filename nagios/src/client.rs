//! Talking to the agent: one request line out, one answer line back, over
//! the agent's Unix socket, with a deadline on every step.
//!
//! The exchange itself is the protocol crate's ([`hyper_stats_query::client`],
//! shared with `hyper-stats top`); this module only turns its errors into
//! the plugin's [`Failure`] (an UNKNOWN line).

use std::path::Path;
use std::time::Duration;

use hyper_stats_query::{Request, Response};

use crate::check::Failure;

/// Sends `request` to the socket at `path` and reads the answer, all within
/// `timeout`.
pub fn query(path: &Path, request: &Request, timeout: Duration) -> Result<Response, Failure> {
    hyper_stats_query::client::query(path, request, timeout).map_err(|e| Failure(e.0))
}
