//! The pipeline: wires sources -> rollup -> sinks and runs them until the
//! agent is told to stop.
//!
//! Sources send batches of samples into one channel; the rollup stage
//! turns each into a batch of datapoints (and publishes its windows to the
//! query sink); a fan-out task hands every batch (shared, not copied) to
//! each stream sink's own bounded queue. A sink that falls behind loses
//! batches (logged once per episode) instead of slowing down sampling: the
//! sources never wait on a sink. On shutdown (`--duration` elapsed, SIGINT
//! or SIGTERM) the sources stop first, the rollup drains, then every sink
//! drains what it was given and exits.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::config::Config;
use crate::episode::Episode;
use crate::rollup::{self, Rollup, SharedRollup};
use crate::sample::{Batch, Sample, Samples};
use crate::self_stats;
use crate::sinks::{self, Output};
use crate::sources::ebpf::source::EbpfSource;
use crate::sources::ebpf::{ProbeOptions, Probes, targets};
use crate::sources::libvirt::LibvirtSource;

/// Batches a sink may have waiting before new ones are dropped for it:
/// about a minute of 1 s polls.
const SINK_QUEUE_BATCHES: usize = 64;

/// Batches the sources may have waiting for the rollup, and the rollup
/// for the fan-out.
const SOURCE_QUEUE_BATCHES: usize = 16;

/// What `hyper-stats run` was asked for on its command line.
#[derive(Debug, Clone, Default)]
pub struct RunArgs {
    /// Where datapoints go.
    pub outputs: Vec<Output>,
    /// Stop after this long; `None` runs until a signal.
    pub duration: Option<Duration>,
    /// Processes watched as pseudo-domains besides libvirt's guests
    /// (`--watch-pid`): their `CPU <n>/...` threads are probed like
    /// vCPUs. For benchmarks and tests on hosts without many guests.
    pub watch_pids: Vec<u32>,
}

/// A per-vCPU summary's name: whether a sink keeps it decides whether the
/// rollup emits them.
const PER_VCPU_SUMMARY: &str = "vcpu.0.runq_latency_us.p99";

/// A heatmap bucket's name: whether a sink keeps it decides whether the
/// rollup emits them.
const HEATMAP_BUCKET: &str = "runq_latency_us.buckets.1";

/// Runs the agent until `args.duration` has passed (if given) or a signal
/// asks it to stop.
pub async fn run(config: &Config, args: &RunArgs) -> Result<()> {
    let (outputs, duration) = (&args.outputs, args.duration);
    let (source_tx, source_rx) = mpsc::channel::<Samples>(SOURCE_QUEUE_BATCHES);
    let (rollup_tx, mut rollup_rx) = mpsc::channel::<Batch>(SOURCE_QUEUE_BATCHES);

    // The agent's own series: every part registers what it counts.
    let stats = Arc::new(self_stats::Registry::default());
    // The rollup stage: every window, published to the query socket.
    let intervals = config.libvirt.group_intervals().into_values();
    let rollup: SharedRollup = Arc::new(std::sync::RwLock::new(Rollup::new(
        rollup::domain_gone(intervals),
        &stats,
    )));
    let stage = tokio::spawn(rollup::run(
        Arc::clone(&rollup),
        source_rx,
        rollup_tx,
        stats.counter("rollup.cpu_us"),
    ));

    let mut sink_txs = Vec::new();
    let mut sink_tasks: JoinSet<(&'static str, Result<()>)> = JoinSet::new();
    let sinks = sinks::build(config, outputs, &rollup, &stats)?;
    // Each vCPU's per-second summaries are made only if a sink keeps them.
    let per_vcpu = sinks.iter().any(|s| s.keeps_metric(PER_VCPU_SUMMARY));
    let heatmap = sinks.iter().any(|s| s.keeps_metric(HEATMAP_BUCKET));
    {
        let mut rollup = rollup.write().unwrap_or_else(|e| e.into_inner());
        rollup.set_per_vcpu_summaries(per_vcpu);
        rollup.set_heatmap_buckets(heatmap);
    }
    for sink in sinks {
        let (tx, rx) = mpsc::channel::<Arc<Batch>>(SINK_QUEUE_BATCHES);
        let name = sink.name();
        sink_tasks.spawn(async move { (name, sink.run(rx).await) });
        sink_txs.push((name, tx, Episode::default()));
    }

    let source = LibvirtSource::new(
        &config.libvirt.uri,
        config.libvirt.call_timeout,
        config.libvirt.group_intervals(),
        &stats,
    );
    let mut source_tasks = JoinSet::new();
    // The eBPF probes watch the vCPU threads of the domains libvirt lists.
    // Without them (no root, no BTF, object not built) the agent still
    // reports every libvirt stat; the reason is said once, with the fix.
    // Their maps are sized from the vCPU threads the host has now.
    let vcpu_threads = targets::host_vcpu_threads(Path::new(targets::PROC));
    let options = ProbeOptions {
        max_watched: config.ebpf.slots(vcpu_threads),
        ..ProbeOptions::default()
    };
    match Probes::load(&options) {
        Ok(probes) => {
            info!(
                message = "eBPF probes attached.",
                kvm = probes.kvm_attached(),
                slots = options.max_watched,
                vcpu_threads,
                kernel_map_bytes = probes.kernel_map_bytes(),
            );
            let ebpf = EbpfSource::new(probes, source.domains(), &args.watch_pids, &stats);
            source_tasks.spawn(ebpf.run(source_tx.clone()));
        }
        Err(reason) => {
            warn!(message = "eBPF probes are off; reporting libvirt stats only.", reason = %format!("{reason:#}"))
        }
    }
    source_tasks.spawn(source.run(source_tx.clone()));
    source_tasks.spawn(self_stats::run(stats, source_tx, |batch| {
        batch.into_iter().map(Sample::Gauge).collect()
    }));

    let fanout = tokio::spawn(async move {
        while let Some(batch) = rollup_rx.recv().await {
            let batch = Arc::new(batch);
            for (name, tx, lagging) in sink_txs.iter_mut() {
                match tx.try_send(Arc::clone(&batch)) {
                    Ok(()) => {
                        if lagging.recover() {
                            info!(message = "Sink caught up.", sink = %name);
                        }
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        if lagging.fail() {
                            warn!(message = "Sink is falling behind; dropping batches for it.", sink = %name);
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
        }
    });

    // A sink that ends before shutdown has failed (e.g. stdout closed):
    // the agent stops with its error rather than sample into the void.
    let early_sink_end = tokio::select! {
        _ = sleep_or_forever(duration) => { info!(message = "Stopping.", reason = "duration elapsed"); None }
        r = shutdown_signal() => { info!(message = "Stopping.", reason = r?); None }
        Some(ended) = sink_tasks.join_next() => Some(ended),
    };
    source_tasks.shutdown().await;
    // The sources' senders are gone now: the rollup drains and ends, then
    // the fan-out, which closes every sink's queue.
    stage.await.context("rollup stage panicked")?;
    fanout.await.context("fan-out task panicked")?;
    let mut ended: Vec<_> = early_sink_end.into_iter().collect();
    while let Some(result) = sink_tasks.join_next().await {
        ended.push(result);
    }
    for result in ended {
        let (name, result) = result.context("a sink panicked")?;
        result.with_context(|| format!("sink {name} failed"))?;
    }
    Ok(())
}

async fn sleep_or_forever(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Resolves with the name of the first SIGTERM or SIGINT: how every
/// long-running command of the agent is asked to stop.
pub(crate) async fn shutdown_signal() -> Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("failed to install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("failed to install SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
