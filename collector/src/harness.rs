//! The agent's query socket without the agent: the real rollup stage and
//! query sink, fed samples in-process. For benchmarks of the plugin
//! against the sink it talks to in production (`nagios/benches`).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::rollup::{Rollup, SharedRollup};
use crate::sample::{Batch, Samples};
use crate::self_stats::Registry;
use crate::sinks::query;

/// How far back [`QuerySocket::ingest_ago`] may place a batch: the
/// longest window a query can ask for.
pub const MAX_HISTORY: Duration = Duration::from_secs(15 * 60);

/// A query socket answering from what it was fed.
pub struct QuerySocket {
    rollup: SharedRollup,
    stop: mpsc::Sender<Arc<Batch>>,
    task: JoinHandle<Result<()>>,
}

impl QuerySocket {
    /// Serves `socket` (group `group`, as `query.group`) on `runtime`;
    /// domains silent for `domain_gone` of sample time are forgotten.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        socket: PathBuf,
        group: Option<String>,
        domain_gone: Duration,
    ) -> QuerySocket {
        let now = Instant::now();
        let rollup = Rollup::new(domain_gone, &Registry::default())
            .started_at(now.checked_sub(MAX_HISTORY).unwrap_or(now));
        let rollup = Arc::new(RwLock::new(rollup));
        let (stop, stopped) = mpsc::channel(1);
        let settings = query::Settings { socket, group };
        let task = runtime.spawn(query::run(settings, Arc::clone(&rollup), stopped));
        QuerySocket { rollup, stop, task }
    }

    /// Takes in one batch as the rollup stage does, as if it had arrived
    /// `ago` before now (at most [`MAX_HISTORY`]).
    pub fn ingest_ago(&self, samples: Samples, ago: Duration) {
        let now = Instant::now();
        let at = now.checked_sub(ago).unwrap_or(now);
        self.rollup
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .ingest_at(samples, at);
    }

    /// Closes the socket (removing its file) and waits for the sink.
    pub async fn stop(self) -> Result<()> {
        drop(self.stop);
        self.task.await?
    }
}
