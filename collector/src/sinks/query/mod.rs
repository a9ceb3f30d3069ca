//! The query socket: answers `check_hyper_stats` (and anyone allowed to
//! connect) with recent values of the agent's series, over a local Unix
//! socket.
//!
//! # What does this module do?
//! It serves what the rollup stage publishes: the gauge windows of every
//! series (averages and maxima over a window) and the merged percentile
//! windows of the latency histograms ([`answer`]). The protocol (one JSON
//! request line, one JSON answer line, versioned) is defined once, in the
//! `hyper-stats-query` crate, which the plugin uses too.
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

pub(crate) mod answer;
pub(crate) mod config;
pub(crate) mod server;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use tokio::sync::mpsc;
use tracing::{error, info};

use crate::rollup::SharedRollup;
use crate::sample::Batch;
use config::QueryConfig;

/// What the query sink needs to run.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Where the socket is created.
    pub(crate) socket: PathBuf,
    /// The configured group, if any (else `nagios` if it exists).
    pub(crate) group: Option<String>,
}

impl Settings {
    /// The settings of the `[query]` section.
    pub(crate) fn from_config(config: &QueryConfig) -> Settings {
        Settings {
            socket: config.socket.clone(),
            group: config.group.clone(),
        }
    }
}

/// Serves the socket from `rollup` until the pipeline closes `rx` (its
/// batches carry nothing the rollup does not publish).
pub(crate) async fn run(
    settings: Settings,
    rollup: SharedRollup,
    mut rx: mpsc::Receiver<Arc<Batch>>,
) -> Result<()> {
    // Binding is done here, inside the runtime, and its failure does not
    // end the sink (see the module docs).
    let bound = server::socket_group(settings.group.as_deref())
        .and_then(|gid| server::bind(&settings.socket, gid));
    let server = match bound {
        Ok(bound) => {
            info!(message = "Query socket listening.", path = %settings.socket.display());
            Some(tokio::spawn(async move {
                let result = server::serve(&bound.listener, rollup).await;
                drop(bound);
                result
            }))
        }
        Err(e) => {
            error!(message = "Query socket disabled.", error = %format!("{e:#}"));
            None
        }
    };
    while rx.recv().await.is_some() {}
    if let Some(server) = server {
        // Aborting drops the task's BoundSocket, which removes the file.
        server.abort();
        let _ = server.await;
    }
    Ok(())
}
