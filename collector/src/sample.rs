//! The datapoint: the one unit of data every source emits and every sink
//! consumes.
//!
//! A datapoint names its series (domain UUID, domain name, dotted metric
//! name), carries a unix timestamp in seconds and an `f64` value. Sources
//! hand datapoints to the pipeline in batches, one batch per poll, so a sink
//! sees every value of one instant together and can write it in one go.

use std::sync::Arc;

use serde::Serialize;

/// One value of one series at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Datapoint {
    /// Unix time in seconds, with sub-second precision, when the value was
    /// sampled (the middle of the call that read it).
    pub ts: f64,
    /// The domain's UUID: its identity, stable across renames.
    pub uuid: Arc<str>,
    /// The domain's name at the time of the sample: a label only.
    pub domain: Arc<str>,
    /// Dotted metric name with its unit, e.g. `vcpu.0.delay_percent`.
    pub metric: String,
    /// The value, in the unit the metric name gives.
    pub value: f64,
}

/// The datapoints of one poll, in the order they were derived.
pub type Batch = Vec<Datapoint>;
