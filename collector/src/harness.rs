//! The agent's query socket without the agent: the real rollup stage and
//! query sink, fed samples in-process. For benchmarks of the plugin
//! against the sink it talks to in production (`nagios/benches`).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Result;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::rollup::{Rollup, SharedRollup};
use crate::sample::{Batch, Samples};
use crate::self_stats::Registry;
use crate::sinks::query;

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
        let rollup = Arc::new(RwLock::new(Rollup::new(domain_gone, &Registry::default())));
        let (stop, stopped) = mpsc::channel(1);
        let settings = query::Settings { socket, group };
        let task = runtime.spawn(query::run(settings, Arc::clone(&rollup), stopped));
        QuerySocket { rollup, stop, task }
    }

    /// Takes in one batch, as the rollup stage does.
    pub fn ingest(&self, samples: Samples) {
        self.rollup
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .ingest(samples);
    }

    /// Closes the socket (removing its file) and waits for the sink.
    pub async fn stop(self) -> Result<()> {
        drop(self.stop);
        self.task.await?
    }
}
