//! The eBPF source: once a second, the per-vCPU scheduler histograms and
//! the switch and exit rates of every running guest, as samples for the
//! rollup stage.
//!
//! # What it receives and emits
//!
//! It receives the running domains from the libvirt source (a watch
//! channel of [`DomainRef`]) and finds their vCPU threads itself
//! ([`targets`](super::targets)). It emits, per vCPU and second:
//!
//! - as latency samples ([`Sample::Latency`]), every run-queue wait (`runq_latency`) and on-CPU
//!   slice (`oncpu`), decoded from the kernel's buckets, with the kernel's
//!   exact sum; the rollup turns them into
//!   `vcpu.N.runq_latency_us.{count,mean,p50,...}` and the domain-wide
//!   merge, and keeps the windows the query socket reads. One batch is one
//!   second;
//! - as gauges ([`Sample::Gauge`]), `vcpu.N.switches_voluntary_per_s`,
//!   `vcpu.N.switches_involuntary_per_s`, `vcpu.N.wakeups_per_s`, and, for
//!   vCPUs under KVM, `vcpu.N.kvm_exits_per_s` and
//!   `vcpu.N.kvm_exit_time_percent`.
//!
//! # Targets
//!
//! The watched threads are refreshed as soon as the domain list changes
//! (not at the next read: a stopped guest's slots are freed at once),
//! every [`STARTING_RELIST`] while a domain is starting (libvirt lists it
//! before QEMU has made its vCPU threads), and every [`TARGET_REFRESH`]
//! (vCPU hotplug, a QEMU restarted under the same name). A domain whose
//! threads cannot be listed is skipped and logged once. Processes named
//! with `--watch-pid` are watched the same way, as pseudo-domains.
//!
//! Threads beyond the slots are refused: an error in the log once per
//! episode, with the fix, and `agent.ebpf.unwatched_threads` counts them
//! each second (the slots are fixed when the probes load; see
//! [`super::config`]).
//!
//! # When things fail
//!
//! A failed map read skips that second (logged once per failure episode);
//! events the programs had to drop (the `STATS` counters) are logged when
//! they grow. The source stops when the stream is closed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::maps::MapError;
use hyper_stats_ebpf::{Stat, bucket_mid};
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;
use tracing::{error, info, warn};

use super::targets::{self, TargetError, VcpuThread};
use super::{HistDelta, Probes, ThreadDelta};
use crate::sample::{Datapoint, Latency, Sample, Samples};
use crate::self_stats::{Counter, Gauge, Registry};
use crate::sources::libvirt::DomainRef;

/// How often the histograms are read: each read is one second of the
/// rollup's.
pub(crate) const READ_INTERVAL: Duration = Duration::from_secs(1);

/// How often the vCPU threads are listed again even if the domains did not
/// change: catches vCPU hotplug and a QEMU restarted under the same name
/// without reading every guest's `/proc` each second.
pub(crate) const TARGET_REFRESH: Duration = Duration::from_secs(10);

/// How long a domain counts as starting: libvirt lists a guest as soon as
/// its QEMU process is launched, before QEMU has created (and named) its
/// vCPU threads, so a listing made then can come up short.
pub(crate) const STARTING_DOMAIN: Duration = Duration::from_secs(5);

/// How often the vCPU threads are listed while a domain is starting: a new
/// guest is watched within this of its vCPU threads existing.
pub(crate) const STARTING_RELIST: Duration = Duration::from_millis(250);

/// Rollup metric of run-queue waits.
pub(crate) const RUNQ_METRIC: &str = "runq_latency";
/// Rollup metric of on-CPU slices.
pub(crate) const ONCPU_METRIC: &str = "oncpu";

/// Who a watched thread is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The domain's UUID.
    pub(crate) uuid: Arc<str>,
    /// The domain's name.
    pub(crate) name: Arc<str>,
    /// The vCPU index.
    pub(crate) vcpu: u32,
    /// Whether the vCPU runs under KVM, so its KVM exits are reported.
    pub(crate) kvm: bool,
    /// The names of its rate series.
    pub(crate) rates: Arc<[Arc<str>; RATES.len()]>,
}

/// The rate series of every vCPU, `vcpu.N.<rate>`, in the order
/// [`rate_datapoints`] gives them: the KVM ones last.
const RATES: [&str; 5] = [
    "switches_voluntary_per_s",
    "switches_involuntary_per_s",
    "wakeups_per_s",
    "kvm_exits_per_s",
    "kvm_exit_time_percent",
];

/// The names of the rate series by vCPU index, made on first use and
/// shared by every guest's vCPU of that index: a thousand threads' rates
/// a second then allocate no name.
#[derive(Debug, Default)]
pub(crate) struct RateNames(BTreeMap<u32, Arc<[Arc<str>; RATES.len()]>>);

impl RateNames {
    fn get(&mut self, vcpu: u32) -> Arc<[Arc<str>; RATES.len()]> {
        let names = self
            .0
            .entry(vcpu)
            .or_insert_with(|| Arc::new(RATES.map(|r| format!("vcpu.{vcpu}.{r}").into())));
        Arc::clone(names)
    }
}

/// What [`resolve_targets`] found.
#[derive(Debug, Default)]
pub(crate) struct Resolved {
    /// The vCPU threads by thread id.
    pub(crate) targets: BTreeMap<u32, Target>,
    /// Domains whose threads could not be listed, with the reason.
    pub(crate) failed: Vec<(Arc<str>, TargetError)>,
}

/// Maps the domains to their vCPU threads, with `list` giving a domain's
/// threads (injected for tests).
pub(crate) fn resolve_targets(
    domains: &[DomainRef],
    names: &mut RateNames,
    list: impl Fn(&str) -> Result<Vec<VcpuThread>, TargetError>,
) -> Resolved {
    let mut targets = BTreeMap::new();
    let mut failed = Vec::new();
    for domain in domains {
        match list(&domain.name) {
            Ok(threads) => insert_threads(&mut targets, names, &domain.uuid, &domain.name, threads),
            Err(err) => failed.push((Arc::clone(&domain.name), err)),
        }
    }
    Resolved { targets, failed }
}

/// Adds `threads` to `targets` as the vCPUs of the domain `uuid`/`name`.
fn insert_threads(
    targets: &mut BTreeMap<u32, Target>,
    names: &mut RateNames,
    uuid: &Arc<str>,
    name: &Arc<str>,
    threads: Vec<VcpuThread>,
) {
    for t in threads {
        let target = Target {
            uuid: Arc::clone(uuid),
            name: Arc::clone(name),
            vcpu: t.vcpu,
            kvm: t.kvm,
            rates: names.get(t.vcpu),
        };
        targets.insert(t.tid, target);
    }
}

/// One thread's interval as latency samples: each bucket that grew, at
/// the bucket's midpoint (within 0.8% of every value in it), and the
/// kernel's exact sum. A vCPU without events still gets its (empty)
/// samples, so it reports `count` 0.
pub(crate) fn latency_samples(ts: f64, target: &Target, delta: &ThreadDelta) -> [Sample; 2] {
    let sample = |metric: &'static str, hist: &HistDelta| {
        Sample::Latency(Latency {
            ts,
            uuid: Arc::clone(&target.uuid),
            domain: Arc::clone(&target.name),
            vcpu: target.vcpu,
            metric,
            values: hist
                .buckets
                .iter()
                .map(|&(index, count)| (bucket_mid(index as usize), u64::from(count)))
                .collect(),
            sum_ns: hist.sum_ns,
        })
    };
    [
        sample(RUNQ_METRIC, &delta.runq),
        sample(ONCPU_METRIC, &delta.oncpu),
    ]
}

/// The per-second rates of one thread's interval of `elapsed`; the KVM
/// ones only for a vCPU under KVM while the KVM probes are attached.
pub(crate) fn rate_datapoints<'a>(
    ts: f64,
    target: &'a Target,
    delta: &ThreadDelta,
    elapsed: Duration,
    kvm_attached: bool,
) -> impl Iterator<Item = Datapoint> + 'a {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let exits: u64 = delta.kvm_exits.iter().map(|e| e.count).sum();
    let exit_ns: u64 = delta.kvm_exits.iter().map(|e| e.sum_ns).sum();
    let values = [
        delta.voluntary_switches as f64 / secs,
        delta.involuntary_switches as f64 / secs,
        delta.wakeups as f64 / secs,
        exits as f64 / secs,
        exit_ns as f64 / 1e9 / secs * 100.0,
    ];
    let kvm = kvm_attached && target.kvm;
    target
        .rates
        .iter()
        .zip(values)
        .take(if kvm { RATES.len() } else { RATES.len() - 2 })
        .map(move |(name, value)| Datapoint {
            ts,
            uuid: Arc::clone(&target.uuid),
            domain: Arc::clone(&target.name),
            metric: Arc::clone(name),
            value,
        })
}

/// The running source.
pub struct EbpfSource {
    probes: Probes,
    domains: watch::Receiver<Arc<[DomainRef]>>,
    /// The watched threads and who they are.
    targets: BTreeMap<u32, Target>,
    /// Domains whose threads could not be listed, so each is logged once.
    unlisted: BTreeSet<Arc<str>>,
    /// When each domain (by UUID) was first listed; emptied of domains
    /// that are gone. A domain younger than [`STARTING_DOMAIN`] is listed
    /// again every [`STARTING_RELIST`], and not logged if it cannot be.
    first_seen: BTreeMap<Arc<str>, Instant>,
    /// The last `STATS` read, to log drops when they grow.
    last_stats: Vec<(Stat, u64)>,
    /// Processes watched as pseudo-domains (`--watch-pid`).
    processes: Vec<u32>,
    /// Whether vCPU threads are being refused for want of slots, so the
    /// error is logged once per episode.
    short_of_slots: crate::episode::Episode,
    /// The names of the targets' rate series.
    rate_names: RateNames,
    /// Events the programs dropped (`agent.ebpf.dropped_events`).
    dropped: Counter,
    /// Durations past the kernel's last bucket (`agent.ebpf.clamped_events`).
    clamped: Counter,
    /// Threads watched now (`agent.ebpf.watched_threads`).
    watched_threads: Gauge,
    /// vCPU threads refused for want of slots (`agent.ebpf.unwatched_threads`).
    unwatched_threads: Gauge,
    /// CPU time spent reading the maps (`agent.ebpf.read_cpu_us`).
    read_cpu_us: Counter,
}

impl EbpfSource {
    /// A source reading `probes`, watching the vCPU threads of the domains
    /// `domains` publishes and of the `processes`, counting what the
    /// programs dropped and what reading costs in `stats`.
    pub fn new(
        mut probes: Probes,
        domains: watch::Receiver<Arc<[DomainRef]>>,
        processes: &[u32],
        stats: &Registry,
    ) -> Self {
        stats
            .gauge("ebpf.slots")
            .set(probes.threads().capacity() as u64);
        stats
            .gauge("ebpf.kernel_map_bytes")
            .set(probes.kernel_map_bytes());
        Self {
            dropped: stats.counter("ebpf.dropped_events"),
            clamped: stats.counter("ebpf.clamped_events"),
            watched_threads: stats.gauge("ebpf.watched_threads"),
            unwatched_threads: stats.gauge("ebpf.unwatched_threads"),
            read_cpu_us: stats.counter("ebpf.read_cpu_us"),
            processes: processes.to_vec(),
            short_of_slots: crate::episode::Episode::default(),
            rate_names: RateNames::default(),
            probes,
            domains,
            targets: BTreeMap::new(),
            unlisted: BTreeSet::new(),
            first_seen: BTreeMap::new(),
            last_stats: Vec::new(),
        }
    }

    /// Reads every [`READ_INTERVAL`] until `out` is closed.
    pub async fn run(mut self, out: mpsc::Sender<Samples>) {
        let mut tick = tokio::time::interval(READ_INTERVAL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut relist = tokio::time::interval(STARTING_RELIST);
        relist.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut last_read = Instant::now();
        let mut last_refresh: Option<Instant> = None;
        let mut failing = crate::episode::Episode::default();
        // Whether the libvirt source still publishes domains; once it is
        // gone, only the periodic refresh is left.
        let mut domains_open = true;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = self.domains.changed(), if domains_open => {
                    // A domain started or stopped: watch its threads (or
                    // stop watching them) now rather than at the next
                    // tick, so no slot outlives its thread by a second and
                    // a new guest's first second is complete.
                    match changed {
                        Ok(()) => {
                            let domains = Arc::clone(&self.domains.borrow_and_update());
                            self.refresh_targets(&domains);
                            last_refresh = Some(Instant::now());
                        }
                        Err(_) => domains_open = false,
                    }
                    continue;
                }
                _ = relist.tick(), if self.has_starting_domain() => {
                    // A starting guest's vCPU threads may not have existed
                    // at the last listing.
                    let domains = Arc::clone(&self.domains.borrow());
                    self.refresh_targets(&domains);
                    continue;
                }
                _ = out.closed() => return,
            }
            // Step 1: who to watch, when it is time (vCPU hotplug, QEMU
            // restarted under the same name), or before the first read.
            let changed = self.domains.has_changed().unwrap_or(false);
            if changed || last_refresh.is_none_or(|t| t.elapsed() >= TARGET_REFRESH) {
                let domains = Arc::clone(&self.domains.borrow_and_update());
                self.refresh_targets(&domains);
                last_refresh = Some(Instant::now());
            }

            // Step 2: what the kernel recorded since the last read, and
            // step 3, its samples; both on this thread, so the CPU time
            // they cost is the agent's `read_cpu_us`.
            let read_cpu_us = self.read_cpu_us.clone();
            let read = read_cpu_us.add_cpu_us(|| self.read_samples(&mut last_read));
            let batch = match read {
                Ok(batch) => {
                    if failing.recover() {
                        info!(message = "eBPF maps readable again.");
                    }
                    batch
                }
                Err(err) => {
                    if failing.fail() {
                        warn!(message = "Failed to read the eBPF maps; skipping this second.", error = %err);
                    }
                    continue;
                }
            };
            self.log_drops();
            if out.send(batch).await.is_err() {
                return;
            }
        }
    }

    /// Reads what the kernel recorded since `last_read` and turns it into
    /// one second of samples: histograms and rates of every watched thread.
    fn read_samples(&mut self, last_read: &mut Instant) -> Result<Samples, MapError> {
        let deltas = self.probes.threads().read()?;
        let elapsed = last_read.elapsed();
        *last_read = Instant::now();
        let ts = crate::clock::now_unix();
        let kvm = self.probes.kvm_attached();
        let mut batch = Samples::with_capacity(deltas.len() * 5);
        for delta in &deltas {
            if let Some(target) = self.targets.get(&delta.tid) {
                batch.extend(latency_samples(ts, target, delta));
                batch.extend(rate_datapoints(ts, target, delta, elapsed, kvm).map(Sample::Gauge));
            }
        }
        Ok(batch)
    }

    /// Whether a domain was first listed less than [`STARTING_DOMAIN`] ago.
    fn has_starting_domain(&self) -> bool {
        self.first_seen
            .values()
            .any(|t| t.elapsed() < STARTING_DOMAIN)
    }

    /// Lists the domains' vCPU threads and watches exactly those.
    fn refresh_targets(&mut self, domains: &[DomainRef]) {
        let now = Instant::now();
        self.first_seen
            .retain(|uuid, _| domains.iter().any(|d| d.uuid == *uuid));
        for d in domains {
            self.first_seen.entry(Arc::clone(&d.uuid)).or_insert(now);
        }
        let Resolved {
            mut targets,
            failed,
        } = resolve_targets(domains, &mut self.rate_names, targets::domain_vcpu_threads);
        let mut unlisted = BTreeSet::new();
        for (name, err) in self.resolve_processes(&mut targets) {
            if !self.unlisted.contains(&name) {
                warn!(message = "Cannot list a watched process' threads; not probing it.", process = %name, error = %err);
            }
            unlisted.insert(name);
        }
        for (name, err) in failed {
            let starting = domains.iter().any(|d| {
                d.name == name
                    && self
                        .first_seen
                        .get(&d.uuid)
                        .is_some_and(|t| t.elapsed() < STARTING_DOMAIN)
            });
            if starting {
                // Its QEMU may not have written its pid file yet.
                continue;
            }
            if !self.unlisted.contains(&name) {
                warn!(message = "Cannot list a domain's vCPU threads; not probing it.", domain = %name, error = %err);
            }
            unlisted.insert(name);
        }
        self.unlisted = unlisted;

        let tids: Vec<u32> = targets.keys().copied().collect();
        match self.probes.threads().set_watched(&tids) {
            Ok(change) => {
                let slots = self.probes.threads().capacity();
                let refused = change.refused.len();
                self.unwatched_threads.set(refused as u64);
                if refused == 0 {
                    if self.short_of_slots.recover() {
                        info!(message = "Every vCPU thread is probed again.", slots);
                    }
                } else if self.short_of_slots.fail() {
                    error!(
                        message = "More vCPU threads than eBPF slots; some are not probed. Set ebpf.max_watched above the host's vCPU threads and restart the agent.",
                        refused,
                        wanted = tids.len(),
                        slots,
                    );
                }
            }
            Err(err) => {
                warn!(message = "Failed to update the watched threads.", error = %err);
            }
        }
        self.watched_threads
            .set(self.probes.threads().watched().count() as u64);
        self.targets = targets;
    }

    /// Adds the vCPU threads of the processes watched as pseudo-domains to
    /// `targets`; returns the processes that could not be listed.
    fn resolve_processes(
        &mut self,
        targets: &mut BTreeMap<u32, Target>,
    ) -> Vec<(Arc<str>, TargetError)> {
        let proc_root = std::path::Path::new(targets::PROC);
        let mut failed = Vec::new();
        for &pid in &self.processes {
            let uuid: Arc<str> = Arc::from(format!("pid-{pid}"));
            let listed = targets::process_name(proc_root, pid)
                .and_then(|name| Ok((name, targets::vcpu_threads(proc_root, pid)?)));
            match listed {
                Ok((name, threads)) => {
                    let name = Arc::from(name);
                    insert_threads(targets, &mut self.rate_names, &uuid, &name, threads);
                }
                Err(err) => failed.push((uuid, err)),
            }
        }
        failed
    }

    /// Counts, and logs, the drop counters that grew since the last read.
    fn log_drops(&mut self) {
        let Ok(stats) = self.probes.stats() else {
            return;
        };
        for ((stat, now), (_, before)) in stats.iter().zip(self.last_stats.iter()) {
            let grown = now.saturating_sub(*before);
            if *stat == Stat::Clamped {
                self.clamped.add(grown);
            }
            let dropped = matches!(
                stat,
                Stat::ReadErrors | Stat::SlotMissing | Stat::KvmExitsFull | Stat::StaleSlot
            );
            if dropped && grown > 0 {
                self.dropped.add(grown);
                warn!(
                    message = "eBPF probes dropped events.",
                    counter = stat.name(),
                    count = now - before
                );
            }
        }
        self.last_stats = stats;
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::PathBuf;

    use hyper_stats_ebpf::{LatencyHist, bucket_index};

    use super::*;
    use crate::sources::ebpf::maps::KvmExitDelta;

    fn domain(uuid: &str, name: &str) -> DomainRef {
        DomainRef {
            uuid: Arc::from(uuid),
            name: Arc::from(name),
        }
    }

    fn hist(values: &[u64]) -> HistDelta {
        let mut dense = vec![0u32; LatencyHist::ZERO.buckets.len()];
        for &v in values {
            dense[bucket_index(v)] += 1;
        }
        let buckets = (0u32..)
            .zip(dense)
            .filter(|&(_, count)| count != 0)
            .collect();
        HistDelta {
            count: values.len() as u64,
            sum_ns: values.iter().sum(),
            max_ns: values.iter().max().copied(),
            buckets,
        }
    }

    fn delta(tid: u32) -> ThreadDelta {
        ThreadDelta {
            tid,
            runq: hist(&[10_000, 20_000, 5_000_000]),
            oncpu: hist(&[1_000_000]),
            voluntary_switches: 4,
            involuntary_switches: 2,
            wakeups: 4,
            kvm_exits: vec![
                KvmExitDelta {
                    reason: 30,
                    count: 3,
                    sum_ns: 15_000_000,
                    max_ns_ever: 9_000_000,
                },
                KvmExitDelta {
                    reason: 12,
                    count: 1,
                    sum_ns: 5_000_000,
                    max_ns_ever: 5_000_000,
                },
            ],
        }
    }

    #[test]
    fn targets_map_threads_to_domains_and_vcpus() {
        let domains = [domain("u-1", "web-1"), domain("u-2", "gone")];
        let Resolved { targets, failed } =
            resolve_targets(&domains, &mut RateNames::default(), |name| match name {
                "web-1" => Ok(vec![
                    VcpuThread {
                        vcpu: 0,
                        tid: 100,
                        kvm: true,
                    },
                    VcpuThread {
                        vcpu: 1,
                        tid: 101,
                        kvm: true,
                    },
                ]),
                _ => Err(TargetError::Read {
                    path: PathBuf::from("gone.pid"),
                    source: io::Error::from(io::ErrorKind::NotFound),
                }),
            });
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[&101].vcpu, 1);
        assert_eq!(&*targets[&100].uuid, "u-1");
        assert_eq!(failed.len(), 1);
        assert_eq!(&*failed[0].0, "gone");
    }

    fn target() -> Target {
        Target {
            uuid: Arc::from("u-1"),
            name: Arc::from("web-1"),
            vcpu: 2,
            kvm: true,
            rates: RateNames::default().get(2),
        }
    }

    #[test]
    fn deltas_reach_the_rollup_as_per_vcpu_latency_series() {
        let mut rollup = crate::rollup::Rollup::default();
        let batch = rollup.ingest(latency_samples(1_000.0, &target(), &delta(100)).into());
        let value = |metric: &str| {
            batch
                .iter()
                .find(|d| &*d.metric == metric)
                .unwrap_or_else(|| panic!("no {metric}"))
                .value
        };
        assert_eq!(value("vcpu.2.runq_latency_us.count"), 3.0);
        assert_eq!(value("vcpu.2.oncpu_us.count"), 1.0);
        // The kernel's exact sum, not the bucket midpoints'.
        assert_eq!(value("vcpu.2.runq_latency_us.sum"), 5_030.0);
        // 5 ms, through a bucket midpoint and the rollup's histogram.
        let max = value("vcpu.2.runq_latency_us.max");
        assert!((max - 5_000.0).abs() / 5_000.0 < 0.01, "{max}");
        assert_eq!(value("runq_latency_us.count"), 3.0);
    }

    #[test]
    fn rates_are_per_second_and_kvm_only_under_kvm() {
        let target = target();
        let points: Vec<_> =
            rate_datapoints(5.0, &target, &delta(100), Duration::from_secs(2), true).collect();
        let got: Vec<(&str, f64)> = points.iter().map(|d| (&*d.metric, d.value)).collect();
        assert_eq!(
            got,
            vec![
                ("vcpu.2.switches_voluntary_per_s", 2.0),
                ("vcpu.2.switches_involuntary_per_s", 1.0),
                ("vcpu.2.wakeups_per_s", 2.0),
                ("vcpu.2.kvm_exits_per_s", 2.0),
                ("vcpu.2.kvm_exit_time_percent", 1.0),
            ]
        );
        let points = rate_datapoints(5.0, &target, &delta(100), Duration::from_secs(2), false);
        assert_eq!(points.count(), 3);
        let tcg = Target {
            kvm: false,
            ..target.clone()
        };
        let points = rate_datapoints(5.0, &tcg, &delta(100), Duration::from_secs(2), true);
        assert_eq!(points.count(), 3);
    }
}
