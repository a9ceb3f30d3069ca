//! Where datapoints go.

pub mod json;
