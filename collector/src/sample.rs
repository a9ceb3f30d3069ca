//! What flows through the pipeline: the [`Sample`]s sources send to the
//! rollup stage, and the [`Datapoint`]s every sink consumes.
//!
//! A datapoint names its series (domain UUID, domain name, dotted metric
//! name), carries a unix timestamp in seconds and an `f64` value. Sources
//! send samples in batches, one per poll; the rollup stage passes gauges
//! through, turns latencies into their per-second summaries, and hands the
//! sinks one [`Batch`] per input batch, so a sink sees every value of one
//! instant together and can write it in one go.

use std::sync::Arc;

use serde::Serialize;

/// One value of one series at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Datapoint {
    /// Unix time in seconds, with sub-second precision, when the value was
    /// sampled (the middle of the call that read it).
    pub ts: f64,
    /// The domain's UUID: its identity, stable across renames. Empty for
    /// the agent's own series (and then left out of the JSON).
    #[serde(skip_serializing_if = "is_empty")]
    pub uuid: Arc<str>,
    /// The domain's name at the time of the sample: a label only. Empty
    /// for the agent's own series.
    #[serde(skip_serializing_if = "is_empty")]
    pub domain: Arc<str>,
    /// Dotted metric name with its unit, e.g. `vcpu.0.delay_percent`:
    /// shared, so that a source or the rollup names a series once and
    /// every second's datapoint of it costs no allocation.
    pub metric: Arc<str>,
    /// The value, in the unit the metric name gives.
    pub value: f64,
}

impl Datapoint {
    /// A datapoint of the agent's own series `metric` (`agent.*`), which
    /// belongs to no domain.
    pub(crate) fn agent(ts: f64, metric: Arc<str>, value: f64) -> Datapoint {
        Datapoint {
            ts,
            uuid: Arc::from(""),
            domain: Arc::from(""),
            metric,
            value,
        }
    }

    /// Whether this is one of the agent's own series.
    pub(crate) fn is_agent(&self) -> bool {
        self.uuid.is_empty()
    }
}

fn is_empty(s: &Arc<str>) -> bool {
    s.is_empty()
}

/// The datapoints of one poll, in the order they were derived.
pub type Batch = Vec<Datapoint>;

/// What a source sends down the pipeline: the rollup stage passes values
/// through, rolls latencies into histograms, and retires domains.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// A value that is final as it is (a gauge, a rate, a percentage).
    Gauge(Datapoint),
    /// What one vCPU's latency histogram gained during one interval.
    Latency(Latency),
    /// A domain (by UUID) stopped: its series end now.
    Retired(Arc<str>),
}

/// One interval of one vCPU's latency distribution, decoded from the
/// kernel's buckets. A source batch that holds latencies is one second of
/// them: the rollup closes that second at their newest `ts`.
#[derive(Debug, Clone, PartialEq)]
pub struct Latency {
    /// Unix time in seconds at the end of the interval.
    pub ts: f64,
    /// The domain's UUID.
    pub uuid: Arc<str>,
    /// The domain's name at the time of the sample.
    pub domain: Arc<str>,
    /// The vCPU index.
    pub vcpu: u32,
    /// The base metric, e.g. `runq_latency`: the rollup emits
    /// `vcpu.N.runq_latency_us.p99` and the domain-wide merge from it.
    pub metric: &'static str,
    /// `(value_ns, count)` pairs; empty for an interval without events,
    /// which still reports `count` 0.
    pub values: Vec<(u64, u64)>,
    /// The exact sum of the interval's values in ns (the kernel keeps it;
    /// the values above stand at bucket midpoints).
    pub sum_ns: u64,
}

/// The samples of one poll.
pub(crate) type Samples = Vec<Sample>;
