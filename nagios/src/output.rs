//! The plugin's output: one status line, perfdata after `|`, one long
//! output line per domain, all within a byte budget.
//!
//! ```text
//! HYPER-STATS WARNING - runq_latency_us p99 over 5m: web-3 5.20ms WARNING; 7 of 8 domains OK | 'web-3.runq_latency_us.p99'=5200us;5000;10000;0 ...
//! web-3: WARNING p99 5.20ms WARNING (81234 samples)
//! web-1: OK p99 812us (90211 samples)
//! ```
//!
//! # The budget
//! Nagios core keeps 8,192 bytes of plugin output; NRPE v2/v3 packets carry
//! 1,023. Past the budget the text would be cut anywhere (often mid
//! perfdata, which then fails to parse), so the plugin drops whole values
//! (a perfdata item with its long-output entry) instead, best first: the
//! worst domains, and within a domain its worst series or vCPUs, always
//! stay, and the status line says how many domains (or values, when a
//! domain has several) were left out.
//!
//! # Stale series
//! Series older than `--max-age` (see `check.rs`) are named on the status
//! line, the first [`NAMED_STALE`] of them, with how many more there are.
//!
//! # No `|` but the separator
//! Nagios reads perfdata after the first `|` of the status line and after
//! the first `|` of the long output, and ends a line at a newline. Names
//! arrive here sanitized (`check.rs`); every other text that is printed
//! (the metric as asked, an agent's error message) goes through [`plain`],
//! so the one `|` in any output is the perfdata separator this module
//! writes, and a line is never split.

use crate::check::{Failure, Group, Item, Report, State, human};

/// The prefix of every status line.
pub const PREFIX: &str = "HYPER-STATS";

/// How many not-OK domains the status line names.
const NAMED_OFFENDERS: usize = 3;

/// How many stale series the status line names: enough to tell one
/// domain's gap from libvirtd being down (then every domain's series are
/// stale), few enough to leave room for perfdata in NRPE's 1,023 bytes.
pub const NAMED_STALE: usize = 5;

/// Text made safe to print before the perfdata: `|` becomes `¦` (it would
/// start perfdata) and control characters (newlines above all) a space.
pub fn plain(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '|' => '¦',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// The UNKNOWN output for a failure.
pub fn failure(f: &Failure, max_bytes: usize) -> String {
    // A multi-line error keeps its first line on the status line.
    let first = f.0.lines().next().unwrap_or_default();
    let line = format!("{PREFIX} UNKNOWN - {}", plain(first));
    fit_line(line, max_bytes)
}

/// Cuts `line` so that it plus a newline fit in `max_bytes`.
fn fit_line(mut line: String, max_bytes: usize) -> String {
    let limit = max_bytes.saturating_sub(1);
    if line.len() > limit {
        let mut end = limit;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
    }
    line.push('\n');
    line
}

fn item_text(i: &Item) -> String {
    let value = match i.stale_s {
        Some(age) => format!("stale ({age:.0}s old)"),
        None => human(i.perf.value, i.perf.uom),
    };
    let mut s = format!("{} {value}", i.name);
    if i.state != State::Ok {
        s.push(' ');
        s.push_str(&i.state.to_string());
    }
    s
}

fn offender(g: &Group) -> String {
    let worst = g.worst_item();
    let value = worst
        .map(|i| human(i.perf.value, i.perf.uom))
        .unwrap_or_default();
    let which = match worst {
        Some(i) if g.items.len() > 1 => format!(" {}", i.name),
        _ => String::new(),
    };
    format!("{}{which} {value} {}", g.domain, g.state)
}

/// `N series older than --max-age 30s: web-1 cpu.time_percent 95s old,
/// ... and M more`, or nothing when no series is stale.
fn stale_text(r: &Report) -> Option<String> {
    let stale: Vec<String> = r
        .groups
        .iter()
        .flat_map(|g| {
            g.stale
                .iter()
                .map(move |s| format!("{} {} {:.0}s old", g.domain, s.series, s.age_s))
        })
        .collect();
    if stale.is_empty() {
        return None;
    }
    let mut s = format!(
        "{} series older than --max-age {}s: {}",
        stale.len(),
        crate::perfdata::number(r.max_age_s),
        stale[..stale.len().min(NAMED_STALE)].join(", ")
    );
    if stale.len() > NAMED_STALE {
        s.push_str(&format!(" and {} more", stale.len() - NAMED_STALE));
    }
    Some(s)
}

fn summary(r: &Report) -> String {
    let n = r.groups.len();
    if n == 0 {
        return format!("no running domains ({})", r.what);
    }
    // Offenders are domains with a value over a threshold; a domain that
    // is UNKNOWN only for stale series is named in the stale list.
    let bad: Vec<&Group> = r
        .groups
        .iter()
        .filter(|g| matches!(g.state, State::Warning | State::Critical))
        .collect();
    let stale = stale_text(r);
    if bad.is_empty() && stale.is_none() {
        let top = &r.groups[0];
        let worst = top.worst_item();
        let which = match worst {
            Some(i) if top.items.len() > 1 => format!(" {}", i.name),
            _ => String::new(),
        };
        return format!(
            "{n} domain{} OK, highest {} {} ({}{which})",
            if n == 1 { "" } else { "s" },
            r.what,
            worst.map_or_else(|| human(None, r.uom), |i| human(i.perf.value, i.perf.uom)),
            top.domain,
        );
    }
    let mut parts = Vec::new();
    if !bad.is_empty() {
        let named: Vec<String> = bad
            .iter()
            .take(NAMED_OFFENDERS)
            .map(|g| offender(g))
            .collect();
        let mut s = named.join(", ");
        if bad.len() > NAMED_OFFENDERS {
            s.push_str(&format!(", {} more not OK", bad.len() - NAMED_OFFENDERS));
        }
        parts.push(s);
    }
    parts.extend(stale);
    let ok = r.groups.iter().filter(|g| g.state == State::Ok).count();
    parts.push(format!("{ok} of {n} domains OK"));
    format!("{}: {}", r.what, parts.join("; "))
}

/// Every item as (group, item) index, in the order they are kept when the
/// output must be cut: groups worst first, and within a group its worst
/// items first.
fn keep_order(r: &Report) -> Vec<(usize, usize)> {
    let mut order = Vec::new();
    for (gi, g) in r.groups.iter().enumerate() {
        let mut items: Vec<usize> = (0..g.items.len()).collect();
        items.sort_by(|a, b| {
            let (a, b) = (&g.items[*a], &g.items[*b]);
            b.state.severity().cmp(&a.state.severity()).then(
                b.perf
                    .value
                    .unwrap_or(f64::NEG_INFINITY)
                    .total_cmp(&a.perf.value.unwrap_or(f64::NEG_INFINITY)),
            )
        });
        order.extend(items.into_iter().map(|ii| (gi, ii)));
    }
    order
}

/// The whole output with the first `keep` items of `order`.
fn compose(r: &Report, order: &[(usize, usize)], keep: usize, max_bytes: usize) -> String {
    let mut kept: Vec<Vec<bool>> = r
        .groups
        .iter()
        .map(|g| vec![false; g.items.len()])
        .collect();
    for (gi, ii) in &order[..keep] {
        kept[*gi][*ii] = true;
    }
    let cut = order.len() - keep;
    let mut out = format!("{PREFIX} {} - {}", r.state, plain(&summary(r)));
    if cut > 0 {
        // One value per domain: count domains; else values.
        let what = if order.len() == r.groups.len() {
            if cut == 1 { "domain" } else { "domains" }
        } else if cut == 1 {
            "value"
        } else {
            "values"
        };
        out.push_str(&format!(
            "; {cut} {what} left out of this output to fit {max_bytes} bytes"
        ));
    }
    let perf: Vec<String> = r
        .groups
        .iter()
        .zip(&kept)
        .flat_map(|(g, k)| {
            g.items
                .iter()
                .zip(k)
                .filter(|(_, k)| **k)
                .map(|(i, _)| i.perf.to_string())
        })
        .collect();
    if !perf.is_empty() {
        out.push_str(" | ");
        out.push_str(&perf.join(" "));
    }
    out.push('\n');
    // Long output in worst-first group order, items in their own order.
    for (g, k) in r.groups.iter().zip(&kept) {
        let shown = k.iter().filter(|k| **k).count();
        if shown == 0 {
            continue;
        }
        let items: Vec<String> = g
            .items
            .iter()
            .zip(k)
            .filter(|(_, k)| **k)
            .map(|(i, _)| item_text(i))
            .collect();
        let mut line = format!("{}: {} {}", g.domain, g.state, items.join(", "));
        if shown < g.items.len() {
            line.push_str(&format!(", {} more", g.items.len() - shown));
        }
        if let Some(note) = &g.note {
            line.push_str(&format!(" ({note})"));
        }
        out.push_str(&plain(&line));
        out.push('\n');
    }
    out
}

/// The output of a report, at most `max_bytes` long (newlines included).
pub fn render(r: &Report, max_bytes: usize) -> String {
    let order = keep_order(r);
    // The most items that fit: more items never make the output shorter,
    // so a binary search finds it.
    let (mut lo, mut hi) = (0, order.len());
    let all = compose(r, &order, hi, max_bytes);
    if all.len() <= max_bytes {
        return all;
    }
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if compose(r, &order, mid, max_bytes).len() <= max_bytes {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let out = compose(r, &order, lo, max_bytes);
    if out.len() <= max_bytes {
        return out;
    }
    // Not even the status line fits: cut it (its perfdata goes with it).
    let line = out.lines().next().unwrap_or_default();
    let line = line.split(" | ").next().unwrap_or(line).to_owned();
    fit_line(line, max_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Aggregate, Check, Kind};
    use crate::range::Range;
    use hyper_stats_query::{
        GaugeAnswer, GaugeDomain, GaugeSeries, HistogramAnswer, HistogramDomain, HistogramValues,
    };

    fn histogram_answer(values: &[(&str, f64)]) -> HistogramAnswer {
        HistogramAnswer {
            metric: "runq_latency_us".into(),
            window_s: 300,
            percentiles: vec![99.0],
            newest_age_s: Some(0.5),
            domains_total: values.len(),
            domains: values
                .iter()
                .map(|(name, v)| HistogramDomain {
                    uuid: format!("uuid-{name}"),
                    domain: name.to_string(),
                    age_s: Some(0.5),
                    all: HistogramValues {
                        count: 1000,
                        values: vec![Some(*v)],
                        max: Some(v * 2.0),
                    },
                    vcpus: vec![],
                })
                .collect(),
        }
    }

    fn check(warn: &str, crit: &str) -> Check {
        Check {
            metric: "runq_latency_us".into(),
            kind: Kind::Histogram {
                percentile: 99.0,
                per_vcpu: false,
            },
            window_s: 300,
            warn: Some(Range::parse(warn).unwrap()),
            crit: Some(Range::parse(crit).unwrap()),
            domains: vec![],
            exclude: vec![],
            max_age_s: 30.0,
        }
    }

    #[test]
    fn worst_first_and_exact_text() {
        let a = histogram_answer(&[("web-1", 812.0), ("web-3", 5200.0), ("db", 12000.0)]);
        let r = check("5000", "10000").histogram(&a).unwrap();
        assert_eq!(r.state, State::Critical);
        let out = render(&r, 8192);
        assert_eq!(
            out,
            "HYPER-STATS CRITICAL - runq_latency_us p99 over 5m: db 12.00ms CRITICAL, web-3 5.20ms WARNING; 1 of 3 domains OK \
             | 'db.runq_latency_us.p99'=12000us;5000;10000;0 'web-3.runq_latency_us.p99'=5200us;5000;10000;0 'web-1.runq_latency_us.p99'=812us;5000;10000;0\n\
             db: CRITICAL p99 12.00ms CRITICAL (1000 samples)\n\
             web-3: WARNING p99 5.20ms WARNING (1000 samples)\n\
             web-1: OK p99 812us (1000 samples)\n"
        );
    }

    #[test]
    fn budget_keeps_the_worst_and_says_how_many_were_cut() {
        let names: Vec<String> = (0..200).map(|i| format!("guest-{i:03}")).collect();
        let values: Vec<(&str, f64)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), 100.0 + i as f64))
            .collect();
        let a = histogram_answer(&values);
        let r = check("250", "280").histogram(&a).unwrap();
        for budget in [1023, 8192, 400, 300, 120, 40] {
            let out = render(&r, budget);
            assert!(out.len() <= budget, "{budget}: {} bytes", out.len());
            assert!(out.starts_with("HYPER-STATS CRITICAL - "), "{out}");
            assert!(out.ends_with('\n'));
            if budget >= 400 {
                // guest-199 is the worst: always kept.
                assert!(
                    out.contains("'guest-199.runq_latency_us.p99'=299us"),
                    "{out}"
                );
                let kept = out.lines().count() - 1;
                assert!(
                    out.contains(&format!(
                        "; {} domains left out of this output to fit {budget} bytes",
                        200 - kept
                    )),
                    "{out}"
                );
            }
        }
    }

    #[test]
    fn gauge_report_names_the_series() {
        let a = GaugeAnswer {
            metric: "vcpu.*.delay_percent".into(),
            window_s: 300,
            newest_age_s: Some(1.0),
            domains_total: 1,
            domains: vec![GaugeDomain {
                uuid: "u".into(),
                domain: "web".into(),
                series: ["vcpu.0.delay_percent", "vcpu.1.delay_percent"]
                    .iter()
                    .zip([0.4, 12.5])
                    .map(|(m, v)| GaugeSeries {
                        metric: m.to_string(),
                        samples: 300,
                        avg: Some(v),
                        max: Some(v * 2.0),
                        min: Some(0.0),
                        last: v,
                        age_s: 1.0,
                    })
                    .collect(),
            }],
            agent: Vec::new(),
        };
        let c = Check {
            metric: "vcpu.*.delay_percent".into(),
            kind: Kind::Gauge {
                aggregate: Aggregate::Avg,
            },
            ..check("10", "20")
        };
        let out = render(&c.gauge(&a).unwrap(), 8192);
        assert_eq!(
            out,
            "HYPER-STATS WARNING - vcpu.*.delay_percent avg over 5m: web vcpu.1.delay_percent avg 12.50% WARNING; 0 of 1 domains OK \
             | 'web.vcpu.0.delay_percent.avg'=0.4%;10;20;0 'web.vcpu.1.delay_percent.avg'=12.5%;10;20;0\n\
             web: WARNING vcpu.0.delay_percent avg 0.40%, vcpu.1.delay_percent avg 12.50% WARNING\n"
        );
    }

    #[test]
    fn a_domain_too_big_for_the_budget_keeps_its_worst_values() {
        let series: Vec<GaugeSeries> = (0..40)
            .map(|i| GaugeSeries {
                metric: format!("vcpu.{i}.delay_percent"),
                samples: 60,
                avg: Some(f64::from(i)),
                max: None,
                min: None,
                last: 0.0,
                age_s: 1.0,
            })
            .collect();
        let a = GaugeAnswer {
            metric: "vcpu.*.delay_percent".into(),
            window_s: 60,
            newest_age_s: Some(1.0),
            domains_total: 1,
            domains: vec![GaugeDomain {
                uuid: "u".into(),
                domain: "big".into(),
                series,
            }],
            agent: Vec::new(),
        };
        let c = Check {
            metric: "vcpu.*.delay_percent".into(),
            kind: Kind::Gauge {
                aggregate: Aggregate::Avg,
            },
            ..check("30", "35")
        };
        let out = render(&c.gauge(&a).unwrap(), 1023);
        assert!(out.len() <= 1023, "{}", out.len());
        assert!(out.contains("'big.vcpu.39.delay_percent.avg'=39%"), "{out}");
        assert!(
            out.contains("values left out of this output to fit 1023 bytes"),
            "{out}"
        );
        assert!(!out.contains("'big.vcpu.0.delay_percent.avg'"), "{out}");
        let long = out.lines().nth(1).unwrap();
        assert!(long.starts_with("big: CRITICAL vcpu."), "{long}");
        assert!(long.contains(" more"), "{long}");
    }

    fn series(metric: &str, avg: f64, age_s: f64) -> GaugeSeries {
        GaugeSeries {
            metric: metric.into(),
            samples: 60,
            avg: Some(avg),
            max: Some(avg),
            min: Some(avg),
            last: avg,
            age_s,
        }
    }

    fn gauge_answer(domains: Vec<(&str, Vec<GaugeSeries>)>) -> GaugeAnswer {
        GaugeAnswer {
            metric: "vcpu.*.delay_percent".into(),
            window_s: 300,
            newest_age_s: Some(0.5),
            domains_total: domains.len(),
            domains: domains
                .into_iter()
                .map(|(name, series)| GaugeDomain {
                    uuid: format!("uuid-{name}"),
                    domain: name.into(),
                    series,
                })
                .collect(),
            agent: Vec::new(),
        }
    }

    fn gauge_check(warn: &str, crit: &str) -> Check {
        Check {
            metric: "vcpu.*.delay_percent".into(),
            kind: Kind::Gauge {
                aggregate: Aggregate::Avg,
            },
            ..check(warn, crit)
        }
    }

    /// libvirtd down, eBPF still feeding: the answer is fresh, its libvirt
    /// series are not. Those are UNKNOWN, named, not judged on their old
    /// values (95% would be CRITICAL) and graphed as `U`.
    #[test]
    fn stale_series_are_unknown_and_named() {
        let a = gauge_answer(vec![
            (
                "web",
                vec![
                    series("vcpu.0.delay_percent", 0.4, 1.0),
                    series("vcpu.1.delay_percent", 95.0, 95.2),
                ],
            ),
            ("db", vec![series("vcpu.0.delay_percent", 2.0, 0.5)]),
        ]);
        let r = gauge_check("10", "20").gauge(&a).unwrap();
        assert_eq!(r.state, State::Unknown);
        assert_eq!(
            render(&r, 8192),
            "HYPER-STATS UNKNOWN - vcpu.*.delay_percent avg over 5m: 1 series older than --max-age 30s: web vcpu.1.delay_percent 95s old; 1 of 2 domains OK \
             | 'web.vcpu.0.delay_percent.avg'=0.4%;10;20;0 'web.vcpu.1.delay_percent.avg'=U;10;20;0 'db.vcpu.0.delay_percent.avg'=2%;10;20;0\n\
             web: UNKNOWN vcpu.0.delay_percent avg 0.40%, vcpu.1.delay_percent avg stale (95s old) UNKNOWN\n\
             db: OK vcpu.0.delay_percent avg 2.00%\n"
        );
        // Exactly at --max-age is still fresh.
        let a = gauge_answer(vec![(
            "web",
            vec![series("vcpu.0.delay_percent", 1.0, 30.0)],
        )]);
        assert_eq!(gauge_check("10", "20").gauge(&a).unwrap().state, State::Ok);
    }

    /// A fresh CRITICAL outranks UNKNOWN (monitoring-plugins'
    /// `max_state_alt`), and the stale ones are still named.
    #[test]
    fn a_fresh_critical_stays_critical_beside_stale_series() {
        let a = gauge_answer(vec![
            ("web", vec![series("vcpu.0.delay_percent", 25.0, 1.0)]),
            ("db", vec![series("vcpu.0.delay_percent", 1.0, 40.0)]),
        ]);
        let r = gauge_check("10", "20").gauge(&a).unwrap();
        assert_eq!(r.state, State::Critical);
        let out = render(&r, 8192);
        let first = out.lines().next().unwrap();
        assert!(
            first.starts_with(
                "HYPER-STATS CRITICAL - vcpu.*.delay_percent avg over 5m: web 25.00% CRITICAL; \
                 1 series older than --max-age 30s: db vcpu.0.delay_percent 40s old; 0 of 2 domains OK | "
            ),
            "{out}"
        );
    }

    #[test]
    fn the_stale_list_is_bounded() {
        let stale: Vec<GaugeSeries> = (0..8)
            .map(|i| {
                series(
                    &format!("vcpu.{i}.delay_percent"),
                    1.0,
                    100.0 + f64::from(i),
                )
            })
            .collect();
        let a = gauge_answer(vec![("big", stale)]);
        let r = gauge_check("10", "20").gauge(&a).unwrap();
        let out = render(&r, 1023);
        assert!(out.len() <= 1023);
        assert!(
            out.starts_with(
                "HYPER-STATS UNKNOWN - vcpu.*.delay_percent avg over 5m: 8 series older than --max-age 30s: \
                 big vcpu.0.delay_percent 100s old, big vcpu.1.delay_percent 101s old, \
                 big vcpu.2.delay_percent 102s old, big vcpu.3.delay_percent 103s old, \
                 big vcpu.4.delay_percent 104s old and 3 more; 0 of 1 domains OK"
            ),
            "{out}"
        );
    }

    /// A histogram domain has one age: all of its values are stale or
    /// none; the stale list names the domain's histogram once.
    #[test]
    fn a_stale_histogram_domain_is_unknown_per_vcpu_too() {
        let mut a = histogram_answer(&[("web-1", 812.0), ("web-2", 900.0)]);
        a.domains[1].age_s = Some(61.0);
        a.domains[1].vcpus = (0..2)
            .map(|i| hyper_stats_query::VcpuValues {
                vcpu: i,
                values: HistogramValues {
                    count: 10,
                    values: vec![Some(50000.0)],
                    max: None,
                },
            })
            .collect();
        let c = Check {
            kind: Kind::Histogram {
                percentile: 99.0,
                per_vcpu: true,
            },
            ..check("5000", "10000")
        };
        let r = c.histogram(&a).unwrap();
        assert_eq!(r.state, State::Unknown);
        let out = render(&r, 8192);
        assert_eq!(
            out.lines().next().unwrap(),
            "HYPER-STATS UNKNOWN - runq_latency_us p99 per vCPU over 5m: 1 series older than --max-age 30s: \
             web-2 runq_latency_us 61s old; 1 of 2 domains OK \
             | 'web-2.vcpu.0.runq_latency_us.p99'=U;5000;10000;0 'web-2.vcpu.1.runq_latency_us.p99'=U;5000;10000;0"
        );
        assert!(
            out.contains(
                "web-2: UNKNOWN vcpu.0 p99 stale (61s old) UNKNOWN, vcpu.1 p99 stale (61s old) UNKNOWN (1000 samples)\n"
            ),
            "{out}"
        );
    }

    /// Checks what Nagios needs of any output: one `|` (the separator, on
    /// the first line), one long-output line per shown domain, and
    /// perfdata that the shared parser reads back as one label per value.
    fn assert_well_formed(out: &str, values: Option<usize>) -> Vec<String> {
        assert_eq!(out.matches('|').count(), 1, "{out:?}");
        let (first, rest) = out.split_once('\n').unwrap();
        let (_, perf) = first.split_once(" | ").expect("perfdata on the first line");
        assert!(!rest.contains('|'), "{out:?}");
        let items: Vec<_> = hyper_stats_query::perfdata::parse(perf)
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{perf:?}: {e}"));
        if let Some(values) = values {
            assert_eq!(items.len(), values, "{perf:?}");
        }
        items.into_iter().map(|i| i.label).collect()
    }

    /// Any domain or series name comes out as one component in the text
    /// and the labels: none can start perfdata, end a line, split a label
    /// or add a value.
    #[test]
    fn names_cannot_break_the_output() {
        let names = [
            "we|b 'x'=1",
            "it's",
            "a=b",
            "new\nline|'q'=5 | x=1",
            "two  spaces",
            "dömäne-ü",
            "",
            "cr\r\nlf",
            "\u{2028}sep",
        ];
        let domains: Vec<(&str, Vec<GaugeSeries>)> = names
            .iter()
            .map(|n| {
                (
                    *n,
                    vec![
                        series("vcpu.0.delay_percent", 1.0, 1.0),
                        series("vcpu.x|y='z'\n.delay_percent", 25.0, 1.0),
                    ],
                )
            })
            .collect();
        let a = gauge_answer(domains);
        let r = gauge_check("10", "20").gauge(&a).unwrap();
        for budget in [8192, 1023] {
            let out = render(&r, budget);
            let lines = out.lines().count();
            let all = (budget == 8192).then_some(2 * names.len());
            let labels = assert_well_formed(&out, all);
            if budget == 8192 {
                assert_eq!(lines, 1 + names.len(), "{out}");
                for n in names {
                    let d = hyper_stats_query::metric::sanitize_component(n);
                    assert!(labels.contains(&format!("{d}.vcpu.0.delay_percent.avg")));
                    assert!(labels.contains(&format!("{d}.vcpu.x_y__z__.delay_percent.avg")));
                    assert!(out.contains(&format!("\n{d}: CRITICAL ")), "{out}");
                }
            }
        }
        // Histograms, with a stale domain, name the same way.
        let mut h = histogram_answer(&names.iter().map(|n| (*n, 100.0)).collect::<Vec<_>>());
        h.domains[0].age_s = Some(99.0);
        let out = render(&check("5000", "10000").histogram(&h).unwrap(), 8192);
        assert_well_formed(&out, Some(names.len()));
        assert!(
            out.contains(
                ": 1 series older than --max-age 30s: we_b__x__1 runq_latency_us 99s old;"
            )
        );
    }

    proptest::proptest! {
        #[test]
        fn any_names_give_well_formed_output(
            names in proptest::collection::vec(proptest::prelude::any::<String>(), 1..6),
            device in proptest::prelude::any::<String>(),
            ages in proptest::collection::vec(0f64..100.0, 6),
        ) {
            let domains: Vec<(&str, Vec<GaugeSeries>)> = names
                .iter()
                .zip(&ages)
                .map(|(n, age)| (n.as_str(), vec![series(&format!("block.{device}.wr.latency_mean_ms"), *age, *age)]))
                .collect();
            let a = gauge_answer(domains);
            let r = gauge_check("10", "20").gauge(&a).unwrap();
            let out = render(&r, 8192);
            assert_well_formed(&out, Some(names.len()));
            proptest::prop_assert_eq!(out.lines().count(), 1 + names.len());
        }
    }

    #[test]
    fn failures_are_one_unknown_line() {
        let f = Failure("agent not running\nstart it".into());
        assert_eq!(
            failure(&f, 8192),
            "HYPER-STATS UNKNOWN - agent not running\n"
        );
        assert_eq!(failure(&f, 20), "HYPER-STATS UNKNOWN\n");
        // No `|` of an error message (an agent's, an option's) starts
        // perfdata.
        let f = Failure("invalid range \"a|b\" for --warning".into());
        assert_eq!(
            failure(&f, 8192),
            "HYPER-STATS UNKNOWN - invalid range \"a¦b\" for --warning\n"
        );
    }
}
