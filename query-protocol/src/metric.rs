//! Metric names: the one definition of how the agent names its series and
//! how every output turns a name into a path component.
//!
//! Names are dotted, with the unit at the end of the last component
//! (`cpu.time_percent`, `block.vda.wr.latency_mean_ms`). The eBPF latency
//! histograms are named `<what>_us` (`runq_latency_us`, `oncpu_us`); each
//! second the agent emits their summaries as `<histogram>.<summary>`
//! ([`SUMMARIES`]), per vCPU under `vcpu.N.` and merged per domain without
//! it. The agent (rollup, query socket) and `check_hyper_stats` (units,
//! which query to send) both read names through this module, and every
//! output that needs a path (Carbon, perfdata labels, Graphios) makes a
//! domain or device name into one component with [`sanitize_component`],
//! so one domain has one name everywhere. The JSON output keeps names
//! exactly as libvirt reports them.

/// The suffix of every histogram metric: its values are microseconds.
pub const HISTOGRAM_SUFFIX: &str = "_us";

/// The percentiles the agent summarises each histogram's second with, and
/// the summary name of each.
pub const PERCENTILES: [(f64, &str); 4] =
    [(0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p999")];

/// Every summary of a histogram's second: `count` and `sum` always (the
/// sum exact, from the kernel), the rest only when the second had values.
pub const SUMMARIES: [&str; 8] = ["count", "sum", "mean", "p50", "p90", "p99", "p999", "max"];

/// The upper bounds, in µs, of the heatmap buckets each histogram's second
/// is also sent as (`<histogram>.buckets.<bound>`, e.g.
/// `runq_latency_us.buckets.50`): a 1-2-5 ladder from 1 µs to 5 s, which
/// covers the kernel's range (4.29 s). A bucket counts the second's values
/// above the previous bound up to its own (the first from 0), so a
/// second's buckets sum to its `count`; only buckets with values are sent.
/// Numeric last components are what Grafana's heatmap ("time series
/// buckets") and the dashboard read as bounds.
pub const HEATMAP_BOUNDS_US: [u64; 21] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000,
    200_000, 500_000, 1_000_000, 2_000_000, 5_000_000,
];

/// The component between a histogram's name and a heatmap bucket's bound.
pub const HEATMAP_COMPONENT: &str = "buckets";

/// The heatmap bucket (index into [`HEATMAP_BOUNDS_US`]) of a value of
/// `ns` nanoseconds; values past the last bound go to the last bucket.
pub fn heatmap_bucket(ns: u64) -> usize {
    HEATMAP_BOUNDS_US
        .partition_point(|&bound| bound * 1000 < ns)
        .min(HEATMAP_BOUNDS_US.len() - 1)
}

/// The histogram metric named `what` (`runq_latency` → `runq_latency_us`).
pub fn histogram_name(what: &str) -> String {
    format!("{what}{HISTOGRAM_SUFFIX}")
}

/// Whether `metric` names a histogram as the query socket takes it: one
/// component (no dots) ending in [`HISTOGRAM_SUFFIX`], e.g.
/// `runq_latency_us`.
pub fn is_histogram(metric: &str) -> bool {
    !metric.contains('.') && metric.ends_with(HISTOGRAM_SUFFIX)
}

/// If `metric` is a summary of a histogram (`runq_latency_us.p99`,
/// `vcpu.1.runq_latency_us.count`), the histogram's name.
pub fn histogram_of_summary(metric: &str) -> Option<&str> {
    let (base, summary) = metric.rsplit_once('.')?;
    let name = base.rsplit('.').next()?;
    (SUMMARIES.contains(&summary) && name.ends_with(HISTOGRAM_SUFFIX)).then_some(name)
}

/// The unit a metric's name gives, from the end of its last component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// `_us`.
    Microseconds,
    /// `_ms`.
    Milliseconds,
    /// `_percent`.
    Percent,
    /// `_bytes`.
    Bytes,
    /// Counts, rates (`_per_s`), codes: no unit of measure in perfdata.
    None,
}

impl Unit {
    /// The unit of `metric`.
    pub fn of(metric: &str) -> Unit {
        let last = metric.rsplit('.').next().unwrap_or(metric);
        if last.ends_with("_us") {
            Unit::Microseconds
        } else if last.ends_with("_ms") {
            Unit::Milliseconds
        } else if last.ends_with("_percent") {
            Unit::Percent
        } else if last.ends_with("_bytes") {
            Unit::Bytes
        } else {
            Unit::None
        }
    }

    /// The unit of measure perfdata uses for it.
    pub fn uom(self) -> &'static str {
        match self {
            Unit::Microseconds => "us",
            Unit::Milliseconds => "ms",
            Unit::Percent => "%",
            Unit::Bytes => "B",
            Unit::None => "",
        }
    }
}

/// A name (domain, device, host, perf event) as one path component:
/// everything but `[A-Za-z0-9_-]` (dots, spaces, quotes, `|`, `=`,
/// non-ASCII letters) becomes `_`, and an empty name becomes `_`, so no
/// name can add, remove or break a component of a dotted path or a
/// perfdata label.
pub fn sanitize_component(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "_".to_owned()
    } else {
        cleaned
    }
}

/// A dotted metric name with each component made safe by
/// [`sanitize_component`]; the dots stay.
pub fn sanitize_dotted(metric: &str) -> String {
    metric
        .split('.')
        .map(sanitize_component)
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_keeps_plain_names_and_replaces_separators() {
        let cases = [
            ("vda", "vda"),
            ("tap-web-1", "tap-web-1"),
            ("web.3", "web_3"),
            ("a b", "a_b"),
            ("it's", "it_s"),
            ("x|y=z", "x_y_z"),
            ("\"q\"", "_q_"),
            ("tap-hs-lab-1", "tap-hs-lab-1"),
            ("my.disk", "my_disk"),
            ("a b/c", "a_b_c"),
            ("vm-é", "vm-_"),
            ("dömäne", "d_m_ne"),
            ("", "_"),
        ];
        for (raw, want) in cases {
            assert_eq!(sanitize_component(raw), want, "{raw:?}");
        }
        assert_eq!(
            sanitize_dotted("vcpu.0.runq_latency_us.p99"),
            "vcpu.0.runq_latency_us.p99"
        );
        assert_eq!(sanitize_dotted("net.a b.rx"), "net.a_b.rx");
    }

    #[test]
    fn units_come_from_the_last_component() {
        let cases = [
            ("vcpu.0.delay_percent", "%"),
            ("block.vda.wr.latency_mean_ms", "ms"),
            ("net.tap0.rx.drops_per_s", ""),
            ("balloon.rss_bytes", "B"),
            ("runq_latency_us", "us"),
            ("vcpu.0.runq_latency_us.count", ""),
        ];
        for (metric, uom) in cases {
            assert_eq!(Unit::of(metric).uom(), uom, "{metric}");
        }
    }

    #[test]
    fn histograms_and_their_summaries_are_recognised() {
        assert!(is_histogram("runq_latency_us"));
        assert!(!is_histogram("vcpu.0.runq_latency_us"));
        assert!(!is_histogram("cpu.time_percent"));
        assert_eq!(histogram_name("oncpu"), "oncpu_us");
        let cases = [
            ("runq_latency_us.p99", Some("runq_latency_us")),
            ("vcpu.1.runq_latency_us.count", Some("runq_latency_us")),
            ("vcpu.0.oncpu_us.p999", Some("oncpu_us")),
            ("runq_latency_us.sum", Some("runq_latency_us")),
            ("runq_latency_us", None),
            ("cpu.time_percent", None),
            ("block.vda.wr.latency_mean_ms", None),
            ("runq_latency_us.p42", None),
            ("vcpu.0.runq_latency_us.p42", None),
            ("vcpu.0.delay_percent", None),
        ];
        for (metric, want) in cases {
            assert_eq!(histogram_of_summary(metric), want, "{metric}");
        }
        for (_, name) in PERCENTILES {
            assert!(SUMMARIES.contains(&name));
        }
    }

    #[test]
    fn heatmap_buckets_take_values_up_to_their_bound() {
        assert_eq!(heatmap_bucket(0), 0);
        assert_eq!(heatmap_bucket(1_000), 0, "1 µs is the first bound");
        assert_eq!(heatmap_bucket(1_001), 1);
        assert_eq!(heatmap_bucket(2_000), 1);
        assert_eq!(heatmap_bucket(2_001), 2);
        assert_eq!(heatmap_bucket(50_000), 5);
        assert_eq!(heatmap_bucket(4_999_999_999), HEATMAP_BOUNDS_US.len() - 1);
        assert_eq!(heatmap_bucket(u64::MAX / 2000), HEATMAP_BOUNDS_US.len() - 1);
        assert!(HEATMAP_BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
        // The last bound covers the kernel's range (2^32 ns).
        assert!(HEATMAP_BOUNDS_US[HEATMAP_BOUNDS_US.len() - 1] * 1000 >= 1 << 32);
    }
}
