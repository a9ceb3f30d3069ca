//! The window of one gauge series: recent values in fixed-width buckets,
//! for "average / maximum over the last 5 minutes" at a fixed cost per
//! series whatever the poll interval.
//!
//! A window keeps [`BUCKET`]-wide buckets (sum, count, min, max) covering
//! [`MAX_WINDOW_S`] and the newest value with its time. Questions are
//! rounded out to whole buckets. Values that are not finite are ignored; a
//! value older than the newest bucket (a clock step, a late batch) only
//! counts as the last value if it is the newest seen.

use std::collections::VecDeque;
use std::time::Duration;

use hyper_stats_query::MAX_WINDOW_S;

/// Width of one bucket: 5 s keeps 180 buckets per series for the
/// 15-minute window (about 7 KB) while a 1-minute window still has 12.
pub(crate) const BUCKET: Duration = Duration::from_secs(5);

/// Buckets per window: exactly [`MAX_WINDOW_S`] plus the bucket being
/// filled.
pub(crate) const BUCKETS: usize = (MAX_WINDOW_S as usize).div_ceil(BUCKET.as_secs() as usize) + 1;

/// One bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Index of the bucket: unix seconds / [`BUCKET`].
    index: i64,
    sum: f64,
    count: u64,
    min: f64,
    max: f64,
}

/// The recent values of one series.
#[derive(Debug, Default)]
pub(crate) struct GaugeWindow {
    /// Oldest first; at most [`BUCKETS`].
    buckets: VecDeque<Bucket>,
    /// The newest value and its time.
    last: f64,
    last_ts: f64,
}

/// What a window says about the last `window_s` seconds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GaugeSummary {
    /// Values in the window.
    pub(crate) samples: u64,
    /// Their mean, minimum and maximum; `None` without values.
    pub(crate) avg: Option<f64>,
    pub(crate) min: Option<f64>,
    pub(crate) max: Option<f64>,
    /// The newest value, whenever it was seen.
    pub(crate) last: f64,
    /// Seconds since the newest value.
    pub(crate) age_s: f64,
}

impl GaugeWindow {
    /// Adds the value `value` seen at `ts` (unix seconds).
    pub(crate) fn push(&mut self, ts: f64, value: f64) {
        if !value.is_finite() {
            return;
        }
        let index = (ts / BUCKET.as_secs_f64()).floor() as i64;
        match self.buckets.back_mut() {
            Some(b) if b.index == index => {
                b.sum += value;
                b.count += 1;
                b.min = b.min.min(value);
                b.max = b.max.max(value);
            }
            Some(b) if b.index > index => {}
            _ => {
                if self.buckets.len() == BUCKETS {
                    self.buckets.pop_front();
                }
                self.buckets.push_back(Bucket {
                    index,
                    sum: value,
                    count: 1,
                    min: value,
                    max: value,
                });
            }
        }
        if ts >= self.last_ts {
            self.last = value;
            self.last_ts = ts;
        }
    }

    /// The buckets overlapping the `window_s` seconds before `now`.
    pub(crate) fn summary(&self, now: f64, window_s: u32) -> GaugeSummary {
        let from = ((now - f64::from(window_s)) / BUCKET.as_secs_f64()).floor() as i64;
        let (mut sum, mut count) = (0.0, 0u64);
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for b in self.buckets.iter().rev().take_while(|b| b.index >= from) {
            sum += b.sum;
            count += b.count;
            min = min.min(b.min);
            max = max.max(b.max);
        }
        let some = |v: f64| (count > 0).then_some(v);
        GaugeSummary {
            samples: count,
            avg: some(sum / count.max(1) as f64),
            min: some(min),
            max: some(max),
            last: self.last,
            age_s: (now - self.last_ts).max(0.0),
        }
    }

    /// How many buckets are kept (bounded by [`BUCKETS`]).
    #[cfg(test)]
    pub(crate) fn buckets(&self) -> usize {
        self.buckets.len()
    }
}
