//! Where datapoints go. Every sink takes the rollup stage's batches from
//! its own bounded queue and runs until that queue closes; [`build`] makes
//! the ones the config and the command line ask for.

pub mod carbon;
pub(crate) mod json;
pub(crate) mod query;

use std::sync::Arc;

use anyhow::Result;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::rollup::SharedRollup;
use crate::sample::Batch;
use crate::self_stats::Registry;

/// The sinks `hyper-stats run --output` can add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// One JSON object per datapoint and line on stdout.
    Json,
}

/// One sink, ready to run.
pub(crate) enum Sink {
    /// JSON lines on stdout.
    Json,
    /// The query socket, answering from the rollup's published windows.
    Query(query::Settings, SharedRollup),
    /// Every datapoint to Graphite.
    Carbon(Box<carbon::CarbonSink>),
}

impl Sink {
    /// The sink's name in logs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Sink::Json => "json",
            Sink::Query(..) => "query",
            Sink::Carbon(_) => "carbon",
        }
    }

    /// Whether the sink keeps datapoints named `metric` (the query socket
    /// keeps none: it answers from the rollup's windows).
    pub(crate) fn keeps_metric(&self, metric: &str) -> bool {
        match self {
            Sink::Json => true,
            Sink::Query(..) => false,
            Sink::Carbon(sink) => sink.keeps_metric(metric),
        }
    }

    /// Consumes `rx` until it closes, then flushes what the sink holds.
    pub(crate) async fn run(self, rx: mpsc::Receiver<Arc<Batch>>) -> Result<()> {
        match self {
            Sink::Json => json::run(rx).await,
            Sink::Query(settings, rollup) => query::run(settings, rollup, rx).await,
            Sink::Carbon(sink) => sink.run(Some(rx), None).await,
        }
    }
}

/// The sinks asked for: `outputs` from the command line (JSON by default
/// when Carbon is not configured), the query socket unless
/// `query.enabled = false`, Carbon when `carbon.address` is set (its spool
/// opened here, so a bad `spool_dir` stops the agent before it samples).
pub(crate) fn build(
    config: &Config,
    outputs: &[Output],
    rollup: &SharedRollup,
    stats: &Registry,
) -> Result<Vec<Sink>> {
    let mut sinks = Vec::new();
    let json =
        outputs.contains(&Output::Json) || (outputs.is_empty() && config.carbon.address.is_none());
    if json {
        sinks.push(Sink::Json);
    }
    if config.query.enabled {
        let settings = query::Settings::from_config(&config.query);
        sinks.push(Sink::Query(settings, Arc::clone(rollup)));
    }
    if let Some(sink) = carbon::build(&config.carbon, stats)? {
        sinks.push(Sink::Carbon(Box::new(sink)));
    }
    Ok(sinks)
}
