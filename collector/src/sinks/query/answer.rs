//! Answers to the query socket's questions, from the rollup's published
//! windows.
//!
//! Gauge questions ("average / maximum of `vcpu.*.delay_percent` over the
//! last 5 minutes") are answered from each series' gauge window; histogram
//! questions ("p99 of `runq_latency_us` over 5 minutes, per vCPU") from the
//! merged per-second histograms, never from averaging per-second
//! percentiles. The per-second summaries the rollup emits into the stream
//! (`vcpu.N.runq_latency_us.p99`, ...) are not gauge series.
//!
//! Ages are measured on the rollup's monotonic clock at query time: if the
//! sources stop delivering, every age grows and the plugin reports stale
//! data; a wall clock stepped back or forward changes nothing.
//! Which domains are listed is the rollup's business (it ends the series
//! of stopped domains).

use std::time::{Duration, Instant};

use hyper_stats_query::{
    DomainSeries, ErrorCode, GaugeAnswer, GaugeDomain, GaugeQuery, GaugeSeries, HistogramAnswer,
    HistogramDomain, HistogramQuery, HistogramValues, ListAnswer, Outcome, Query, Response,
    VcpuValues, metric, metric_matches,
};

use crate::rollup::Rollup;
use crate::rollup::gauge::GaugeSet;
use crate::rollup::histogram::LatencyHistogram;

/// Answers one query asked at `now`.
pub(crate) fn answer(rollup: &Rollup, query: &Query, now: Instant) -> Response {
    let now = rollup.stream_secs(now);
    match query {
        Query::List => Response::new(Outcome::List(list(rollup, now))),
        Query::Gauge(q) => gauge(rollup, q, now),
        Query::Histogram(q) => histogram(rollup, q, now),
    }
}

fn newest_age(rollup: &Rollup, now: f64) -> Option<f64> {
    rollup.newest_ts().map(|t| (now - t).max(0.0))
}

fn list(rollup: &Rollup, now: f64) -> ListAnswer {
    let mut domains: Vec<DomainSeries> = rollup
        .domains()
        .map(|d| DomainSeries {
            uuid: d.uuid().to_string(),
            domain: d.name().to_string(),
            age_s: (now - d.newest_ts()).max(0.0),
            metrics: d.gauges().names().map(str::to_owned).collect(),
        })
        .collect();
    domains.sort_by(|a, b| a.domain.cmp(&b.domain).then(a.uuid.cmp(&b.uuid)));
    ListAnswer {
        newest_age_s: newest_age(rollup, now),
        histograms: histogram_names(rollup),
        domains,
        agent: rollup.agent().names().map(str::to_owned).collect(),
    }
}

/// The histogram metrics with data, e.g. `runq_latency_us`, sorted.
fn histogram_names(rollup: &Rollup) -> Vec<String> {
    rollup
        .latency_metrics()
        .into_iter()
        .map(metric::histogram_name)
        .collect()
}

/// The series of `gauges` that `q` asks for, summarized at `now`.
fn gauge_series(gauges: &GaugeSet, q: &GaugeQuery, now: f64) -> Vec<GaugeSeries> {
    gauges
        .iter()
        .filter(|(m, _)| metric_matches(&q.metric, m))
        .map(|(m, window)| {
            let s = window.summary(now, q.window_s);
            GaugeSeries {
                metric: m.to_owned(),
                samples: s.samples,
                avg: s.avg,
                max: s.max,
                min: s.min,
                last: s.last,
                age_s: s.age_s,
            }
        })
        .collect()
}

fn gauge(rollup: &Rollup, q: &GaugeQuery, now: f64) -> Response {
    let total = rollup.domains().count();
    let agent = gauge_series(rollup.agent(), q, now);
    let mut domains: Vec<GaugeDomain> = rollup
        .domains()
        .filter_map(|d| {
            let series = gauge_series(d.gauges(), q, now);
            (!series.is_empty()).then(|| GaugeDomain {
                uuid: d.uuid().to_string(),
                domain: d.name().to_string(),
                series,
            })
        })
        .collect();
    if domains.is_empty() && agent.is_empty() && total > 0 {
        return Response::error(
            ErrorCode::UnknownMetric,
            format!(
                "no domain has a series matching {:?} ({total} domains known; `list` shows their series)",
                q.metric
            ),
        );
    }
    domains.sort_by(|a, b| a.domain.cmp(&b.domain).then(a.uuid.cmp(&b.uuid)));
    Response::new(Outcome::Gauge(GaugeAnswer {
        metric: q.metric.clone(),
        window_s: q.window_s,
        newest_age_s: newest_age(rollup, now),
        domains_total: total,
        domains,
        agent,
    }))
}

fn histogram(rollup: &Rollup, q: &HistogramQuery, now: f64) -> Response {
    let base = q.metric.strip_suffix(metric::HISTOGRAM_SUFFIX);
    let Some(base) = base.filter(|b| rollup.latency_metrics().contains(b)) else {
        let known = histogram_names(rollup);
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
    };
    let window = Duration::from_secs(u64::from(q.window_s));
    let mut domains = Vec::new();
    for d in rollup.domains() {
        // The domain-wide merge exists from the first closed second on;
        // before that the domain has no window yet.
        let Some(all) = d.window(base, None, window) else {
            continue;
        };
        let vcpus = if q.per_vcpu {
            d.vcpus(base)
                .into_iter()
                .filter_map(|v| {
                    let h = d.window(base, Some(v), window)?;
                    Some(VcpuValues {
                        vcpu: v,
                        values: values_of(&h, &q.percentiles),
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        domains.push(HistogramDomain {
            uuid: d.uuid().to_string(),
            domain: d.name().to_string(),
            age_s: d.latency_ts(base).map(|t| (now - t).max(0.0)),
            all: values_of(&all, &q.percentiles),
            vcpus,
        });
    }
    domains.sort_by(|a, b| a.domain.cmp(&b.domain).then(a.uuid.cmp(&b.uuid)));
    Response::new(Outcome::Histogram(HistogramAnswer {
        metric: q.metric.clone(),
        window_s: q.window_s,
        percentiles: q.percentiles.clone(),
        newest_age_s: newest_age(rollup, now),
        domains_total: rollup.domains().count(),
        domains,
    }))
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
    use crate::rollup::gauge;
    use crate::sample::{Datapoint, Latency, Sample};

    fn point(ts: f64, uuid: &str, domain: &str, metric: &str, value: f64) -> Sample {
        Sample::Gauge(Datapoint {
            ts,
            uuid: uuid.into(),
            domain: domain.into(),
            metric: metric.into(),
            value,
        })
    }

    /// One second of `count` values of `value_ns` on one vCPU of `u1`/`web`.
    fn latency(ts: f64, vcpu: u32, value_ns: u64, count: u64) -> Sample {
        Sample::Latency(Latency {
            ts,
            uuid: "u1".into(),
            domain: "web".into(),
            vcpu,
            metric: "runq_latency",
            values: vec![(value_ns, count)],
            sum_ns: value_ns * count,
        })
    }

    /// Ingests `samples` as if they arrived at their own time.
    fn feed(r: &mut Rollup, samples: Vec<Sample>) -> crate::sample::Batch {
        let ts = match &samples[0] {
            Sample::Gauge(p) => p.ts,
            Sample::Latency(l) => l.ts,
            Sample::Retired(_) => 0.0,
        };
        let at = r.at(ts);
        r.ingest_at(samples, at)
    }

    fn gauge(rollup: &Rollup, metric: &str, window_s: u32, now: f64) -> Response {
        let q = Query::Gauge(GaugeQuery {
            metric: metric.into(),
            window_s,
        });
        answer(rollup, &q, rollup.at(now))
    }

    #[test]
    fn gauge_average_and_max_over_the_window() {
        let mut s = Rollup::new(Duration::from_secs(30), &Default::default());
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
            feed(
                &mut s,
                vec![point(
                    t0 + f64::from(i),
                    "u1",
                    "web",
                    "vcpu.0.delay_percent",
                    v,
                )],
            );
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
        let ring = &s.domain("u1").unwrap().gauges()["vcpu.0.delay_percent"];
        assert!(ring.buckets() <= gauge::BUCKETS);
    }

    #[test]
    fn unknown_metrics_and_expiry() {
        let mut s = Rollup::new(Duration::from_secs(30), &Default::default());
        feed(
            &mut s,
            vec![
                point(100.0, "u1", "web", "cpu.time_percent", 5.0),
                point(100.0, "u2", "db", "cpu.time_percent", 7.0),
            ],
        );
        // A latency second of u1: its summaries go into the stream.
        let summaries = feed(&mut s, vec![latency(100.0, 0, 7_000, 1)]);
        assert!(
            summaries
                .iter()
                .any(|p| &*p.metric == "runq_latency_us.p99")
        );
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
        feed(
            &mut s,
            vec![point(131.0, "u2", "db", "cpu.time_percent", 7.0)],
        );
        let Outcome::Gauge(a) = gauge(&s, "cpu.time_percent", 60, 131.5).outcome else {
            panic!()
        };
        assert_eq!(a.domains_total, 1);
        assert_eq!(a.domains[0].domain, "db");
        assert_eq!(a.newest_age_s, Some(0.5));
    }

    #[test]
    fn no_domains_is_an_empty_answer_not_an_error() {
        let s = Rollup::new(Duration::from_secs(30), &Default::default());
        let Outcome::Gauge(a) = gauge(&s, "cpu.time_percent", 60, 1.0).outcome else {
            panic!()
        };
        assert_eq!(a.domains_total, 0);
        assert_eq!(a.newest_age_s, None);
    }

    #[test]
    fn histogram_percentiles_merged_and_per_vcpu() {
        let mut r = Rollup::new(Duration::from_secs(30), &Default::default());
        for second in 0..10 {
            // vCPU 0: 99 waits of 10 µs; vCPU 1: one of 5 ms, each second.
            let ts = 1000.0 + f64::from(second);
            feed(
                &mut r,
                vec![latency(ts, 0, 10_000, 99), latency(ts, 1, 5_000_000, 1)],
            );
        }
        let q = Query::Histogram(HistogramQuery {
            metric: "runq_latency_us".into(),
            window_s: 60,
            percentiles: vec![50.0, 99.9],
            per_vcpu: true,
        });
        let Outcome::Histogram(a) = answer(&r, &q, r.at(1010.0)).outcome else {
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
        let Outcome::Error(e) = answer(&r, &unknown, r.at(1010.0)).outcome else {
            panic!()
        };
        assert!(e.message.contains("runq_latency_us"), "{}", e.message);
        let Outcome::Error(e) = answer(&Rollup::default(), &unknown, Instant::now()).outcome else {
            panic!()
        };
        assert!(e.message.contains("eBPF"), "{}", e.message);
    }
}
