//! Which of the agent's datapoints go to Carbon: the operator's
//! `carbon.families` and `carbon.per_vcpu`, applied to each datapoint
//! before it is named and queued.
//!
//! # Why it exists
//! A guest with 4 vCPUs has up to 152 series, two thirds of them per vCPU
//! (`vcpu.N.*`); 250 such guests are 38,000 points a second, more than
//! three carbon-caches take. The JSON output and the query socket keep
//! every series; only what Carbon stores is chosen here.
//!
//! # What it receives and decides
//! A datapoint's metric name, e.g. `vcpu.3.runq_latency_us.p99`. Its
//! family is the name's first component (`vcpu`); a name under `vcpu.N.`
//! is per-vCPU detail. The datapoint goes if its family is chosen and, for
//! per-vCPU detail, if `per_vcpu` is on. Always sent, whatever the config:
//! the guest's merged histograms (`runq_latency_us.*`, `oncpu_us.*`: the
//! whole guest's distributions, a few series that answer "is this guest
//! waiting for CPU"), the agent's own series (`agent.*`, a dozen a host),
//! and any family this module does not know, so a metric added later is
//! never silently missing from Carbon.
//!
//! # Cost
//! It runs for every datapoint (25,000 a second on a large host): no
//! allocation, a scan for the first dot and a few byte comparisons, and
//! nothing at all when everything goes ([`Filter::ALL`]). What it drops is
//! not counted: the choice is static, and `agent.carbon.sent_points`
//! shows what goes.

use hyper_stats_query::metric::{HEATMAP_COMPONENT, HISTOGRAM_SUFFIX};

use crate::sample::Datapoint;

/// The names that always go to Carbon, by first component: the merged
/// histograms and the agent's own series. Listing one in
/// `carbon.families` is an error, so nobody believes it can be turned off.
pub(crate) const ALWAYS_SENT: [&str; 3] = ["runq_latency_us", "oncpu_us", "agent"];

/// A metric family that `carbon.families` may leave out, named as the
/// metrics' first component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// `state.*`: the domain's state and reason codes.
    State,
    /// `cpu.*`: the whole guest's CPU time.
    Cpu,
    /// `vcpu.*`: vCPU counts and, under `vcpu.N.`, the per-vCPU series of
    /// libvirt and the eBPF probes.
    Vcpu,
    /// `balloon.*`: guest memory.
    Balloon,
    /// `block.*`: per disk.
    Block,
    /// `net.*`: per interface.
    Net,
    /// `perf.*`: perf events libvirt was told to count.
    Perf,
}

impl Family {
    /// Every family, in the order the README's Metrics table lists them
    /// (and `check-config` shows them).
    pub(crate) const ALL: [Family; 7] = [
        Family::State,
        Family::Cpu,
        Family::Vcpu,
        Family::Balloon,
        Family::Block,
        Family::Net,
        Family::Perf,
    ];

    /// The family's name: the first component of its metrics.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Family::State => "state",
            Family::Cpu => "cpu",
            Family::Vcpu => "vcpu",
            Family::Balloon => "balloon",
            Family::Block => "block",
            Family::Net => "net",
            Family::Perf => "perf",
        }
    }

    /// The family named `name`, if it is one.
    pub(crate) fn from_name(name: &str) -> Option<Family> {
        Some(match name {
            "state" => Family::State,
            "cpu" => Family::Cpu,
            "vcpu" => Family::Vcpu,
            "balloon" => Family::Balloon,
            "block" => Family::Block,
            "net" => Family::Net,
            "perf" => Family::Perf,
            _ => return None,
        })
    }

    /// The family's bit in [`Filter`]'s set.
    fn bit(self) -> u8 {
        1 << self as u8
    }

    /// The families' names joined with ", ", for messages.
    pub(crate) fn names() -> String {
        Family::ALL.map(Family::name).join(", ")
    }
}

/// What goes to Carbon; a copy per sink, consulted for every datapoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filter {
    /// The chosen families, one bit each ([`Family::bit`]): a byte tests
    /// faster than a list.
    families: u8,
    /// Whether `vcpu.N.*` series go (when `vcpu` is chosen).
    per_vcpu: bool,
    /// Whether the histograms' heatmap buckets (`<histogram>.buckets.N`)
    /// go, where their histogram's summaries go.
    heatmap: bool,
}

impl Filter {
    /// Everything goes: what the sink did before it had a filter, and what
    /// benches and tests that are not about filtering want.
    pub const ALL: Filter = Filter {
        families: u8::MAX,
        per_vcpu: true,
        heatmap: true,
    };

    /// A filter sending `families` (and what always goes), with or
    /// without per-vCPU detail and heatmap buckets.
    pub(crate) fn new(families: &[Family], per_vcpu: bool, heatmap: bool) -> Filter {
        let chosen = families.iter().fold(0, |set, f| set | f.bit());
        let all = Family::ALL.iter().fold(0, |set, f| set | f.bit());
        Filter {
            // Every family chosen is ALL's set, so its shortcut applies.
            families: if chosen == all { u8::MAX } else { chosen },
            per_vcpu,
            heatmap,
        }
    }

    /// Whether `point` goes to Carbon.
    pub(crate) fn keeps(&self, point: &Datapoint) -> bool {
        point.is_agent() || self.keeps_metric(&point.metric)
    }

    /// Whether a domain's series named `metric` goes to Carbon.
    pub(crate) fn keeps_metric(&self, metric: &str) -> bool {
        if *self == Filter::ALL {
            return true;
        }
        if !self.heatmap && is_heatmap_bucket(metric) {
            return false;
        }
        let (first, rest) = metric.split_once('.').unwrap_or((metric, ""));
        // Merged histograms, agent series and families added after this
        // module all fall through here: they go.
        let Some(family) = Family::from_name(first) else {
            return true;
        };
        if self.families & family.bit() == 0 {
            return false;
        }
        self.per_vcpu || family != Family::Vcpu || !starts_with_vcpu_number(rest)
    }
}

/// Whether `metric` is a histogram's heatmap bucket, `<...>_us.buckets.N`.
fn is_heatmap_bucket(metric: &str) -> bool {
    let mut from_end = metric.rsplit('.');
    let (Some(bound), Some(component), Some(histogram)) =
        (from_end.next(), from_end.next(), from_end.next())
    else {
        return false;
    };
    component == HEATMAP_COMPONENT
        && histogram.ends_with(HISTOGRAM_SUFFIX)
        && !bound.is_empty()
        && bound.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `rest` (a name after `vcpu.`) starts with a vCPU number and a
/// dot, as `3.delay_percent` does and `current` does not.
fn starts_with_vcpu_number(rest: &str) -> bool {
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && rest.as_bytes().get(digits) == Some(&b'.')
}

#[cfg(test)]
mod tests {
    use hyper_stats_query::metric::histogram_name;

    use super::*;
    use crate::sources::ebpf::source::{ONCPU_METRIC, RUNQ_METRIC};

    /// One metric of every shape the agent emits, with its family (`None`:
    /// always sent) and whether it is per-vCPU detail.
    const METRICS: &[(&str, Option<Family>, bool)] = &[
        ("state.code", Some(Family::State), false),
        ("state.reason", Some(Family::State), false),
        ("cpu.time_percent", Some(Family::Cpu), false),
        ("vcpu.current", Some(Family::Vcpu), false),
        ("vcpu.maximum", Some(Family::Vcpu), false),
        ("vcpu.0.delay_percent", Some(Family::Vcpu), true),
        ("vcpu.12.halted", Some(Family::Vcpu), true),
        ("vcpu.3.runq_latency_us.p99", Some(Family::Vcpu), true),
        ("vcpu.3.oncpu_us.count", Some(Family::Vcpu), true),
        ("vcpu.1.kvm_exits_per_s", Some(Family::Vcpu), true),
        ("balloon.rss_bytes", Some(Family::Balloon), false),
        ("block.vda.wr.latency_mean_ms", Some(Family::Block), false),
        // A disk or interface named like a vCPU number is not per-vCPU.
        ("block.0.rd.reqs_per_s", Some(Family::Block), false),
        ("net.vnet0.rx.bytes_per_s", Some(Family::Net), false),
        ("perf.cpu_cycles_per_s", Some(Family::Perf), false),
        ("runq_latency_us.p99", None, false),
        ("runq_latency_us.count", None, false),
        ("oncpu_us.max", None, false),
        ("runq_latency_us.buckets.50", None, false),
        ("oncpu_us.buckets.5000000", None, false),
        ("vcpu.3.runq_latency_us.buckets.1", Some(Family::Vcpu), true),
        // Not buckets: a disk named `buckets`, a bound that is no number.
        ("block.buckets.rd.reqs_per_s", Some(Family::Block), false),
        ("runq_latency_us.buckets.x", None, false),
        ("agent.carbon.sent_points", None, false),
        ("future_family.x", None, false),
        ("nodots", None, false),
    ];

    /// What a filter of `families` and `per_vcpu` should do with each
    /// metric of [`METRICS`].
    fn expected(families: &[Family], per_vcpu: bool, m: &(&str, Option<Family>, bool)) -> bool {
        let (_, family, vcpu_n) = *m;
        match family {
            None => true,
            Some(f) => families.contains(&f) && (per_vcpu || !vcpu_n),
        }
    }

    #[test]
    fn every_family_alone_with_and_without_per_vcpu() {
        let mut choices: Vec<Vec<Family>> = Family::ALL.iter().map(|f| vec![*f]).collect();
        choices.push(Vec::new());
        choices.push(Family::ALL.to_vec());
        choices.push(vec![Family::Cpu, Family::Vcpu, Family::Net]);
        for families in &choices {
            for per_vcpu in [false, true] {
                let filter = Filter::new(families, per_vcpu, true);
                for m in METRICS {
                    assert_eq!(
                        filter.keeps_metric(m.0),
                        expected(families, per_vcpu, m),
                        "{} with families {families:?}, per_vcpu {per_vcpu}",
                        m.0
                    );
                }
            }
        }
    }

    #[test]
    fn all_keeps_everything() {
        for m in METRICS {
            assert!(Filter::ALL.keeps_metric(m.0), "{}", m.0);
        }
        assert_eq!(Filter::new(&Family::ALL, true, true), Filter::ALL);
        assert_ne!(Filter::new(&Family::ALL, false, true), Filter::ALL);
    }

    #[test]
    fn heatmap_off_drops_exactly_the_buckets() {
        for per_vcpu in [false, true] {
            let with = Filter::new(&Family::ALL, per_vcpu, true);
            let without = Filter::new(&Family::ALL, per_vcpu, false);
            assert_ne!(without, Filter::ALL);
            for m in METRICS {
                let bucket = m.0.contains("_us.buckets.") && !m.0.ends_with(".x");
                assert_eq!(
                    without.keeps_metric(m.0),
                    with.keeps_metric(m.0) && !bucket,
                    "{} per_vcpu {per_vcpu}",
                    m.0
                );
            }
        }
    }

    #[test]
    fn vcpu_numbers_are_recognized_exactly() {
        let cases = [
            ("0.time_percent", true),
            ("127.oncpu_us.p50", true),
            ("current", false),
            ("maximum", false),
            ("0", false),
            ("", false),
            ("x0.time_percent", false),
            ("0x.time_percent", false),
        ];
        for (rest, want) in cases {
            assert_eq!(starts_with_vcpu_number(rest), want, "{rest:?}");
        }
    }

    #[test]
    fn agent_points_go_whatever_their_name() {
        let filter = Filter::new(&[], false, true);
        let agent = Datapoint::agent(1.0, "agent.carbon.sent_points".into(), 3.0);
        assert!(filter.keeps(&agent));
        let domain = Datapoint {
            uuid: "u".into(),
            domain: "d".into(),
            ..Datapoint::agent(1.0, "cpu.time_percent".into(), 3.0)
        };
        assert!(!filter.keeps(&domain));
    }

    /// The always-sent names are the ones the eBPF source and the rollup
    /// give the merged histograms, and no family shares a name with them.
    #[test]
    fn always_sent_names_match_the_histograms() {
        assert_eq!(ALWAYS_SENT[0], histogram_name(RUNQ_METRIC));
        assert_eq!(ALWAYS_SENT[1], histogram_name(ONCPU_METRIC));
        for name in ALWAYS_SENT {
            assert_eq!(Family::from_name(name), None, "{name}");
        }
        for f in Family::ALL {
            assert_eq!(Family::from_name(f.name()), Some(f));
        }
    }
}
