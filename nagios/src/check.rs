//! Judging the agent's answer: which domains (and vCPUs) are OK, WARNING
//! or CRITICAL under the thresholds, and what each one's value is.
//!
//! This is pure: it takes the decoded answer and the check's options and
//! returns a [`Report`], or a [`Failure`] (every reason the plugin cannot
//! judge, which becomes UNKNOWN). Rendering the report is `output.rs`'s
//! job; talking to the socket is `client.rs`'s.
//!
//! # Ages
//! Every series is judged by its own age, not only the answer's newest:
//! the eBPF source keeps a domain (and the answer's `newest_age_s`) fresh
//! while libvirtd is down, so a libvirt series can be minutes old in an
//! answer that is not. A gauge series, or a histogram domain, older than
//! `--max-age` is not judged: its item is UNKNOWN, its perfdata value `U`
//! (an old value is no reading of now), and the report lists it as stale
//! ([`Group::stale`]). The report's state is the worst of its items
//! (CRITICAL, WARNING, UNKNOWN, OK), so a stale series makes an otherwise
//! OK check UNKNOWN and a fresh CRITICAL stays CRITICAL.
//!
//! # Names
//! Domain and series names come from libvirt through the agent and may
//! hold anything (`|`, quotes, newlines). Every name that reaches the
//! output is made one component by the sanitizer the perfdata labels use
//! ([`hyper_stats_query::metric::sanitize_component`]), so the text names
//! a domain exactly as its labels and Carbon paths do.

use std::fmt;

use hyper_stats_query::metric::{sanitize_component, sanitize_dotted};
use hyper_stats_query::{GaugeAnswer, HistogramAnswer};

use crate::glob;
use crate::perfdata;
use crate::range::Range;

/// A plugin state, with its exit code as the discriminant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// 0
    Ok = 0,
    /// 1
    Warning = 1,
    /// 2
    Critical = 2,
    /// 3
    Unknown = 3,
}

impl State {
    /// How bad a state is when states are combined: CRITICAL, then
    /// WARNING, then UNKNOWN, then OK (monitoring-plugins' `max_state_alt`).
    pub fn severity(self) -> u8 {
        match self {
            State::Ok => 0,
            State::Unknown => 1,
            State::Warning => 2,
            State::Critical => 3,
        }
    }

    /// The worse of two states.
    pub fn worst(self, other: State) -> State {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }

    /// The exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        })
    }
}

/// Why the plugin cannot judge: the text of its UNKNOWN line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What is checked over each series of a libvirt metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// The mean over the window.
    Avg,
    /// The largest value in the window.
    Max,
}

impl Aggregate {
    /// The name used in labels and text.
    pub fn name(self) -> &'static str {
        match self {
            Aggregate::Avg => "avg",
            Aggregate::Max => "max",
        }
    }
}

/// The kind of metric checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A latency histogram of the eBPF probes.
    Histogram {
        /// The percentile, in (0, 100].
        percentile: f64,
        /// One value per vCPU instead of per domain.
        per_vcpu: bool,
    },
    /// A libvirt gauge or rate.
    Gauge {
        /// Average or maximum over the window.
        aggregate: Aggregate,
    },
}

/// A check's options, as the command line gave them.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The metric name or pattern.
    pub metric: String,
    /// Histogram or gauge, and how.
    pub kind: Kind,
    /// The window in seconds.
    pub window_s: u32,
    /// `-w`.
    pub warn: Option<Range>,
    /// `-c`.
    pub crit: Option<Range>,
    /// `--domain` globs; empty means every domain.
    pub domains: Vec<String>,
    /// `--exclude` globs.
    pub exclude: Vec<String>,
    /// Data older than this many seconds is stale.
    pub max_age_s: f64,
}

/// The label suffix of a percentile: `99` → `p99`, `99.9` → `p999`, the
/// names the agent's per-second summaries use.
pub fn percentile_name(p: f64) -> String {
    format!("p{}", perfdata::number(p).replace('.', ""))
}

/// The unit of measure of a metric, from the unit in its name.
pub fn uom_of(metric: &str) -> &'static str {
    hyper_stats_query::metric::Unit::of(metric).uom()
}

/// A value with its unit, for people: `812us`, `5.20ms`, `0.41%`.
pub fn human(value: Option<f64>, uom: &str) -> String {
    let Some(v) = value.filter(|v| v.is_finite()) else {
        return "no samples".to_owned();
    };
    match uom {
        "us" if v >= 1000.0 => format!("{:.2}ms", v / 1000.0),
        "us" => format!("{v:.0}us"),
        "ms" => format!("{v:.2}ms"),
        "%" => format!("{v:.2}%"),
        "B" if v >= 1024.0 * 1024.0 * 1024.0 => format!("{:.2}GiB", v / (1024.0 * 1024.0 * 1024.0)),
        "B" if v >= 1024.0 * 1024.0 => format!("{:.1}MiB", v / (1024.0 * 1024.0)),
        "B" if v >= 1024.0 => format!("{:.1}KiB", v / 1024.0),
        "B" => format!("{v:.0}B"),
        _ => perfdata::number(v),
    }
}

/// One judged value.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// What it is within its domain, e.g. `p99`, `vcpu.1 p99`,
    /// `vcpu.0.delay_percent avg` (series names sanitized).
    pub name: String,
    /// Its perfdata (value `U` when stale).
    pub perf: perfdata::Perf,
    /// Its state: UNKNOWN when stale.
    pub state: State,
    /// Seconds since its series' newest data, when that is more than
    /// `--max-age`: the value was not judged.
    pub stale_s: Option<f64>,
}

/// A series (or a histogram domain) older than `--max-age`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stale {
    /// The series, sanitized: `vcpu.0.delay_percent`, `runq_latency_us`.
    pub series: String,
    /// Seconds since its newest data.
    pub age_s: f64,
}

/// One domain's judged values.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// The domain's name, made one component as in its perfdata labels
    /// ([`sanitize_component`]).
    pub domain: String,
    /// The worst state of its items (UNKNOWN for a stale one).
    pub state: State,
    /// Its values.
    pub items: Vec<Item>,
    /// Its series older than `--max-age`, in item order.
    pub stale: Vec<Stale>,
    /// Anything else to say, e.g. `12345 samples`.
    pub note: Option<String>,
}

impl Group {
    /// The largest value of the group, for ordering.
    pub fn worst_value(&self) -> f64 {
        self.items
            .iter()
            .filter_map(|i| i.perf.value)
            .fold(f64::NEG_INFINITY, f64::max)
    }

    /// The item with the worst state, then the largest value.
    pub fn worst_item(&self) -> Option<&Item> {
        self.items.iter().max_by(|a, b| {
            a.state.severity().cmp(&b.state.severity()).then(
                a.perf
                    .value
                    .unwrap_or(f64::NEG_INFINITY)
                    .total_cmp(&b.perf.value.unwrap_or(f64::NEG_INFINITY)),
            )
        })
    }
}

/// The result of a check.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The overall state.
    pub state: State,
    /// What was checked, e.g. `runq_latency_us p99 over 5m`.
    pub what: String,
    /// The unit of the metric asked for (each item carries its own, which
    /// differs only for patterns such as `balloon.*`).
    pub uom: &'static str,
    /// Every domain, worst first.
    pub groups: Vec<Group>,
    /// Domains the agent sees in all.
    pub domains_total: usize,
    /// `--max-age` in seconds, for naming stale series.
    pub max_age_s: f64,
}

/// A window in seconds as people write it: `5m`, `90s`, `1m30s` is not
/// needed.
pub fn window_text(s: u32) -> String {
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

impl Check {
    fn state_of(&self, value: Option<f64>) -> State {
        let Some(v) = value else {
            return State::Ok;
        };
        if self.crit.is_some_and(|r| r.alerts(v)) {
            State::Critical
        } else if self.warn.is_some_and(|r| r.alerts(v)) {
            State::Warning
        } else {
            State::Ok
        }
    }

    fn selected(&self, domain: &str) -> bool {
        (self.domains.is_empty() || self.domains.iter().any(|g| glob::matches(g, domain)))
            && !self.exclude.iter().any(|g| glob::matches(g, domain))
    }

    /// Whether data `age_s` old is too old to judge: its age if so.
    fn stale(&self, age_s: f64) -> Option<f64> {
        (age_s > self.max_age_s).then_some(age_s)
    }

    fn item(
        &self,
        name: String,
        label: String,
        value: Option<f64>,
        uom: &'static str,
        stale_s: Option<f64>,
    ) -> Item {
        // A stale value is no reading of now: not judged, not graphed.
        let value = value.filter(|_| stale_s.is_none());
        Item {
            name,
            state: if stale_s.is_some() {
                State::Unknown
            } else {
                self.state_of(value)
            },
            stale_s,
            perf: perfdata::Perf {
                label,
                value,
                uom,
                warn: self.warn,
                crit: self.crit,
                min: Some(0.0),
                max: None,
            },
        }
    }

    fn check_age(&self, newest_age_s: Option<f64>) -> Result<(), Failure> {
        match newest_age_s {
            None => Err(Failure(
                "the agent has no data yet (it started less than one poll ago, or sees no libvirt domains)".into(),
            )),
            Some(age) if age > self.max_age_s => Err(Failure(format!(
                "stale data: the agent's newest datapoint is {age:.0}s old (--max-age {:.0}s); is libvirtd reachable?",
                self.max_age_s
            ))),
            Some(_) => Ok(()),
        }
    }

    /// The report when nothing was selected: OK on a host with no domains,
    /// UNKNOWN when filters or missing data leave nothing to judge.
    fn empty(
        &self,
        domains_total: usize,
        what: String,
        uom: &'static str,
    ) -> Result<Report, Failure> {
        if domains_total == 0 && self.domains.is_empty() {
            return Ok(Report {
                state: State::Ok,
                what,
                uom,
                groups: Vec::new(),
                domains_total,
                max_age_s: self.max_age_s,
            });
        }
        if !self.domains.is_empty() || !self.exclude.is_empty() {
            let mut filters: Vec<String> = self
                .domains
                .iter()
                .map(|g| format!("--domain {g}"))
                .collect();
            filters.extend(self.exclude.iter().map(|g| format!("--exclude {g}")));
            return Err(Failure(format!(
                "no domain with {} data is left by {} (the agent sees {domains_total} domains)",
                self.metric,
                filters.join(" ")
            )));
        }
        Err(Failure(format!(
            "no {} data for any of the agent's {domains_total} domains yet",
            self.metric
        )))
    }

    /// Judges a histogram answer.
    pub fn histogram(&self, a: &HistogramAnswer) -> Result<Report, Failure> {
        let Kind::Histogram {
            percentile,
            per_vcpu,
        } = self.kind
        else {
            return Err(Failure(
                "internal: histogram answer for a gauge check".into(),
            ));
        };
        self.check_age(a.newest_age_s)?;
        let pname = percentile_name(percentile);
        let uom = "us";
        let what = format!(
            "{} {pname}{} over {}",
            self.metric,
            if per_vcpu { " per vCPU" } else { "" },
            window_text(self.window_s)
        );
        let mut groups = Vec::new();
        for d in a.domains.iter().filter(|d| self.selected(&d.domain)) {
            // The domain's histogram has one age: every value of it is
            // stale or none is. No age means no summary yet: not stale.
            let stale_s = d.age_s.and_then(|age| self.stale(age));
            let mut items = Vec::new();
            if per_vcpu {
                for v in &d.vcpus {
                    let metric = format!("vcpu.{}.{}", v.vcpu, self.metric);
                    items.push(self.item(
                        format!("vcpu.{} {pname}", v.vcpu),
                        perfdata::label(&d.domain, &[&metric, &pname]),
                        v.values.values.first().copied().flatten(),
                        uom,
                        stale_s,
                    ));
                }
            } else {
                items.push(self.item(
                    pname.clone(),
                    perfdata::label(&d.domain, &[&self.metric, &pname]),
                    d.all.values.first().copied().flatten(),
                    uom,
                    stale_s,
                ));
            }
            let stale = stale_s
                .map(|age_s| Stale {
                    series: sanitize_dotted(&self.metric),
                    age_s,
                })
                .into_iter()
                .collect();
            groups.push(Group {
                domain: sanitize_component(&d.domain),
                state: worst_of(&items),
                items,
                stale,
                note: Some(format!("{} samples", d.all.count)),
            });
        }
        if groups.is_empty() {
            return self.empty(a.domains_total, what, uom);
        }
        // A running vCPU always waits sometimes: no sample at all in any
        // domain means the window has no data yet, not that all is well.
        let selected = a.domains.iter().filter(|d| self.selected(&d.domain));
        if selected.clone().all(|d| d.all.count == 0) {
            return Err(Failure(format!(
                "no {} samples in the last {} for any of {} domains (the agent's window fills within a minute of its start)",
                self.metric,
                window_text(self.window_s),
                selected.count()
            )));
        }
        Ok(finish(groups, what, uom, a.domains_total, self.max_age_s))
    }

    /// Judges a gauge answer.
    pub fn gauge(&self, a: &GaugeAnswer) -> Result<Report, Failure> {
        let Kind::Gauge { aggregate } = self.kind else {
            return Err(Failure(
                "internal: gauge answer for a histogram check".into(),
            ));
        };
        self.check_age(a.newest_age_s)?;
        let uom = uom_of(&self.metric);
        let what = format!(
            "{} {} over {}",
            self.metric,
            aggregate.name(),
            window_text(self.window_s)
        );
        let mut groups = Vec::new();
        for d in a.domains.iter().filter(|d| self.selected(&d.domain)) {
            let mut stale = Vec::new();
            let items: Vec<Item> = d
                .series
                .iter()
                .map(|s| {
                    let value = match aggregate {
                        Aggregate::Avg => s.avg,
                        Aggregate::Max => s.max,
                    };
                    let series = sanitize_dotted(&s.metric);
                    let stale_s = self.stale(s.age_s);
                    if let Some(age_s) = stale_s {
                        stale.push(Stale {
                            series: series.clone(),
                            age_s,
                        });
                    }
                    // A pattern may mix units (balloon.*): each series
                    // carries the unit of its own name.
                    self.item(
                        format!("{series} {}", aggregate.name()),
                        perfdata::label(&d.domain, &[&s.metric, aggregate.name()]),
                        value,
                        uom_of(&s.metric),
                        stale_s,
                    )
                })
                .collect();
            groups.push(Group {
                domain: sanitize_component(&d.domain),
                state: worst_of(&items),
                items,
                stale,
                note: None,
            });
        }
        if groups.is_empty() {
            return self.empty(a.domains_total, what, uom);
        }
        Ok(finish(groups, what, uom, a.domains_total, self.max_age_s))
    }
}

/// The worst state of `items`.
fn worst_of(items: &[Item]) -> State {
    items.iter().fold(State::Ok, |s, i| s.worst(i.state))
}

/// Orders groups worst first and sets the overall state.
fn finish(
    mut groups: Vec<Group>,
    what: String,
    uom: &'static str,
    total: usize,
    max_age_s: f64,
) -> Report {
    groups.sort_by(|a, b| {
        b.state
            .severity()
            .cmp(&a.state.severity())
            .then(b.worst_value().total_cmp(&a.worst_value()))
            .then(a.domain.cmp(&b.domain))
    });
    let state = groups.iter().fold(State::Ok, |s, g| s.worst(g.state));
    Report {
        state,
        what,
        uom,
        groups,
        domains_total: total,
        max_age_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_units_and_windows() {
        assert_eq!(percentile_name(99.0), "p99");
        assert_eq!(percentile_name(99.9), "p999");
        assert_eq!(percentile_name(50.0), "p50");
        assert_eq!(uom_of("vcpu.0.delay_percent"), "%");
        assert_eq!(uom_of("block.vda.wr.latency_mean_ms"), "ms");
        assert_eq!(uom_of("net.tap0.rx.drops_per_s"), "");
        assert_eq!(uom_of("balloon.rss_bytes"), "B");
        assert_eq!(uom_of("runq_latency_us"), "us");
        assert_eq!(human(Some(812.4), "us"), "812us");
        assert_eq!(human(Some(5200.0), "us"), "5.20ms");
        assert_eq!(human(None, "us"), "no samples");
        assert_eq!(human(Some(134217728.0), "B"), "128.0MiB");
        assert_eq!(human(Some(512.0), "B"), "512B");
        assert_eq!(window_text(300), "5m");
        assert_eq!(window_text(90), "90s");
    }

    #[test]
    fn states_combine_worst_first() {
        assert_eq!(State::Ok.worst(State::Unknown), State::Unknown);
        assert_eq!(State::Unknown.worst(State::Warning), State::Warning);
        assert_eq!(State::Critical.worst(State::Unknown), State::Critical);
    }
}
