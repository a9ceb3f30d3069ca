//! The rollup stage: between the sources and the sinks, it turns latency
//! samples into per-second histogram summaries, keeps every series'
//! windows (histogram and gauge) for the query socket, and retires the
//! series of domains that are gone.
//!
//! # What it receives and emits
//! It receives the sources' [`Samples`], one batch per poll, and emits one
//! [`Batch`] of datapoints per batch:
//! - [`Sample::Gauge`]s pass through unchanged and join their series'
//!   [`gauge::GaugeWindow`];
//! - [`Sample::Latency`]s (one vCPU's `(value_ns, count)` pairs and exact
//!   sum for one second) go into that vCPU's histogram; a batch holding
//!   latencies closes the second: every series' histogram of that second
//!   becomes `vcpu.N.<metric>_us.{count,sum,mean,p50,p90,p99,p999,max}`
//!   and, from the merged histogram of all of a domain's vCPUs (merged,
//!   never averaged percentiles), `<metric>_us.{...}`; then the second
//!   joins the vCPU series' [`window::Windows`];
//! - [`Sample::Retired`] ends a domain's series at once.
//!
//! A second's summaries cover the series that got a sample in it: the eBPF
//! source sends an (empty) sample for every watched vCPU each second, so a
//! quiet vCPU reports `count` 0, while one that is no longer watched stops
//! at once and its windows end after `domain_gone` without samples.
//!
//! `sum` and `mean` are exact (the sum of the recorded durations, not of
//! bucket midpoints), so summing `sum` over seconds gives a thread's total
//! wait to the nanosecond; the percentiles and `max` are bucket midpoints,
//! within 0.78% of the values they stand for (see [`histogram`]).
//!
//! # Memory
//! Only the vCPU series keep windows. A domain's window is merged from its
//! vCPUs' windows when asked (each vCPU's window rounded out to its own
//! buckets), so it costs no memory of its own; it covers the vCPUs that
//! still have a series, so a vCPU whose series ended (`domain_gone` after
//! its thread stopped being watched) leaves the domain's windows too. With
//! 200 waits and 200 slices a second per vCPU spread over a log-normal
//! (σ = 1), once its windows are full a latency series holds about
//! 36 KiB, a gauge series 2 KiB and a vCPU with nine gauges about 91 KiB:
//! see [`Rollup::heap_bytes`], `memory_at_steady_state` and the `rollup`
//! bench.
//!
//! # What it publishes
//! The stage owns the [`Rollup`] behind a [`SharedRollup`]: it alone
//! writes, once per batch; the query sink reads it to answer (gauge
//! windows, histogram windows, listings). Nothing else keeps a window.
//!
//! # Lifetime
//! This is the one place a domain's series end: when the libvirt source
//! says the domain is gone, or when the domain had no sample for
//! `domain_gone` of stream time (the libvirt source cannot say: libvirtd
//! is down, or polls fail), so answers list running domains only. A vCPU
//! that goes quiet keeps reporting `count` 0 as long as it is watched.

pub(crate) mod gauge;
pub(crate) mod histogram;
pub(crate) mod window;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::sample::{Batch, Datapoint, Latency, Sample, Samples};
use crate::self_stats::{Counter, Registry};
use gauge::GaugeSet;
use histogram::{ALLOC_OVERHEAD_BYTES, LatencyHistogram, Merger, Summary};
use hyper_stats_ebpf::HIST_BUCKETS;
use window::Windows;

use hyper_stats_query::metric::{
    self, HEATMAP_BOUNDS_US, HEATMAP_COMPONENT, PERCENTILES, SUMMARIES,
};

/// The shortest time a domain may be silent before its series end: 15
/// polls at the default 1 s.
pub(crate) const MIN_DOMAIN_GONE: Duration = Duration::from_secs(15);

/// How many of its longest poll interval a domain may miss before its
/// series end (so a host polled every 60 s keeps its domains).
pub(crate) const DOMAIN_GONE_INTERVALS: u32 = 3;

/// How long a domain may be silent before its series end, for sources
/// polling at `intervals`.
pub(crate) fn domain_gone(intervals: impl IntoIterator<Item = Duration>) -> Duration {
    let longest = intervals
        .into_iter()
        .max()
        .unwrap_or(Duration::from_secs(1));
    MIN_DOMAIN_GONE.max(longest * DOMAIN_GONE_INTERVALS)
}

/// One latency series: the histogram of the current second, its exact
/// sum, and the windows.
struct Series {
    /// The summaries' names, e.g. `vcpu.3.runq_latency_us.p99`: shared by
    /// every guest's series of this metric and vCPU, made once.
    names: Arc<SummaryNames>,
    /// The current second's values; handed to the windows (and freed)
    /// when the second closes, so a closed series holds no open histogram.
    current: LatencyHistogram,
    /// The exact sum of the current second's values, in ns: the histogram
    /// only knows its buckets.
    current_sum_ns: u64,
    /// Whether the current second got a sample (an empty one counts: a
    /// watched vCPU without events).
    sampled: bool,
    /// Closed seconds in a row without a sample.
    idle_s: u64,
    /// The last 1, 5 and 15 minutes.
    windows: Windows,
}

impl Series {
    /// A new series named `names`, whose coarse windows close at `phase`
    /// (see [`Windows::with_phase`]).
    fn new(names: Arc<SummaryNames>, phase: u64) -> Series {
        Series {
            names,
            current: LatencyHistogram::default(),
            current_sum_ns: 0,
            sampled: false,
            idle_s: 0,
            windows: Windows::with_phase(phase),
        }
    }
}

/// One domain's series.
pub(crate) struct DomainSeries {
    name: Arc<str>,
    uuid: Arc<str>,
    /// Time of the domain's newest sample.
    newest_ts: f64,
    /// Latency series per `(metric, vcpu)`; the domain-wide ones are
    /// merged from them when needed.
    latency: BTreeMap<(&'static str, u32), Series>,
    /// When each latency metric last closed a second, e.g.
    /// `runq_latency` (the age of the histogram data).
    latency_ts: BTreeMap<&'static str, f64>,
    /// Gauge series by full metric name.
    gauges: GaugeSet,
}

impl DomainSeries {
    /// The domain's UUID.
    pub(crate) fn uuid(&self) -> &Arc<str> {
        &self.uuid
    }

    /// The domain's name, as last seen.
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Time of the domain's newest sample.
    pub(crate) fn newest_ts(&self) -> f64 {
        self.newest_ts
    }

    /// The gauge series, by name.
    pub(crate) fn gauges(&self) -> &GaugeSet {
        &self.gauges
    }

    /// The vCPUs with a `metric` latency series, ascending.
    pub(crate) fn vcpus(&self, metric: &str) -> Vec<u32> {
        self.latency
            .keys()
            .filter(|(m, _)| *m == metric)
            .map(|(_, v)| *v)
            .collect()
    }

    /// When `metric` last closed a second.
    pub(crate) fn latency_ts(&self, metric: &str) -> Option<f64> {
        self.latency_ts.get(metric).copied()
    }

    /// The merged histogram of `metric` over the last `window` for one
    /// vCPU (`Some`) or the whole domain (`None`: all its vCPUs' windows
    /// merged, once the domain has closed a second of `metric`); `None` if
    /// there is no such series or `window` is longer than the windows keep.
    pub(crate) fn window(
        &self,
        metric: &str,
        vcpu: Option<u32>,
        window: Duration,
    ) -> Option<LatencyHistogram> {
        let mut merger = Merger::default();
        let mut found = false;
        for ((m, v), s) in &self.latency {
            if *m != metric || vcpu.is_some_and(|want| want != *v) {
                continue;
            }
            if !s.windows.add_to(window, &mut merger) {
                return None;
            }
            found = true;
        }
        let ready = vcpu.is_some() || self.latency_ts.contains_key(metric);
        (found && ready).then(|| merger.finish())
    }

    /// Heap bytes held by the domain's series (windows, gauge windows,
    /// names and map nodes), allocator overhead included.
    pub(crate) fn heap_bytes(&self) -> usize {
        let node = |key: usize, value: usize| key + value + ALLOC_OVERHEAD_BYTES;
        let latency: usize = self
            .latency
            .values()
            .map(|s| {
                node(size_of::<(&str, u32)>(), size_of::<Series>())
                    + s.current.heap_bytes()
                    + s.windows.heap_bytes()
            })
            .sum();
        latency + self.gauges.heap_bytes()
    }
}

/// The rollup, written by its stage and read by the query sink.
pub(crate) type SharedRollup = Arc<RwLock<Rollup>>;

/// Every series of the host.
pub struct Rollup {
    domains: HashMap<Arc<str>, DomainSeries>,
    /// The agent's own series (`agent.*`), which belong to no domain.
    agent: GaugeSet,
    /// Time of the newest sample of any domain.
    newest_ts: Option<f64>,
    /// The start of the rollup's own clock: every time it keeps (window
    /// buckets, ages, expiry) is monotonic seconds since this, taken when a
    /// batch arrives, so a wall clock stepped back or forward (NTP, a
    /// resumed VM) neither freezes the windows nor expires live guests.
    /// The datapoints keep the sources' wall-clock times.
    epoch: Instant,
    /// How long a domain may go without a sample before its series end.
    domain_gone: Duration,
    /// Values outside the histogram's range, clamped
    /// (`agent.rollup.clamped_values`).
    clamped: Counter,
    /// Scratch space for the coarse window buckets that close each second,
    /// kept so that closing allocates no 26 KiB array per series.
    merger: Merger,
    /// Scratch space for one domain's summaries in `close_second`, which
    /// follow its vCPUs': kept so that closing allocates nothing per
    /// domain.
    domain_summaries: Vec<(&'static str, u64, Summary<{ PERCENTILES.len() }>)>,
    /// Whether each vCPU's per-second summaries are emitted as datapoints
    /// (`vcpu.N.<metric>_us.*`), or only the domain's: off when no sink
    /// would keep them (the query socket reads windows, not datapoints,
    /// and Carbon without `per_vcpu` drops them), which saves most of the
    /// stage's work on a dense host. The windows are kept either way.
    per_vcpu_summaries: bool,
    /// The window phase of the next new series: consecutive series close
    /// their 10 s and 1 min buckets in different seconds, so a host of a
    /// thousand vCPUs pays for a sixtieth of its minute buckets each
    /// second, not all of them in one.
    next_phase: u64,
    /// The names of the summaries.
    names: Names,
    /// Whether the summaries include the heatmap buckets
    /// (`<histogram>.buckets.<bound>`): off when no sink would keep them.
    heatmap_buckets: bool,
}

impl Default for Rollup {
    fn default() -> Self {
        Rollup::new(MIN_DOMAIN_GONE, &Registry::default())
    }
}

impl Rollup {
    /// An empty rollup whose domains end after `domain_gone` of silence,
    /// counting clamped values in `stats`.
    pub(crate) fn new(domain_gone: Duration, stats: &Registry) -> Rollup {
        Rollup {
            domains: HashMap::new(),
            agent: GaugeSet::default(),
            newest_ts: None,
            epoch: Instant::now(),
            domain_gone,
            clamped: stats.counter("rollup.clamped_values"),
            merger: Merger::default(),
            domain_summaries: Vec::new(),
            per_vcpu_summaries: true,
            next_phase: 0,
            names: Names::default(),
            heatmap_buckets: true,
        }
    }

    /// Emits (or not) each vCPU's per-second summaries as datapoints.
    pub(crate) fn set_per_vcpu_summaries(&mut self, emit: bool) {
        self.per_vcpu_summaries = emit;
    }

    /// Emits (or not) the heatmap buckets with the summaries.
    pub(crate) fn set_heatmap_buckets(&mut self, emit: bool) {
        self.heatmap_buckets = emit;
    }

    /// The same rollup with its clock started at `epoch`, so that batches
    /// can be fed as having arrived since then (the plugin bench feeds
    /// minutes of history at once).
    pub(crate) fn started_at(self, epoch: Instant) -> Rollup {
        Rollup { epoch, ..self }
    }

    /// Takes in one batch of samples and returns the datapoints for the
    /// sinks: the gauges as they came, then the closed second's summaries.
    pub fn ingest(&mut self, samples: Samples) -> Batch {
        self.ingest_at(samples, Instant::now())
    }

    /// [`Rollup::ingest`] for a batch that arrived at `at` (the rollup
    /// bench feeds minutes of seconds at their own instants).
    pub fn ingest_at(&mut self, samples: Samples, at: Instant) -> Batch {
        let now = self.stream_secs(at);
        // Room for the gauges that pass through; a latency batch's
        // summaries come in a batch of their own.
        let gauges = samples
            .iter()
            .filter(|s| matches!(s, Sample::Gauge(_)))
            .count();
        let mut out = Batch::with_capacity(gauges);
        let mut second: Option<f64> = None;
        let mut samples = samples.into_iter().peekable();
        while let Some(sample) = samples.next() {
            let (uuid, name) = match &sample {
                Sample::Retired(uuid) => {
                    self.retire(uuid);
                    continue;
                }
                Sample::Gauge(p) if p.is_agent() => {
                    self.agent.push(&p.metric, now, p.value);
                    let Sample::Gauge(p) = sample else {
                        unreachable!()
                    };
                    out.push(p);
                    continue;
                }
                Sample::Gauge(Datapoint { uuid, domain, .. })
                | Sample::Latency(Latency { uuid, domain, .. }) => {
                    (Arc::clone(uuid), Arc::clone(domain))
                }
            };
            // Sources send a domain's samples together: the domain is
            // looked up once for the run, not hashed for every sample.
            let domain = domain_mut(&mut self.domains, &mut self.newest_ts, &uuid, &name, now);
            let mut next = Some(sample);
            while let Some(sample) = next {
                match sample {
                    Sample::Gauge(p) => {
                        domain.gauges.push(&p.metric, now, p.value);
                        out.push(p);
                    }
                    Sample::Latency(l) => {
                        second = Some(second.map_or(l.ts, |t: f64| t.max(l.ts)));
                        record_latency(
                            domain,
                            &mut self.names,
                            &mut self.next_phase,
                            &self.clamped,
                            l,
                        );
                    }
                    Sample::Retired(_) => unreachable!("a run holds no retirement"),
                }
                next = samples.next_if(|s| same_domain(s, &uuid, &name));
            }
        }
        if let Some(ts) = second {
            let closed = self.close_second(ts, now);
            match out.is_empty() {
                true => out = closed,
                false => out.extend(closed),
            }
        }
        self.expire();
        out
    }

    /// The domains, in no particular order.
    pub(crate) fn domains(&self) -> impl Iterator<Item = &DomainSeries> {
        self.domains.values()
    }

    /// One domain by UUID.
    #[cfg(test)]
    pub(crate) fn domain(&self, uuid: &str) -> Option<&DomainSeries> {
        self.domains.get(uuid)
    }

    /// Time of the newest sample of any domain, on the rollup's clock.
    pub(crate) fn newest_ts(&self) -> Option<f64> {
        self.newest_ts
    }

    /// `at` on the rollup's clock: monotonic seconds since it started.
    pub(crate) fn stream_secs(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.epoch).as_secs_f64()
    }

    /// The instant `secs` after the rollup started (tests feed and ask at
    /// chosen times with it).
    #[cfg(test)]
    pub(crate) fn at(&self, secs: f64) -> Instant {
        self.epoch + Duration::from_secs_f64(secs)
    }

    /// The latency metrics with a series, sorted, e.g. `runq_latency`.
    pub(crate) fn latency_metrics(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = self
            .domains
            .values()
            .flat_map(|d| d.latency.keys().map(|(m, _)| *m))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The agent's own series, by name.
    pub(crate) fn agent(&self) -> &GaugeSet {
        &self.agent
    }

    /// Merges the `window` of `metric` of every domain, or of every vCPU
    /// with `per_vcpu`, as a histogram query over all domains does, and
    /// returns how many values they hold: what the rollup bench times.
    pub fn merge_all_windows(&self, metric: &str, window: Duration, per_vcpu: bool) -> u64 {
        let mut values = 0;
        for d in self.domains.values() {
            if per_vcpu {
                for v in d.vcpus(metric) {
                    values += d.window(metric, Some(v), window).map_or(0, |h| h.len());
                }
            }
            values += d.window(metric, None, window).map_or(0, |h| h.len());
        }
        values
    }

    /// Heap bytes held by every series (histogram and gauge windows, the
    /// second being recorded, names and map nodes), allocator overhead
    /// included: an estimate of the rollup's share of the agent's RSS.
    pub fn heap_bytes(&self) -> usize {
        let domains: usize = self
            .domains
            .iter()
            .map(|(uuid, d)| {
                size_of::<(Arc<str>, DomainSeries)>() + uuid.len() + d.name.len() + d.heap_bytes()
            })
            .sum();
        let table = self.domains.capacity() * size_of::<(Arc<str>, DomainSeries)>();
        domains + table + self.agent.heap_bytes() + HIST_BUCKETS * size_of::<u64>()
    }

    /// Records one vCPU's interval (see [`record_latency`]).
    #[cfg(test)]
    fn record_latency(&mut self, l: Latency, now: f64) {
        let domain = domain_mut(
            &mut self.domains,
            &mut self.newest_ts,
            &l.uuid,
            &l.domain,
            now,
        );
        record_latency(
            domain,
            &mut self.names,
            &mut self.next_phase,
            &self.clamped,
            l,
        );
    }

    /// Ends a domain's series.
    fn retire(&mut self, uuid: &str) {
        self.domains.remove(uuid);
    }

    /// Ends the series of domains silent for `domain_gone` of stream time.
    fn expire(&mut self) {
        if let Some(newest) = self.newest_ts {
            let cutoff = newest - self.domain_gone.as_secs_f64();
            self.domains.retain(|_, d| d.newest_ts >= cutoff);
        }
    }

    /// Closes the second ending at `ts` (wall clock, for the datapoints;
    /// `now` on the rollup's clock): emits its datapoints, moves every
    /// histogram into its windows, and starts the next second empty.
    fn close_second(&mut self, ts: f64, now: f64) -> Batch {
        // Eight summaries per series and per domain-wide metric: sized
        // once, not grown through a dozen copies of thousands of points.
        let series: usize = self.domains.values().map(|d| d.latency.len() + 2).sum();
        let mut batch = Batch::with_capacity(series * 8);
        let idle_limit = self.domain_gone.as_secs();
        for domain in self.domains.values_mut() {
            // Domain aggregates are rebuilt from this second's vCPUs, in
            // one pass: the series are sorted by metric, so each metric's
            // vCPUs are adjacent and go through the merger together. The
            // domain's summaries follow all of the vCPUs'.
            self.domain_summaries.clear();
            let mut open: Option<(&'static str, u64)> = None;
            for ((name, _), s) in domain.latency.iter().filter(|(_, s)| s.sampled) {
                match &mut open {
                    Some((m, sum)) if m == name => *sum = sum.saturating_add(s.current_sum_ns),
                    _ => {
                        if let Some((m, sum)) = open.take() {
                            let summary = self.merger.finish_summary(QUANTILES);
                            self.domain_summaries.push((m, sum, summary));
                        }
                        open = Some((name, s.current_sum_ns));
                    }
                }
                self.merger.add(&s.current);
                if self.per_vcpu_summaries {
                    let summary = s.current.summary(QUANTILES);
                    let names = (&*s.names, self.heatmap_buckets);
                    summarize(&mut batch, domain, ts, names, &summary, s.current_sum_ns);
                }
            }
            if let Some((m, sum)) = open {
                let summary = self.merger.finish_summary(QUANTILES);
                self.domain_summaries.push((m, sum, summary));
            }
            for (name, sum, summary) in &self.domain_summaries {
                let names = self.names.get(name, None);
                let names = (&*names, self.heatmap_buckets);
                summarize(&mut batch, domain, ts, names, summary, *sum);
                domain.latency_ts.insert(name, now);
            }
            for s in domain.latency.values_mut() {
                s.windows.push_second(&s.current, &mut self.merger);
                s.current = LatencyHistogram::default();
                s.current_sum_ns = 0;
                s.idle_s = if s.sampled { 0 } else { s.idle_s + 1 };
                s.sampled = false;
            }
            // A series nobody samples any more (its thread is no longer
            // watched, the vCPU was unplugged) ends with the domain's grace.
            domain.latency.retain(|_, s| s.idle_s <= idle_limit);
            let latency = &domain.latency;
            domain
                .latency_ts
                .retain(|m, _| latency.range((*m, 0)..=(*m, u32::MAX)).next().is_some());
        }
        batch
    }
}

/// Whether `sample` belongs to the run of domain `uuid` named `name`
/// that [`Rollup::ingest_at`] is recording: a domain's gauge or latency
/// under the same name (a renamed domain starts a run of its own).
fn same_domain(sample: &Sample, uuid: &Arc<str>, name: &Arc<str>) -> bool {
    let (u, n) = match sample {
        Sample::Gauge(p) if !p.is_agent() => (&p.uuid, &p.domain),
        Sample::Latency(l) => (&l.uuid, &l.domain),
        _ => return false,
    };
    // `Arc<str>` equality compares pointers before bytes.
    u == uuid && n == name
}

/// The domain `uuid` of `domains`, created on first use, renamed if
/// `name` changed; its newest time, and the rollup's (`newest`), move to
/// `ts`.
fn domain_mut<'a>(
    domains: &'a mut HashMap<Arc<str>, DomainSeries>,
    newest: &mut Option<f64>,
    uuid: &Arc<str>,
    name: &Arc<str>,
    ts: f64,
) -> &'a mut DomainSeries {
    *newest = Some(newest.map_or(ts, |t| t.max(ts)));
    let domain = domains
        .entry(Arc::clone(uuid))
        .or_insert_with(|| DomainSeries {
            name: Arc::clone(name),
            uuid: Arc::clone(uuid),
            newest_ts: ts,
            latency: BTreeMap::new(),
            latency_ts: BTreeMap::new(),
            gauges: GaugeSet::default(),
        });
    if domain.name != *name {
        domain.name = Arc::clone(name);
    }
    domain.newest_ts = domain.newest_ts.max(ts);
    domain
}

/// Records one vCPU's interval into `domain`: its values into the
/// histogram, its exact sum into the series' sum, values past the range
/// into `clamped`. An empty interval still creates the series, so it
/// reports `count` 0; a new series takes the phase after `next_phase`.
fn record_latency(
    domain: &mut DomainSeries,
    names: &mut Names,
    next_phase: &mut u64,
    clamped: &Counter,
    l: Latency,
) {
    let phase = (*next_phase + 1) % window::PHASES;
    let mut created = false;
    let s = domain.latency.entry((l.metric, l.vcpu)).or_insert_with(|| {
        created = true;
        Series::new(names.get(l.metric, Some(l.vcpu)), phase)
    });
    s.current_sum_ns = s.current_sum_ns.saturating_add(l.sum_ns);
    s.sampled = true;
    // The sample's pairs become the histogram where they are: no copy,
    // no allocation on this path.
    let (h, over) = LatencyHistogram::from_pairs(l.values);
    s.current.absorb(h);
    clamped.add(over);
    if created {
        *next_phase = phase;
    }
}

/// The quantiles of the per-second summaries, as fractions.
const QUANTILES: [f64; PERCENTILES.len()] = {
    let mut out = [0.0; PERCENTILES.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = PERCENTILES[i].0;
        i += 1;
    }
    out
};

/// The names of one histogram's per-second summaries.
pub(crate) struct SummaryNames {
    /// In [`metric::SUMMARIES`] order: `<prefix>.count` to `<prefix>.max`.
    summaries: [Arc<str>; SUMMARIES.len()],
    /// Per heatmap bucket: `<prefix>.buckets.<bound>`.
    buckets: [Arc<str>; HEATMAP_BOUNDS_US.len()],
}

/// The summary names of every `(metric, vCPU)` (`None`: a domain's), made
/// on first use and shared by every domain: thousands of datapoints a
/// second then allocate no name.
#[derive(Default)]
struct Names(HashMap<(&'static str, Option<u32>), Arc<SummaryNames>>);

impl Names {
    fn get(&mut self, metric: &'static str, vcpu: Option<u32>) -> Arc<SummaryNames> {
        let names = self.0.entry((metric, vcpu)).or_insert_with(|| {
            let base = metric::histogram_name(metric);
            let prefix = match vcpu {
                Some(v) => format!("vcpu.{v}.{base}"),
                None => base,
            };
            Arc::new(SummaryNames {
                summaries: SUMMARIES.map(|s| Arc::from([prefix.as_str(), ".", s].concat())),
                buckets: HEATMAP_BOUNDS_US
                    .map(|bound| Arc::from(format!("{prefix}.{HEATMAP_COMPONENT}.{bound}"))),
            })
        });
        Arc::clone(names)
    }
}

/// Appends the summary datapoints of a histogram summarized as `h`, whose
/// values sum to `sum_ns`, under `names`; with `heatmap`, its heatmap
/// buckets that have values too.
fn summarize(
    batch: &mut Batch,
    domain: &DomainSeries,
    ts: f64,
    (names, heatmap): (&SummaryNames, bool),
    h: &Summary<{ PERCENTILES.len() }>,
    sum_ns: u64,
) {
    let us = |ns: u64| ns as f64 / 1000.0;
    let [count, sum, mean, quantiles @ .., max] = &names.summaries;
    let mut put = |name: &Arc<str>, value: f64| {
        batch.push(Datapoint {
            ts,
            uuid: Arc::clone(&domain.uuid),
            domain: Arc::clone(&domain.name),
            metric: Arc::clone(name),
            value,
        })
    };
    put(count, h.count as f64);
    put(sum, us(sum_ns));
    if h.count == 0 {
        return;
    }
    put(mean, us(sum_ns) / h.count as f64);
    for (name, value) in quantiles.iter().zip(h.quantiles) {
        put(name, us(value));
    }
    put(max, us(h.max));
    if heatmap {
        for (name, &n) in names.buckets.iter().zip(&h.heatmap) {
            if n > 0 {
                put(name, n as f64);
            }
        }
    }
}

/// The stage: takes the sources' batches until they all stop, updates
/// `rollup` with each, and sends the datapoints on to `out`, counting the
/// CPU time it spends in `cpu_us` (`agent.rollup.cpu_us`). Ends when the
/// input closes or `out` does.
pub(crate) async fn run(
    rollup: SharedRollup,
    mut input: mpsc::Receiver<Samples>,
    out: mpsc::Sender<Batch>,
    cpu_us: Counter,
) {
    while let Some(samples) = input.recv().await {
        let batch = cpu_us.add_cpu_us(|| {
            rollup
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .ingest(samples)
        });
        if !batch.is_empty() && out.send(batch).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records `count` values of `value_ns` for one vCPU, as one interval
    /// whose exact sum is theirs.
    pub(crate) fn record(
        r: &mut Rollup,
        (uuid, name): (&str, &str),
        vcpu: u32,
        metric: &'static str,
        value_ns: u64,
        count: u64,
    ) {
        r.record_latency(
            latency(
                uuid,
                name,
                vcpu,
                metric,
                &[(value_ns, count)],
                value_ns * count,
            ),
            0.0,
        );
    }

    /// One interval of one vCPU at time 0.
    pub(crate) fn latency(
        uuid: &str,
        name: &str,
        vcpu: u32,
        metric: &'static str,
        values: &[(u64, u64)],
        sum_ns: u64,
    ) -> Latency {
        Latency {
            ts: 0.0,
            uuid: uuid.into(),
            domain: name.into(),
            vcpu,
            metric,
            values: values.to_vec(),
            sum_ns,
        }
    }

    fn get(batch: &Batch, metric: &str) -> f64 {
        batch
            .iter()
            .find(|p| &*p.metric == metric)
            .unwrap_or_else(|| panic!("no {metric}"))
            .value
    }

    #[test]
    fn per_vcpu_and_merged_domain_summaries() {
        let mut r = Rollup::default();
        let d = ("u1", "web");
        // vCPU 0: 99 fast waits; vCPU 1: 1 slow wait.
        record(&mut r, d, 0, "runq_latency", 10_000, 99);
        record(&mut r, d, 1, "runq_latency", 5_000_000, 1);
        let b = r.close_second(100.0, 100.0);
        assert_eq!(get(&b, "vcpu.0.runq_latency_us.count"), 99.0);
        assert!((get(&b, "vcpu.0.runq_latency_us.p99") - 10.0).abs() <= 0.1);
        assert!((get(&b, "vcpu.1.runq_latency_us.max") - 5000.0).abs() <= 50.0);
        // Merged, not averaged: the domain's p50 is the fast vCPU's, its
        // p999 the slow one's.
        assert_eq!(get(&b, "runq_latency_us.count"), 100.0);
        // Sums and means are exact: 99 * 10 us + 5000 us.
        assert_eq!(get(&b, "vcpu.0.runq_latency_us.sum"), 990.0);
        assert_eq!(get(&b, "runq_latency_us.sum"), 5_990.0);
        assert_eq!(get(&b, "runq_latency_us.mean"), 59.9);
        assert!((get(&b, "runq_latency_us.p50") - 10.0).abs() <= 0.1);
        assert!((get(&b, "runq_latency_us.p999") - 5000.0).abs() <= 50.0);
        assert!(b.iter().all(|p| p.ts == 100.0 && &*p.domain == "web"));

        // The next second is empty but still reports its count: the eBPF
        // source sends an empty interval for every watched vCPU.
        record(&mut r, d, 0, "runq_latency", 10_000, 0);
        record(&mut r, d, 1, "runq_latency", 10_000, 0);
        let b = r.close_second(101.0, 101.0);
        assert_eq!(get(&b, "vcpu.0.runq_latency_us.count"), 0.0);
        assert_eq!(get(&b, "vcpu.0.runq_latency_us.sum"), 0.0);
        assert!(!b.iter().any(|p| &*p.metric == "vcpu.0.runq_latency_us.p99"));

        let w = r
            .domain("u1")
            .unwrap()
            .window("runq_latency", None, Duration::from_secs(60))
            .unwrap();
        assert_eq!(w.len(), 100);
        let w0 = r
            .domain("u1")
            .unwrap()
            .window("runq_latency", Some(0), Duration::from_secs(60))
            .unwrap();
        assert_eq!(w0.len(), 99);

        r.retire("u1");
        assert!(r.close_second(102.0, 102.0).is_empty());
    }

    /// Samples decoded from kernel buckets stand at bucket midpoints; the
    /// sum and mean come from the kernel's exact sum instead.
    /// Heatmap buckets: each value in the bucket its bound says, per vCPU
    /// and merged, summing to the second's `count`; none when turned off.
    #[test]
    fn heatmap_buckets_count_every_value_once() {
        let mut r = Rollup::default();
        let d = ("u1", "web");
        // 0.9 µs is under the first bound (1 µs, which itself lands in its
        // kernel bucket's midpoint, just above); 1.5 µs in the second
        // bucket (1-2 µs); 30 ms in 20-50 ms; 4 s in the last.
        let values = [(900, 3), (1_500, 2), (30_000_000, 4), (4_000_000_000, 1)];
        let sum = values.iter().map(|(v, n)| v * n).sum();
        r.record_latency(latency("u1", "web", 0, "runq_latency", &values, sum), 0.0);
        record(&mut r, d, 1, "runq_latency", 30_000_000, 5);
        let b = r.close_second(100.0, 100.0);
        let buckets = |prefix: &str| -> Vec<(u64, f64)> {
            b.iter()
                .filter_map(|p| {
                    let bound = p.metric.strip_prefix(prefix)?.parse().ok()?;
                    Some((bound, p.value))
                })
                .collect()
        };
        assert_eq!(
            buckets("vcpu.0.runq_latency_us.buckets."),
            vec![(1, 3.0), (2, 2.0), (50_000, 4.0), (5_000_000, 1.0)]
        );
        assert_eq!(
            buckets("vcpu.1.runq_latency_us.buckets."),
            vec![(50_000, 5.0)]
        );
        let merged = buckets("runq_latency_us.buckets.");
        assert_eq!(
            merged,
            vec![(1, 3.0), (2, 2.0), (50_000, 9.0), (5_000_000, 1.0)]
        );
        let total: f64 = merged.iter().map(|(_, n)| n).sum();
        assert_eq!(total, get(&b, "runq_latency_us.count"));

        r.set_heatmap_buckets(false);
        record(&mut r, d, 0, "runq_latency", 30_000_000, 5);
        let b = r.close_second(101.0, 101.0);
        assert_eq!(get(&b, "runq_latency_us.count"), 5.0);
        assert!(!b.iter().any(|p| p.metric.contains(".buckets.")), "{b:?}");
    }

    #[test]
    fn without_per_vcpu_summaries_only_the_domain_is_emitted_and_windows_stay() {
        let mut r = Rollup::default();
        r.set_per_vcpu_summaries(false);
        let d = ("u1", "web");
        record(&mut r, d, 0, "runq_latency", 10_000, 99);
        record(&mut r, d, 1, "runq_latency", 5_000_000, 1);
        let b = r.close_second(100.0, 100.0);
        assert!(b.iter().all(|p| !p.metric.starts_with("vcpu.")), "{b:?}");
        assert_eq!(get(&b, "runq_latency_us.count"), 100.0);
        assert_eq!(get(&b, "runq_latency_us.sum"), 5_990.0);
        let vcpu1 = r
            .domain("u1")
            .unwrap()
            .window("runq_latency", Some(1), Duration::from_secs(60))
            .unwrap();
        assert_eq!(vcpu1.len(), 1, "the vCPU's window is kept");
    }

    #[test]
    fn decoded_samples_keep_the_exact_sum() {
        let mut r = Rollup::default();
        r.record_latency(
            latency(
                "u1",
                "web",
                0,
                "runq_latency",
                &[(1_003, 2), (2_007, 1)],
                4_001,
            ),
            0.0,
        );
        r.record_latency(
            latency("u1", "web", 1, "runq_latency", &[(500, 1)], 499),
            0.0,
        );
        let b = r.close_second(100.0, 100.0);
        assert_eq!(get(&b, "vcpu.0.runq_latency_us.count"), 3.0);
        assert_eq!(get(&b, "vcpu.0.runq_latency_us.sum"), 4.001);
        assert!((get(&b, "vcpu.0.runq_latency_us.mean") - 4.001 / 3.0).abs() < 1e-12);
        assert_eq!(get(&b, "runq_latency_us.sum"), 4.5);
        assert_eq!(get(&b, "runq_latency_us.count"), 4.0);
    }

    /// The stage's one step: gauges pass through first, latencies close
    /// the second, a retired domain ends at once, a silent one later.
    #[test]
    fn ingest_passes_gauges_closes_seconds_and_retires() {
        let mut r = Rollup::new(Duration::from_secs(15), &Registry::default());
        let gauge = |ts: f64, uuid: &str| {
            Sample::Gauge(Datapoint {
                ts,
                uuid: uuid.into(),
                domain: "web".into(),
                metric: "cpu.time_percent".into(),
                value: 5.0,
            })
        };
        let at = |ts: f64, vcpu: u32| {
            let mut l = latency("u1", "web", vcpu, "runq_latency", &[(10_000, 2)], 20_000);
            l.ts = ts;
            Sample::Latency(l)
        };
        let out = r.ingest_at(
            vec![at(100.0, 0), gauge(100.0, "u1"), gauge(100.0, "u2")],
            r.at(100.0),
        );
        assert_eq!(&*out[0].metric, "cpu.time_percent");
        assert_eq!(&*out[1].uuid, "u2");
        assert_eq!(get(&out, "vcpu.0.runq_latency_us.count"), 2.0);
        assert!(out.iter().skip(2).all(|p| p.ts == 100.0));
        // A batch without latencies closes no second.
        let out = r.ingest_at(vec![gauge(101.0, "u1")], r.at(101.0));
        assert_eq!(out.len(), 1);
        // u1 is retired: nothing of it is emitted or kept.
        let out = r.ingest_at(
            vec![Sample::Retired("u1".into()), at(102.0, 1)],
            r.at(102.0),
        );
        assert_eq!(get(&out, "vcpu.1.runq_latency_us.count"), 2.0);
        assert!(
            !out.iter().any(|p| p.metric.starts_with("vcpu.0.")),
            "{out:?}"
        );
        assert!(r.domain("u1").unwrap().gauges().is_empty());
        // u2 was last seen at 100: 15 s of u1 later it is gone.
        r.ingest_at(vec![gauge(115.0, "u1")], r.at(115.0));
        assert!(r.domain("u2").is_some());
        r.ingest_at(vec![gauge(115.5, "u1")], r.at(115.5));
        assert!(r.domain("u2").is_none());
    }

    /// A vCPU no longer sampled (its domain is still listed, its threads
    /// are not watched) stops reporting at once, and its windows end after
    /// `domain_gone` seconds.
    #[test]
    fn an_unwatched_vcpu_stops_and_its_series_end() {
        let mut r = Rollup::new(Duration::from_secs(3), &Registry::default());
        let second = |r: &mut Rollup, ts: f64, vcpus: &[u32]| {
            let samples = vcpus
                .iter()
                .map(|&v| {
                    let mut l = latency("u1", "web", v, "runq_latency", &[(10_000, 1)], 10_000);
                    l.ts = ts;
                    Sample::Latency(l)
                })
                .collect();
            let at = r.at(ts);
            r.ingest_at(samples, at)
        };
        second(&mut r, 100.0, &[0, 1]);
        let b = second(&mut r, 101.0, &[0]);
        assert!(b.iter().all(|p| !p.metric.starts_with("vcpu.1.")), "{b:?}");
        assert_eq!(get(&b, "runq_latency_us.count"), 1.0);
        assert_eq!(r.domain("u1").unwrap().vcpus("runq_latency"), [0, 1]);
        for ts in 102..=104 {
            second(&mut r, f64::from(ts), &[0]);
        }
        assert_eq!(r.domain("u1").unwrap().vcpus("runq_latency"), [0]);
    }

    /// The wall clock steps back an hour, then forward two: the windows
    /// keep taking values and no live domain expires, because the rollup
    /// keeps time on its own monotonic clock.
    #[test]
    fn wall_clock_steps_neither_freeze_nor_expire() {
        let mut r = Rollup::new(Duration::from_secs(15), &Registry::default());
        let gauge = |ts: f64, value: f64| {
            Sample::Gauge(Datapoint {
                ts,
                uuid: "u1".into(),
                domain: "web".into(),
                metric: "cpu.time_percent".into(),
                value,
            })
        };
        let wall = 1_764_100_000.0;
        for s in 0..30 {
            // Seconds 10-19 an hour back, 20-29 an hour ahead.
            let step = match s {
                0..10 => 0.0,
                10..20 => -3600.0,
                _ => 3600.0,
            };
            let at = r.at(f64::from(s));
            let out = r.ingest_at(vec![gauge(wall + f64::from(s) + step, f64::from(s))], at);
            assert_eq!(
                out[0].ts,
                wall + f64::from(s) + step,
                "datapoints keep their time"
            );
        }
        let d = r.domain("u1").expect("not expired by the steps");
        let w = &d.gauges()["cpu.time_percent"];
        let last = w.summary(29.5, 10);
        assert_eq!(last.last, 29.0, "not frozen at the step back");
        assert!(last.samples >= 10, "{last:?}");
        assert!((last.age_s - 0.5).abs() < 1e-9);
    }

    /// The seconds a window of `window_s` covers after `pushed` seconds of
    /// a series of phase `phase`: the bucket being filled of the answering
    /// tier plus closed buckets until covered, as `first..pushed`.
    fn covered(pushed: u64, phase: u64, window_s: u64) -> std::ops::Range<u64> {
        let step = match window_s {
            0..=60 => 1,
            61..=300 => 10,
            _ => 60,
        };
        let open = (pushed + phase) % step;
        let closed = window_s.saturating_sub(open).div_ceil(step) * step;
        pushed.saturating_sub(open + closed)..pushed
    }

    /// Latencies of several shapes go through the eBPF source's path
    /// (bucket midpoints with counts) into a domain of three vCPUs: every
    /// per-second summary and every window, per vCPU and merged for the
    /// domain, is within the histogram's bound of the exact percentiles of
    /// the values it covers.
    #[test]
    fn seconds_and_windows_are_within_the_bound_of_exact_values() {
        use histogram::ERROR_BOUND;
        use histogram::tests::{QUANTILES, Rng, SHAPES, as_ebpf, exact_quantile, relative_error};

        let mut r = Rollup::default();
        let mut rng = Rng(11);
        let shapes = [SHAPES[1], SHAPES[2], SHAPES[3]];
        // values[vcpu][second]
        let mut values: Vec<Vec<Vec<u64>>> = vec![Vec::new(); shapes.len()];
        let mut worst: f64 = 0.0;
        let mut check = |what: &str, got: f64, want: u64| {
            let err = relative_error((got * 1000.0).round() as u64, want);
            assert!(err <= ERROR_BOUND, "{what}: {got} µs for {want} ns");
            worst = worst.max(err);
        };
        let names = ["p50", "p90", "p99", "p999", "max"];
        for second in 0..905u64 {
            let ts = 1_000.0 + second as f64;
            let mut samples = Vec::new();
            for (vcpu, (_, draw)) in shapes.iter().enumerate() {
                let n = 20 + (rng.next_u64() % 150) as usize;
                let v: Vec<u64> = (0..n).map(|_| draw(&mut rng)).collect();
                let mut l = latency("u1", "web", vcpu as u32, "runq_latency", &as_ebpf(&v), 0);
                l.sum_ns = v.iter().sum();
                l.ts = ts;
                samples.push(Sample::Latency(l));
                values[vcpu].push(v);
            }
            let at = r.at(ts);
            let out = r.ingest_at(samples, at);
            if second % 101 != 0 {
                continue;
            }
            // This second's summaries, per vCPU and for the domain.
            let mut all = Vec::new();
            for (vcpu, v) in values.iter().enumerate() {
                let mut v = v[second as usize].clone();
                all.extend_from_slice(&v);
                v.sort_unstable();
                for (q, name) in QUANTILES.iter().zip(names) {
                    let metric = format!("vcpu.{vcpu}.runq_latency_us.{name}");
                    check(&metric, get(&out, &metric), exact_quantile(&v, *q));
                }
            }
            all.sort_unstable();
            for (q, name) in QUANTILES.iter().zip(names) {
                let metric = format!("runq_latency_us.{name}");
                check(&metric, get(&out, &metric), exact_quantile(&all, *q));
            }
        }
        let d = r.domain("u1").unwrap();
        for window_s in [1, 60, 61, 300, 301, 900] {
            let mut all = Vec::new();
            for (vcpu, v) in values.iter().enumerate() {
                // Each series closes its coarse buckets at its own phase.
                let phase = d.latency[&("runq_latency", vcpu as u32)].windows.position() - 905;
                assert!(phase > 0 && phase < window::PHASES, "phases are spread");
                let seconds = covered(905, phase, window_s);
                let mut exact: Vec<u64> = v[seconds.start as usize..seconds.end as usize]
                    .iter()
                    .flatten()
                    .copied()
                    .collect();
                all.extend_from_slice(&exact);
                exact.sort_unstable();
                let window = Duration::from_secs(window_s);
                let h = d.window("runq_latency", Some(vcpu as u32), window).unwrap();
                assert_eq!(h.len(), exact.len() as u64, "vCPU {vcpu} {window_s} s");
                for q in QUANTILES {
                    let what = format!("vCPU {vcpu} {window_s} s q{q}");
                    check(
                        &what,
                        h.value_at_quantile(q) as f64 / 1000.0,
                        exact_quantile(&exact, q),
                    );
                }
            }
            all.sort_unstable();
            let h = d
                .window("runq_latency", None, Duration::from_secs(window_s))
                .unwrap();
            assert_eq!(h.len(), all.len() as u64, "domain {window_s} s");
            for q in QUANTILES {
                let what = format!("domain {window_s} s q{q}");
                check(
                    &what,
                    h.value_at_quantile(q) as f64 / 1000.0,
                    exact_quantile(&all, q),
                );
            }
        }
        eprintln!(
            "worst relative error {:.4}% (bound {:.4}%)",
            worst * 100.0,
            ERROR_BOUND * 100.0
        );
    }

    /// A domain of `vcpus` vCPUs fed `seconds` of a realistic load: per
    /// vCPU and second, `rate` run-queue waits (log-normal, median 20 µs)
    /// and as many on-CPU slices (median 300 µs), both with log-space
    /// spread `sigma`, and the nine per-vCPU gauges (five from eBPF, four
    /// from libvirt) at 1 Hz.
    fn realistic_rollup(vcpus: u32, rate: usize, sigma: f64, seconds: u64) -> Rollup {
        use histogram::tests::{Rng, as_ebpf};

        const GAUGES: [&str; 9] = [
            "switches_voluntary_per_s",
            "switches_involuntary_per_s",
            "wakeups_per_s",
            "kvm_exits_per_s",
            "kvm_exit_time_percent",
            "time_percent",
            "delay_percent",
            "wait_percent",
            "halted",
        ];
        let mut r = Rollup::default();
        let mut rng = Rng(3);
        for second in 0..seconds {
            let ts = second as f64;
            let mut samples = Vec::new();
            for vcpu in 0..vcpus {
                for (metric, median) in [("runq_latency", 20_000.0), ("oncpu", 300_000.0)] {
                    let v: Vec<u64> = (0..rate).map(|_| rng.log_normal(median, sigma)).collect();
                    let mut l = latency("u1", "web", vcpu, metric, &as_ebpf(&v), 0);
                    l.sum_ns = v.iter().sum();
                    l.ts = ts;
                    samples.push(Sample::Latency(l));
                }
                for name in GAUGES {
                    samples.push(Sample::Gauge(Datapoint {
                        ts,
                        uuid: "u1".into(),
                        domain: "web".into(),
                        metric: format!("vcpu.{vcpu}.{name}").into(),
                        value: rng.unit() * 1000.0,
                    }));
                }
            }
            let at = r.at(ts);
            r.ingest_at(samples, at);
        }
        r
    }

    /// 16 minutes of 200 waits and 200 slices a second per vCPU (every
    /// window full): a latency series stays under 48 KiB, a gauge series
    /// under 2 KiB, and a vCPU, all its windows counted, under 128 KiB.
    #[test]
    fn memory_at_steady_state() {
        let r = realistic_rollup(4, 200, 1.0, 16 * 60);
        let d = r.domain("u1").unwrap();
        let series = d.latency[&("runq_latency", 0)].windows.heap_bytes();
        let gauge = d.gauges()["vcpu.0.wakeups_per_s"].heap_bytes();
        let per_vcpu = r.heap_bytes() / 4;
        eprintln!("runq series {series} B, gauge series {gauge} B, per vCPU {per_vcpu} B");
        assert!(series < 48 << 10, "{series}");
        assert!(gauge < 2 << 10, "{gauge}");
        assert!(per_vcpu < 128 << 10, "{per_vcpu}");
    }

    #[test]
    fn domain_gone_follows_the_slowest_group() {
        let c = crate::config::Config::parse("[libvirt.intervals]\nblock = \"60s\"\n").unwrap();
        assert_eq!(
            domain_gone(c.libvirt.group_intervals().into_values()),
            Duration::from_secs(180)
        );
        let c = crate::config::Config::default();
        assert_eq!(
            domain_gone(c.libvirt.group_intervals().into_values()),
            MIN_DOMAIN_GONE
        );
    }
}
