//! The query socket: answers `check_hyper_stats` (and anyone allowed to
//! connect) with recent values of the agent's series, over a local Unix
//! socket.
//!
//! # What does this module do?
//! It is a sink: it consumes the datapoint stream into a [`QueryState`]
//! (a 15-minute ring of every libvirt series, for averages and maxima over
//! a window) and reads percentile windows from the shared histogram
//! [`Rollup`](crate::rollup::Rollup) that the eBPF source fills. The
//! protocol (one JSON request line, one JSON answer line, versioned) is
//! defined once, in the `hyper-stats-query` crate, which the plugin uses
//! too.
//!
//! # The socket
//! `query.socket` (default `/run/hyper-stats/hyper-stats.sock`). The
//! directory is created if missing (mode 0750); the socket gets mode 0660
//! and the group `query.group`, by default `nagios` if that group exists
//! (Debian's NRPE and Nagios run their checks as `nagios`). A socket left
//! by an agent that died is replaced; one that another process still
//! answers on is not. It never listens on a network port.
//!
//! # When things fail
//! A client that sends a malformed, oversized or slow request gets an
//! error answer and its connection closed; nothing else notices. If the
//! socket cannot be created (bad path, missing group, another agent), the
//! sink logs why once and keeps consuming the stream without a socket: the
//! agent's other outputs go on. The socket file is removed when the agent
//! stops.

pub mod server;
pub mod state;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use tokio::sync::mpsc;
use tracing::{error, info};

use crate::config::Config;
use crate::rollup::SharedRollup;
use crate::sample::Batch;
pub use state::QueryState;

/// The shortest time a domain may be silent before the socket forgets it:
/// 15 polls at the default 1 s.
pub const MIN_DOMAIN_GONE: Duration = Duration::from_secs(15);

/// How many of its longest poll interval a domain may miss before it is
/// forgotten (so a host polled every 60 s keeps its domains).
pub const DOMAIN_GONE_INTERVALS: u32 = 3;

/// What the query sink needs to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the socket is created.
    pub socket: PathBuf,
    /// The configured group, if any (else `nagios` if it exists).
    pub group: Option<String>,
    /// How long a domain may be silent before it is forgotten.
    pub domain_gone: Duration,
}

impl Settings {
    /// The settings from the agent's config.
    pub fn from_config(config: &Config) -> Settings {
        let longest = config
            .group_intervals()
            .values()
            .max()
            .copied()
            .unwrap_or(Duration::from_secs(1));
        Settings {
            socket: config.query.socket.clone(),
            group: config.query.group.clone(),
            domain_gone: MIN_DOMAIN_GONE.max(longest * DOMAIN_GONE_INTERVALS),
        }
    }
}

/// Consumes batches until the channel closes, serving the socket meanwhile.
pub async fn run(
    settings: Settings,
    mut rx: mpsc::Receiver<Arc<Batch>>,
    rollup: SharedRollup,
) -> Result<()> {
    let state = Arc::new(Mutex::new(QueryState::new(settings.domain_gone)));
    // Binding is done here, inside the runtime, and its failure does not
    // end the sink (see the module docs).
    let bound = server::socket_group(settings.group.as_deref())
        .and_then(|gid| server::bind(&settings.socket, gid));
    let server = match bound {
        Ok(bound) => {
            info!(message = "Query socket listening.", path = %settings.socket.display());
            let state = Arc::clone(&state);
            Some(tokio::spawn(async move {
                let result = server::serve(&bound.listener, state, rollup).await;
                drop(bound);
                result
            }))
        }
        Err(e) => {
            error!(message = "Query socket disabled.", error = %format!("{e:#}"));
            None
        }
    };
    while let Some(batch) = rx.recv().await {
        state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ingest(&batch);
    }
    if let Some(server) = server {
        // Aborting drops the task's BoundSocket, which removes the file.
        server.abort();
        let _ = server.await;
    }
    Ok(())
}
