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

use crate::check::{Failure, Group, Item, Report, State, human};

/// The prefix of every status line.
pub const PREFIX: &str = "HYPER-STATS";

/// How many not-OK domains the status line names.
const NAMED_OFFENDERS: usize = 3;

/// The UNKNOWN output for a failure.
pub fn failure(f: &Failure, max_bytes: usize) -> String {
    let mut line = format!("{PREFIX} UNKNOWN - {f}");
    // A multi-line error keeps its first line on the status line.
    if let Some(i) = line.find('\n') {
        line.truncate(i);
    }
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
    let mut s = format!("{} {}", i.name, human(i.perf.value, i.perf.uom));
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

fn summary(r: &Report) -> String {
    let n = r.groups.len();
    if n == 0 {
        return format!("no running domains ({})", r.what);
    }
    let bad: Vec<&Group> = r.groups.iter().filter(|g| g.state != State::Ok).collect();
    if bad.is_empty() {
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
    let named: Vec<String> = bad
        .iter()
        .take(NAMED_OFFENDERS)
        .map(|g| offender(g))
        .collect();
    let mut s = format!("{}: {}", r.what, named.join(", "));
    if bad.len() > NAMED_OFFENDERS {
        s.push_str(&format!(", {} more not OK", bad.len() - NAMED_OFFENDERS));
    }
    s.push_str(&format!("; {} of {n} domains OK", n - bad.len()));
    s
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
    let mut out = format!("{PREFIX} {} - {}", r.state, summary(r));
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
        out.push_str(&format!("{}: {} {}", g.domain, g.state, items.join(", ")));
        if shown < g.items.len() {
            out.push_str(&format!(", {} more", g.items.len() - shown));
        }
        if let Some(note) = &g.note {
            out.push_str(&format!(" ({note})"));
        }
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

    #[test]
    fn failures_are_one_unknown_line() {
        let f = Failure("agent not running\nstart it".into());
        assert_eq!(
            failure(&f, 8192),
            "HYPER-STATS UNKNOWN - agent not running\n"
        );
        assert_eq!(failure(&f, 20), "HYPER-STATS UNKNOWN\n");
    }
}
