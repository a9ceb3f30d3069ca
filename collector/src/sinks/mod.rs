//! Where datapoints go.

pub mod json;
pub mod query;
