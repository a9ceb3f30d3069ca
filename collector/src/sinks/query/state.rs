//! What the query socket answers from: recent values of every libvirt
//! series, fed from the datapoint stream, plus the shared histogram rollup.
//!
//! # What it keeps
//! For every `(domain, metric)` of the stream a ring of [`BUCKET`]-wide
//! buckets (sum, count, min, max) covering [`MAX_WINDOW_S`], and the last
//! value with its time: enough for "average / maximum over the last 5
//! minutes" at a fixed cost per series (180 buckets) whatever the poll
//! interval. Windows are rounded out to whole buckets.
//!
//! The per-second summaries the rollup emits into the stream
//! (`vcpu.N.runq_latency_us.p99`, `runq_latency_us.count`, ...) are not
//! kept as series: percentiles over a window come from the rollup's merged
//! histograms, never from averaging per-second percentiles. Only their
//! time is kept, as the age of the histogram data.
//!
//! # Expiry
//! A domain with no datapoint for `domain_gone` of stream time (it stopped)
//! is forgotten, so the socket's answers list running domains only. Ages are
//! measured against the wall clock at query time: if the sources stop
//! delivering, every age grows and the plugin reports stale data.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use hyper_stats_query::{
    DomainSeries, ErrorCode, GaugeAnswer, GaugeDomain, GaugeQuery, GaugeSeries, HistogramAnswer,
    HistogramDomain, HistogramQuery, HistogramValues, ListAnswer, MAX_WINDOW_S, Outcome, Query,
    Response, VcpuValues, metric, metric_matches,
};

use crate::rollup::Rollup;
use crate::rollup::histogram::LatencyHistogram;
use crate::sample::Datapoint;

/// Width of one ring bucket: 5 s keeps 180 buckets per series for the
/// 15-minute window (about 7 KB) while a 1-minute window still has 12.
pub const BUCKET: Duration = Duration::from_secs(5);

/// Buckets per ring: exactly [`MAX_WINDOW_S`] plus the bucket being filled.
const RING_BUCKETS: usize = (MAX_WINDOW_S as usize).div_ceil(BUCKET.as_secs() as usize) + 1;

/// One bucket of a ring.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Index of the bucket: unix seconds / [`BUCKET`].
    index: i64,
    sum: f64,
    count: u64,
    min: f64,
    max: f64,
}

/// The recent values of one series.
#[derive(Debug, Default)]
struct Ring {
    /// Oldest first; at most [`RING_BUCKETS`].
    buckets: VecDeque<Bucket>,
    /// The newest value and its time.
    last: f64,
    last_ts: f64,
}

impl Ring {
    fn push(&mut self, ts: f64, value: f64) {
        if !value.is_finite() {
            return;
        }
        let index = (ts / BUCKET.as_secs_f64()).floor() as i64;
        match self.buckets.back_mut() {
            Some(b) if b.index == index => {
                b.sum += value;
                b.count += 1;
                b.min = b.min.min(value);
                b.max = b.max.max(value);
            }
            // A value older than the newest bucket (clock step, late
            // batch) is kept as the last value only.
            Some(b) if b.index > index => {}
            _ => {
                if self.buckets.len() == RING_BUCKETS {
                    self.buckets.pop_front();
                }
                self.buckets.push_back(Bucket {
                    index,
                    sum: value,
                    count: 1,
                    min: value,
                    max: value,
                });
            }
        }
        if ts >= self.last_ts {
            self.last = value;
            self.last_ts = ts;
        }
    }

    /// The buckets overlapping the `window` before `now`.
    fn summary(&self, now: f64, window_s: u32, metric: &str) -> GaugeSeries {
        let from = ((now - f64::from(window_s)) / BUCKET.as_secs_f64()).floor() as i64;
        let (mut sum, mut count) = (0.0, 0u64);
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for b in self.buckets.iter().rev().take_while(|b| b.index >= from) {
            sum += b.sum;
            count += b.count;
            min = min.min(b.min);
            max = max.max(b.max);
        }
        let some = |v: f64| (count > 0).then_some(v);
        GaugeSeries {
            metric: metric.to_owned(),
            samples: count,
            avg: some(sum / count.max(1) as f64),
            max: some(max),
            min: some(min),
            last: self.last,
            age_s: (now - self.last_ts).max(0.0),
        }
    }
}

/// One domain's series.
#[derive(Debug)]
struct DomainState {
    name: Arc<str>,
    /// Time of the domain's newest datapoint.
    newest_ts: f64,
    /// Libvirt (and other plain) series by full metric name.
    series: BTreeMap<String, Ring>,
    /// Newest summary time per histogram metric, e.g. `runq_latency_us`.
    histogram_ts: BTreeMap<String, f64>,
}

/// The query socket's view of the stream.
#[derive(Debug)]
pub struct QueryState {
    domains: HashMap<Arc<str>, DomainState>,
    /// Time of the newest datapoint of any domain.
    newest_ts: Option<f64>,
    /// How long a domain may go without a datapoint before it is
    /// forgotten.
    domain_gone: Duration,
}

impl QueryState {
    /// An empty state that forgets domains silent for `domain_gone`.
    pub fn new(domain_gone: Duration) -> QueryState {
        QueryState {
            domains: HashMap::new(),
            newest_ts: None,
            domain_gone,
        }
    }

    /// Takes in one batch of the stream.
    pub fn ingest(&mut self, batch: &[Datapoint]) {
        for p in batch {
            let d = self
                .domains
                .entry(Arc::clone(&p.uuid))
                .or_insert_with(|| DomainState {
                    name: Arc::clone(&p.domain),
                    newest_ts: p.ts,
                    series: BTreeMap::new(),
                    histogram_ts: BTreeMap::new(),
                });
            if d.name != p.domain {
                d.name = Arc::clone(&p.domain);
            }
            d.newest_ts = d.newest_ts.max(p.ts);
            if let Some(h) = metric::histogram_of_summary(&p.metric) {
                match d.histogram_ts.get_mut(h) {
                    Some(ts) => *ts = ts.max(p.ts),
                    None => {
                        d.histogram_ts.insert(h.to_owned(), p.ts);
                    }
                }
            } else {
                match d.series.get_mut(&p.metric) {
                    Some(ring) => ring.push(p.ts, p.value),
                    None => {
                        let mut ring = Ring::default();
                        ring.push(p.ts, p.value);
                        d.series.insert(p.metric.clone(), ring);
                    }
                }
            }
            self.newest_ts = Some(self.newest_ts.map_or(p.ts, |t| t.max(p.ts)));
        }
        if let Some(newest) = self.newest_ts {
            let cutoff = newest - self.domain_gone.as_secs_f64();
            self.domains.retain(|_, d| d.newest_ts >= cutoff);
        }
    }

    /// How many domains are known.
    pub fn domain_count(&self) -> usize {
        self.domains.len()
    }

    /// Answers one query at wall-clock time `now` (unix seconds).
    pub fn answer(&self, query: &Query, rollup: &Rollup, now: f64) -> Response {
        match query {
            Query::List => Response::new(Outcome::List(self.list(rollup, now))),
            Query::Gauge(q) => self.gauge(q, now),
            Query::Histogram(q) => self.histogram(q, rollup, now),
        }
    }

    fn newest_age(&self, now: f64) -> Option<f64> {
        self.newest_ts.map(|t| (now - t).max(0.0))
    }

    fn list(&self, rollup: &Rollup, now: f64) -> ListAnswer {
        let histograms: BTreeSet<String> = rollup
            .series()
            .into_iter()
            .map(|(_, _, what, _)| metric::histogram_name(what))
            .collect();
        let mut domains: Vec<DomainSeries> = self
            .domains
            .iter()
            .map(|(uuid, d)| DomainSeries {
                uuid: uuid.to_string(),
                domain: d.name.to_string(),
                age_s: (now - d.newest_ts).max(0.0),
                metrics: d.series.keys().cloned().collect(),
            })
            .collect();
        domains.sort_by(|a, b| a.domain.cmp(&b.domain).then(a.uuid.cmp(&b.uuid)));
        ListAnswer {
            newest_age_s: self.newest_age(now),
            histograms: histograms.into_iter().collect(),
            domains,
        }
    }

    fn gauge(&self, q: &GaugeQuery, now: f64) -> Response {
        let mut domains: Vec<GaugeDomain> = self
            .domains
            .iter()
            .filter_map(|(uuid, d)| {
                let series: Vec<GaugeSeries> = d
                    .series
                    .iter()
                    .filter(|(m, _)| metric_matches(&q.metric, m))
                    .map(|(m, ring)| ring.summary(now, q.window_s, m))
                    .collect();
                (!series.is_empty()).then(|| GaugeDomain {
                    uuid: uuid.to_string(),
                    domain: d.name.to_string(),
                    series,
                })
            })
            .collect();
        if domains.is_empty() && !self.domains.is_empty() {
            return Response::error(
                ErrorCode::UnknownMetric,
                format!(
                    "no domain has a series matching {:?} ({} domains known; `list` shows their series)",
                    q.metric,
                    self.domains.len()
                ),
            );
        }
        domains.sort_by(|a, b| a.domain.cmp(&b.domain).then(a.uuid.cmp(&b.uuid)));
        Response::new(Outcome::Gauge(GaugeAnswer {
            metric: q.metric.clone(),
            window_s: q.window_s,
            newest_age_s: self.newest_age(now),
            domains_total: self.domains.len(),
            domains,
        }))
    }

    fn histogram(&self, q: &HistogramQuery, rollup: &Rollup, now: f64) -> Response {
        let series = rollup.series();
        let base = q.metric.strip_suffix(metric::HISTOGRAM_SUFFIX);
        let wanted: Vec<_> = series
            .iter()
            .filter(|(_, _, metric, _)| Some(*metric) == base)
            .collect();
        if wanted.is_empty() {
            let mut known: Vec<String> = series
                .iter()
                .map(|(_, _, what, _)| metric::histogram_name(what))
                .collect();
            known.sort();
            known.dedup();
            let known = if known.is_empty() {
                "none: the agent has no histogram data (are its eBPF probes running?)".to_owned()
            } else {
                known.join(", ")
            };
            return Response::error(
                ErrorCode::UnknownMetric,
                format!(
                    "no histogram metric {:?}; known histogram metrics: {known}",
                    q.metric
                ),
            );
        }
        let window = Duration::from_secs(u64::from(q.window_s));
        let mut by_domain: BTreeMap<(Arc<str>, Arc<str>), Vec<u32>> = BTreeMap::new();
        for (uuid, name, _, vcpu) in &wanted {
            let vcpus = by_domain
                .entry((Arc::clone(name), Arc::clone(uuid)))
                .or_default();
            if let Some(v) = vcpu {
                vcpus.push(*v);
            }
        }
        let metric = base.expect("matched a series");
        let mut domains = Vec::new();
        for ((name, uuid), mut vcpus) in by_domain {
            // The domain-wide merge exists from the first closed second on;
            // before that the domain has no window yet.
            let Some(all) = rollup.window(&uuid, metric, None, window) else {
                continue;
            };
            vcpus.sort_unstable();
            let vcpus = if q.per_vcpu {
                vcpus
                    .into_iter()
                    .filter_map(|v| {
                        let h = rollup.window(&uuid, metric, Some(v), window)?;
                        Some(VcpuValues {
                            vcpu: v,
                            values: values_of(&h, &q.percentiles),
                        })
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let age_s = self
                .domains
                .get(&uuid)
                .and_then(|d| d.histogram_ts.get(&q.metric))
                .map(|t| (now - t).max(0.0));
            domains.push(HistogramDomain {
                uuid: uuid.to_string(),
                domain: name.to_string(),
                age_s,
                all: values_of(&all, &q.percentiles),
                vcpus,
            });
        }
        Response::new(Outcome::Histogram(HistogramAnswer {
            metric: q.metric.clone(),
            window_s: q.window_s,
            percentiles: q.percentiles.clone(),
            newest_age_s: self.newest_age(now),
            domains_total: self.domains.len(),
            domains,
        }))
    }
}

/// The requested percentiles and the maximum of `h` (nanoseconds) in µs.
fn values_of(h: &LatencyHistogram, percentiles: &[f64]) -> HistogramValues {
    let us = |ns: u64| ns as f64 / 1000.0;
    let empty = h.is_empty();
    HistogramValues {
        count: h.len(),
        values: percentiles
            .iter()
            .map(|p| (!empty).then(|| us(h.value_at_quantile(p / 100.0))))
            .collect(),
        max: (!empty).then(|| us(h.max())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(ts: f64, uuid: &str, domain: &str, metric: &str, value: f64) -> Datapoint {
        Datapoint {
            ts,
            uuid: uuid.into(),
            domain: domain.into(),
            metric: metric.into(),
            value,
        }
    }

    fn gauge(state: &QueryState, metric: &str, window_s: u32, now: f64) -> Response {
        let q = Query::Gauge(GaugeQuery {
            metric: metric.into(),
            window_s,
        });
        state.answer(&q, &Rollup::default(), now)
    }

    #[test]
    fn gauge_average_and_max_over_the_window() {
        let mut s = QueryState::new(Duration::from_secs(30));
        // 10 minutes at 1 Hz: 1.0 for the first 5 minutes, then 3.0, with
        // one spike of 50 at the 2-minute mark.
        let t0 = 1_000_000.0;
        for i in 0..600 {
            let v = if i == 120 {
                50.0
            } else if i < 300 {
                1.0
            } else {
                3.0
            };
            s.ingest(&[point(
                t0 + f64::from(i),
                "u1",
                "web",
                "vcpu.0.delay_percent",
                v,
            )]);
        }
        let now = t0 + 600.0;
        let Outcome::Gauge(a) = gauge(&s, "vcpu.*.delay_percent", 60, now).outcome else {
            panic!()
        };
        let one = &a.domains[0].series[0];
        assert_eq!(one.metric, "vcpu.0.delay_percent");
        assert_eq!(one.avg, Some(3.0));
        assert_eq!(one.max, Some(3.0));
        assert!((60..=65).contains(&one.samples), "{}", one.samples);
        assert_eq!(one.last, 3.0);
        assert!((one.age_s - 1.0).abs() < 1e-9);
        let Outcome::Gauge(a) = gauge(&s, "vcpu.0.delay_percent", 600, now).outcome else {
            panic!()
        };
        let ten = &a.domains[0].series[0];
        assert_eq!(ten.samples, 600);
        assert_eq!(ten.max, Some(50.0));
        assert_eq!(ten.min, Some(1.0));
        let want = (299.0 + 50.0 + 300.0 * 3.0) / 600.0;
        assert!((ten.avg.unwrap() - want).abs() < 1e-9);
        // The 15-minute ring keeps no more than its buckets.
        let ring = &s.domains["u1"].series["vcpu.0.delay_percent"];
        assert!(ring.buckets.len() <= RING_BUCKETS);
    }

    #[test]
    fn unknown_metrics_and_expiry() {
        let mut s = QueryState::new(Duration::from_secs(30));
        s.ingest(&[
            point(100.0, "u1", "web", "cpu.time_percent", 5.0),
            point(100.0, "u2", "db", "cpu.time_percent", 7.0),
            point(100.0, "u2", "db", "runq_latency_us.p99", 7.0),
        ]);
        let Outcome::Error(e) = gauge(&s, "cpu.nope", 60, 101.0).outcome else {
            panic!()
        };
        assert_eq!(e.code, ErrorCode::UnknownMetric);
        assert!(e.message.contains("\"cpu.nope\""), "{}", e.message);
        // Histogram summaries are not series.
        assert!(matches!(
            gauge(&s, "runq_latency_us.p99", 60, 101.0).outcome,
            Outcome::Error(_)
        ));
        // u1 stops; 31 s of u2 later it is gone.
        s.ingest(&[point(131.0, "u2", "db", "cpu.time_percent", 7.0)]);
        let Outcome::Gauge(a) = gauge(&s, "cpu.time_percent", 60, 131.5).outcome else {
            panic!()
        };
        assert_eq!(a.domains_total, 1);
        assert_eq!(a.domains[0].domain, "db");
        assert_eq!(a.newest_age_s, Some(0.5));
    }

    #[test]
    fn no_domains_is_an_empty_answer_not_an_error() {
        let s = QueryState::new(Duration::from_secs(30));
        let Outcome::Gauge(a) = gauge(&s, "cpu.time_percent", 60, 1.0).outcome else {
            panic!()
        };
        assert_eq!(a.domains_total, 0);
        assert_eq!(a.newest_age_s, None);
    }

    #[test]
    fn histogram_percentiles_merged_and_per_vcpu() {
        let mut r = Rollup::default();
        let (u, n): (Arc<str>, Arc<str>) = ("u1".into(), "web".into());
        let mut s = QueryState::new(Duration::from_secs(30));
        for second in 0..10 {
            // vCPU 0: 99 waits of 10 µs; vCPU 1: one of 5 ms, each second.
            r.record(&u, &n, 0, "runq_latency", 10_000, 99);
            r.record(&u, &n, 1, "runq_latency", 5_000_000, 1);
            s.ingest(&r.close_second(1000.0 + f64::from(second)));
        }
        let q = Query::Histogram(HistogramQuery {
            metric: "runq_latency_us".into(),
            window_s: 60,
            percentiles: vec![50.0, 99.9],
            per_vcpu: true,
        });
        let Outcome::Histogram(a) = s.answer(&q, &r, 1010.0).outcome else {
            panic!()
        };
        assert_eq!(a.domains_total, 1);
        let d = &a.domains[0];
        assert_eq!(d.domain, "web");
        assert_eq!(d.all.count, 1000);
        let close = |got: Option<f64>, want: f64| (got.unwrap() - want).abs() <= want * 0.01;
        assert!(close(d.all.values[0], 10.0), "{:?}", d.all.values);
        assert!(close(d.all.values[1], 5000.0), "{:?}", d.all.values);
        assert!(close(d.all.max, 5000.0));
        assert_eq!(d.age_s, Some(1.0));
        assert_eq!(d.vcpus.len(), 2);
        assert_eq!(d.vcpus[0].vcpu, 0);
        assert_eq!(d.vcpus[0].values.count, 990);
        assert!(close(d.vcpus[0].values.values[1], 10.0));
        assert!(close(d.vcpus[1].values.values[0], 5000.0));

        let unknown = Query::Histogram(HistogramQuery {
            metric: "oncpu_us".into(),
            window_s: 60,
            percentiles: vec![99.0],
            per_vcpu: false,
        });
        let Outcome::Error(e) = s.answer(&unknown, &r, 1010.0).outcome else {
            panic!()
        };
        assert!(e.message.contains("runq_latency_us"), "{}", e.message);
        let Outcome::Error(e) = s.answer(&unknown, &Rollup::default(), 1010.0).outcome else {
            panic!()
        };
        assert!(e.message.contains("eBPF"), "{}", e.message);
    }
}
