//! Where datapoints go.

pub mod carbon;
pub mod json;
pub mod query;
