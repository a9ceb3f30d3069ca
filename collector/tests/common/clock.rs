//! The wall clock as the agent's datapoints carry it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, as unix time in seconds (the unit of [`super::Point::ts`]).
pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}
