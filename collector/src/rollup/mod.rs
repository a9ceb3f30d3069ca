//! Rolls per-event latency samples into per-second HDR histograms per
//! domain and vCPU, emits their summaries as datapoints, and keeps sliding
//! windows for percentile queries.
//!
//! # What it receives and emits
//! The eBPF source records `(domain, vCPU, metric, value, count)` as it
//! decodes the kernel's buckets, with the exact sum the kernel kept
//! ([`Rollup::record_decoded`]). Once a second, [`Rollup::close_second`]
//! turns every series' histogram of that second into datapoints
//! `vcpu.N.<metric>_us.{count,sum,mean,p50,p90,p99,p999,max}` and, from the
//! merged histogram of all of a domain's vCPUs (merged, never averaged
//! percentiles), `<metric>_us.{...}`; then the second joins the series'
//! [`window::Windows`].
//!
//! `sum` and `mean` are exact (the sum of the recorded durations, not of
//! bucket midpoints), so summing `sum` over seconds gives a thread's total
//! wait to the nanosecond; the percentiles and `max` carry the histograms'
//! 1% error.
//!
//! # Lifetime
//! A domain's series live until [`Rollup::retire`] is called for it (the
//! domain stopped); a vCPU that goes quiet keeps reporting `count` 0.

pub mod histogram;
pub mod window;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::sample::{Batch, Datapoint};
use histogram::LatencyHistogram;
use window::Windows;

use hyper_stats_query::metric::PERCENTILES;

/// One series: the histogram of the current second, its exact sum, and
/// the windows.
struct Series {
    current: LatencyHistogram,
    /// The exact sum of the current second's values, in ns: the histogram
    /// only knows its buckets.
    current_sum_ns: u64,
    windows: Windows,
}

impl Default for Series {
    fn default() -> Self {
        Series {
            current: histogram::new(),
            current_sum_ns: 0,
            windows: Windows::default(),
        }
    }
}

/// One domain's series: per `(metric, vCPU)`, plus the domain-wide merge.
struct DomainSeries {
    name: Arc<str>,
    uuid: Arc<str>,
    /// Per `(metric, Some(vcpu))` and the domain aggregate `(metric, None)`.
    series: BTreeMap<(&'static str, Option<u32>), Series>,
}

/// The rollup shared between the eBPF source (which fills it) and the
/// query socket (which reads its windows).
pub type SharedRollup = Arc<std::sync::Mutex<Rollup>>;

/// One series as [`Rollup::series`] lists it: `(uuid, domain name,
/// metric, vCPU)`.
pub type SeriesId = (Arc<str>, Arc<str>, &'static str, Option<u32>);

/// All latency series of the host.
#[derive(Default)]
pub struct Rollup {
    domains: HashMap<Arc<str>, DomainSeries>,
    /// Values outside the histogram's range, clamped (for self-stats).
    pub clamped: u64,
}

impl Rollup {
    /// Records `count` samples of `value_ns` for one vCPU of one domain.
    /// `metric` is the base name, e.g. `runq_latency` or `oncpu`.
    pub fn record(
        &mut self,
        uuid: &Arc<str>,
        name: &Arc<str>,
        vcpu: u32,
        metric: &'static str,
        value_ns: u64,
        count: u64,
    ) {
        let s = self.series_mut(uuid, name, vcpu, metric);
        s.current_sum_ns = s
            .current_sum_ns
            .saturating_add(value_ns.saturating_mul(count));
        if histogram::record(&mut s.current, value_ns, count) {
            self.clamped += count;
        }
    }

    /// Records samples decoded from buckets, `(value_ns, count)` each,
    /// whose exact sum `sum_ns` is known (the kernel keeps it): the
    /// histogram gets the samples, the series' sum gets `sum_ns`.
    pub fn record_decoded(
        &mut self,
        uuid: &Arc<str>,
        name: &Arc<str>,
        vcpu: u32,
        metric: &'static str,
        samples: impl IntoIterator<Item = (u64, u64)>,
        sum_ns: u64,
    ) {
        let s = self.series_mut(uuid, name, vcpu, metric);
        s.current_sum_ns = s.current_sum_ns.saturating_add(sum_ns);
        let mut clamped = 0;
        for (value_ns, count) in samples {
            if histogram::record(&mut s.current, value_ns, count) {
                clamped += count;
            }
        }
        self.clamped += clamped;
    }

    /// The series of one vCPU, created on first use.
    fn series_mut(
        &mut self,
        uuid: &Arc<str>,
        name: &Arc<str>,
        vcpu: u32,
        metric: &'static str,
    ) -> &mut Series {
        let domain = self
            .domains
            .entry(Arc::clone(uuid))
            .or_insert_with(|| DomainSeries {
                name: Arc::clone(name),
                uuid: Arc::clone(uuid),
                series: BTreeMap::new(),
            });
        if domain.name != *name {
            domain.name = Arc::clone(name);
        }
        domain.series.entry((metric, Some(vcpu))).or_default()
    }

    /// Declares a vCPU series so that it reports `count` 0 even in seconds
    /// without events.
    pub fn declare(&mut self, uuid: &Arc<str>, name: &Arc<str>, vcpu: u32, metric: &'static str) {
        self.record(uuid, name, vcpu, metric, 1, 0);
    }

    /// Forgets a domain and all its series.
    pub fn retire(&mut self, uuid: &str) {
        self.domains.remove(uuid);
    }

    /// Closes the second ending at `ts`: emits its datapoints, moves every
    /// histogram into its windows, and starts the next second empty.
    pub fn close_second(&mut self, ts: f64) -> Batch {
        let mut batch = Batch::new();
        for domain in self.domains.values_mut() {
            // Domain aggregates are rebuilt from this second's vCPUs.
            let mut merged: BTreeMap<&'static str, (LatencyHistogram, u64)> = BTreeMap::new();
            for ((metric, vcpu), s) in domain.series.iter().filter(|((_, v), _)| v.is_some()) {
                let (h, sum) = merged
                    .entry(metric)
                    .or_insert_with(|| (histogram::new(), 0));
                histogram::merge(h, &s.current);
                *sum = sum.saturating_add(s.current_sum_ns);
                let prefix = format!(
                    "vcpu.{}.{}",
                    vcpu.expect("filtered"),
                    hyper_stats_query::metric::histogram_name(metric)
                );
                summarize(
                    &mut batch,
                    domain,
                    ts,
                    &prefix,
                    &s.current,
                    s.current_sum_ns,
                );
            }
            for (metric, (h, sum)) in merged {
                let name = hyper_stats_query::metric::histogram_name(metric);
                summarize(&mut batch, domain, ts, &name, &h, sum);
                let agg = domain.series.entry((metric, None)).or_default();
                agg.current = h;
            }
            for s in domain.series.values_mut() {
                s.windows.push_second(&s.current);
                s.current.reset();
                s.current_sum_ns = 0;
            }
        }
        batch
    }

    /// Every series: `(uuid, domain name, metric, vCPU)`, the domain-wide
    /// merge as vCPU `None` (read-only, for the query socket's listings).
    pub fn series(&self) -> Vec<SeriesId> {
        let mut out = Vec::new();
        for d in self.domains.values() {
            for (metric, vcpu) in d.series.keys() {
                out.push((Arc::clone(&d.uuid), Arc::clone(&d.name), *metric, *vcpu));
            }
        }
        out
    }

    /// The merged histogram of `metric` over the last `window` for one vCPU
    /// (`Some`) or the whole domain (`None`).
    pub fn window(
        &self,
        uuid: &str,
        metric: &str,
        vcpu: Option<u32>,
        window: Duration,
    ) -> Option<LatencyHistogram> {
        let domain = self.domains.get(uuid)?;
        let (_, s) = domain
            .series
            .iter()
            .find(|((m, v), _)| *m == metric && *v == vcpu)?;
        s.windows.merged(window)
    }
}

/// Appends the summary datapoints of `h`, whose values sum to `sum_ns`,
/// under `prefix`.
fn summarize(
    batch: &mut Batch,
    domain: &DomainSeries,
    ts: f64,
    prefix: &str,
    h: &LatencyHistogram,
    sum_ns: u64,
) {
    let mut put = |suffix: &str, value: f64| {
        batch.push(Datapoint {
            ts,
            uuid: Arc::clone(&domain.uuid),
            domain: Arc::clone(&domain.name),
            metric: format!("{prefix}.{suffix}"),
            value,
        })
    };
    put("count", h.len() as f64);
    let us = |ns: u64| ns as f64 / 1000.0;
    put("sum", us(sum_ns));
    if h.is_empty() {
        return;
    }
    put("mean", us(sum_ns) / h.len() as f64);
    for (q, name) in PERCENTILES {
        put(name, us(h.value_at_quantile(q)));
    }
    put("max", us(h.max()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(batch: &Batch, metric: &str) -> f64 {
        batch
            .iter()
            .find(|p| p.metric == metric)
            .unwrap_or_else(|| panic!("no {metric}"))
            .value
    }

    #[test]
    fn per_vcpu_and_merged_domain_summaries() {
        let mut r = Rollup::default();
        let (u, n): (Arc<str>, Arc<str>) = ("u1".into(), "web".into());
        // vCPU 0: 99 fast waits; vCPU 1: 1 slow wait.
        r.record(&u, &n, 0, "runq_latency", 10_000, 99);
        r.record(&u, &n, 1, "runq_latency", 5_000_000, 1);
        let b = r.close_second(100.0);
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

        // The next second is empty but still reports its count.
        let b = r.close_second(101.0);
        assert_eq!(get(&b, "vcpu.0.runq_latency_us.count"), 0.0);
        assert_eq!(get(&b, "vcpu.0.runq_latency_us.sum"), 0.0);
        assert!(!b.iter().any(|p| p.metric == "vcpu.0.runq_latency_us.p99"));

        let w = r
            .window("u1", "runq_latency", None, Duration::from_secs(60))
            .unwrap();
        assert_eq!(w.len(), 100);
        let w0 = r
            .window("u1", "runq_latency", Some(0), Duration::from_secs(60))
            .unwrap();
        assert_eq!(w0.len(), 99);

        r.retire("u1");
        assert!(r.close_second(102.0).is_empty());
    }

    /// Samples decoded from kernel buckets stand at bucket midpoints; the
    /// sum and mean come from the kernel's exact sum instead.
    #[test]
    fn decoded_samples_keep_the_exact_sum() {
        let mut r = Rollup::default();
        let (u, n): (Arc<str>, Arc<str>) = ("u1".into(), "web".into());
        r.record_decoded(&u, &n, 0, "runq_latency", [(1_003, 2), (2_007, 1)], 4_001);
        r.record_decoded(&u, &n, 1, "runq_latency", [(500, 1)], 499);
        let b = r.close_second(100.0);
        assert_eq!(get(&b, "vcpu.0.runq_latency_us.count"), 3.0);
        assert_eq!(get(&b, "vcpu.0.runq_latency_us.sum"), 4.001);
        assert!((get(&b, "vcpu.0.runq_latency_us.mean") - 4.001 / 3.0).abs() < 1e-12);
        assert_eq!(get(&b, "runq_latency_us.sum"), 4.5);
        assert_eq!(get(&b, "runq_latency_us.count"), 4.0);
    }
}
