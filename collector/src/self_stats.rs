//! The agent's own series: what its parts count about themselves, sent
//! once a second as datapoints named `agent.<part>.<what>` that belong to
//! no domain, so every sink carries them like any other series.
//!
//! # What it owns
//! A [`Registry`] of named series. A part registers its series once (a
//! [`Counter`] it adds to as things happen, or a [`Gauge`] it sets) and
//! keeps the handle; nothing is locked on the hot path. A [`Reporter`]
//! turns the registry into one batch a second: a counter becomes its
//! increase since the previous batch, a gauge its current value.
//!
//! # The series
//! - `agent.ebpf.dropped_events`: events the eBPF programs could not
//!   record (a kernel read failed, a slot was missing or stale, the KVM
//!   exit map was full);
//! - `agent.ebpf.clamped_events`: durations beyond the kernel histograms'
//!   last bucket;
//! - `agent.rollup.clamped_values`: values beyond the rollup histograms'
//!   last bucket (2^32 ns, 4.29 s), counted in it;
//! - `agent.ebpf.watched_threads`, `agent.ebpf.slots`: threads the probes
//!   watch, and how many they could (the kernel maps' size);
//! - `agent.ebpf.unwatched_threads`: vCPU threads left unwatched because
//!   every slot was taken (0 unless the host outgrew `ebpf.max_watched`);
//! - `agent.ebpf.kernel_map_bytes`: the kernel memory of the probes' maps;
//! - `agent.ebpf.read_cpu_us`, `agent.rollup.cpu_us`: CPU time the agent
//!   spent reading the maps and in the rollup stage, µs per second;
//! - `agent.libvirt.poll_failures`: libvirt polls that failed or timed out;
//! - `agent.carbon.*`: the Carbon sink's traffic (see `sinks::carbon`).
//!
//! Counts are per report, i.e. per second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::sample::{Batch, Datapoint};

/// The first component of every agent series.
pub(crate) const AGENT_PREFIX: &str = "agent.";

/// How often the series are reported.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// A count that only grows; reported as its increase per report.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds `n`.
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Runs `f` and adds the CPU time the calling thread spent in it, in
    /// µs: the agent's own cost of a step (`f` must not await or hand work
    /// to other threads, or their time is missed).
    pub(crate) fn add_cpu_us<T>(&self, f: impl FnOnce() -> T) -> T {
        let start = crate::clock::thread_cpu_time();
        let out = f();
        let spent = crate::clock::thread_cpu_time().saturating_sub(start);
        self.add(spent.as_micros() as u64);
        out
    }

    /// The total so far.
    #[cfg(test)]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value set as it changes; reported as it is.
#[derive(Debug, Clone, Default)]
pub(crate) struct Gauge(Arc<AtomicU64>);

impl Gauge {
    /// Sets the value.
    pub(crate) fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

/// One registered series.
#[derive(Debug)]
enum Series {
    Counter(Counter),
    Gauge(Gauge),
}

/// The agent's series, by full name.
#[derive(Debug, Default)]
pub struct Registry {
    series: Mutex<Vec<(Arc<str>, Series)>>,
}

impl Registry {
    /// Registers the counter `agent.<name>`.
    pub(crate) fn counter(&self, name: &str) -> Counter {
        let c = Counter::default();
        self.register(name, Series::Counter(c.clone()));
        c
    }

    /// Registers the gauge `agent.<name>`.
    pub(crate) fn gauge(&self, name: &str) -> Gauge {
        let g = Gauge::default();
        self.register(name, Series::Gauge(g.clone()));
        g
    }

    fn register(&self, name: &str, series: Series) {
        self.series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((format!("{AGENT_PREFIX}{name}").into(), series));
    }
}

/// Turns a registry into batches.
pub(crate) struct Reporter {
    registry: Arc<Registry>,
    /// Each counter's total at the previous report, by position.
    previous: Vec<u64>,
}

impl Reporter {
    /// A reporter of `registry`'s series.
    pub(crate) fn new(registry: Arc<Registry>) -> Reporter {
        Reporter {
            registry,
            previous: Vec::new(),
        }
    }

    /// One datapoint per series at `ts`.
    pub(crate) fn report(&mut self, ts: f64) -> Batch {
        let series = self
            .registry
            .series
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.previous.resize(series.len(), 0);
        series
            .iter()
            .zip(self.previous.iter_mut())
            .map(|((name, s), previous)| {
                let value = match s {
                    Series::Counter(c) => {
                        let total = c.0.load(Ordering::Relaxed);
                        let delta = total.saturating_sub(*previous);
                        *previous = total;
                        delta
                    }
                    Series::Gauge(g) => g.0.load(Ordering::Relaxed),
                };
                Datapoint::agent(ts, Arc::clone(name), value as f64)
            })
            .collect()
    }
}

/// Reports `registry` every [`REPORT_INTERVAL`] into `out` (as the
/// pipeline's samples, or a Carbon sink's batches: `wrap` makes one) until
/// `out` closes.
pub(crate) async fn run<T>(
    registry: Arc<Registry>,
    out: mpsc::Sender<T>,
    wrap: impl Fn(Batch) -> T,
) {
    let mut reporter = Reporter::new(registry);
    let mut tick = tokio::time::interval(REPORT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = out.closed() => return,
        }
        let batch = reporter.report(crate::clock::now_unix());
        if out.send(wrap(batch)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_report_increases_and_gauges_values() {
        let registry = Arc::new(Registry::default());
        let drops = registry.counter("ebpf.dropped_events");
        let queued = registry.gauge("carbon.queued_points");
        let mut r = Reporter::new(Arc::clone(&registry));
        drops.add(3);
        queued.set(7);
        let b = r.report(10.0);
        let got: Vec<(&str, f64)> = b.iter().map(|p| (&*p.metric, p.value)).collect();
        assert_eq!(
            got,
            [
                ("agent.ebpf.dropped_events", 3.0),
                ("agent.carbon.queued_points", 7.0)
            ]
        );
        assert!(b.iter().all(|p| p.is_agent() && p.ts == 10.0));
        drops.add(2);
        let b = r.report(11.0);
        assert_eq!((b[0].value, b[1].value), (2.0, 7.0));
        // Registered later: reported from then on.
        let late = registry.counter("libvirt.poll_failures");
        late.add(1);
        let b = r.report(12.0);
        assert_eq!(b.len(), 3);
        assert_eq!((b[0].value, b[2].value), (0.0, 1.0));
    }
}
