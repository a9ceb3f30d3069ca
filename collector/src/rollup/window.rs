//! Sliding windows over per-second histograms: the last 1, 5 and 15
//! minutes of one series, for percentile queries such as "p99 over 5 min".
//!
//! Keeping 900 per-second histograms per series would cost megabytes per
//! vCPU, so the window is tiered: 60 one-second histograms, 30 ten-second
//! histograms and 15 one-minute histograms (105 in all). A query is
//! answered from the finest tier that covers it: the bucket being filled
//! plus as many closed buckets as it takes, so the 5-minute window covers
//! 5 min to 5 min 10 s and the 15-minute window 15 to 16 min.

use std::collections::VecDeque;
use std::time::Duration;

use super::histogram::{self, LatencyHistogram};

/// One tier: a ring of closed buckets of `step` seconds plus the bucket
/// being filled.
struct Tier {
    /// Seconds per bucket.
    step: u32,
    /// How many closed buckets are kept.
    len: usize,
    /// Closed buckets, oldest first.
    closed: VecDeque<LatencyHistogram>,
    /// The bucket being filled and how many seconds it holds.
    open: LatencyHistogram,
    open_secs: u32,
}

impl Tier {
    fn new(step: u32, len: usize) -> Tier {
        Tier {
            step,
            len,
            closed: VecDeque::with_capacity(len),
            open: histogram::new(),
            open_secs: 0,
        }
    }

    fn push_second(&mut self, second: &LatencyHistogram) {
        histogram::merge(&mut self.open, second);
        self.open_secs += 1;
        if self.open_secs == self.step {
            let full = if self.closed.len() == self.len {
                // Reuse the oldest bucket's memory for the next open one.
                let mut oldest = self.closed.pop_front().expect("ring is full");
                oldest.reset();
                std::mem::replace(&mut self.open, oldest)
            } else {
                std::mem::replace(&mut self.open, histogram::new())
            };
            self.closed.push_back(full);
            self.open_secs = 0;
        }
    }

    fn span(&self) -> Duration {
        Duration::from_secs(u64::from(self.step) * self.len as u64)
    }
}

/// The sliding windows of one series.
pub(crate) struct Windows {
    /// Tiers from finest to coarsest.
    tiers: [Tier; 3],
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            tiers: [Tier::new(1, 60), Tier::new(10, 30), Tier::new(60, 15)],
        }
    }
}

impl Windows {
    /// Adds the histogram of the second that just ended.
    pub(crate) fn push_second(&mut self, second: &LatencyHistogram) {
        for tier in &mut self.tiers {
            tier.push_second(second);
        }
    }

    /// The merged histogram of the last `window` (rounded up to whole
    /// buckets of the tier that answers), or `None` if `window` is longer
    /// than the coarsest tier covers (15 min). Covers less time while the series is young.
    pub(crate) fn merged(&self, window: Duration) -> Option<LatencyHistogram> {
        let tier = self.tiers.iter().find(|t| window <= t.span())?;
        // The bucket being filled counts too, so a young series (or one
        // second after a bucket closed) is never answered from nothing;
        // closed buckets are added, newest first, until the window is
        // covered: at most `step` seconds more than asked.
        let mut out = tier.open.clone();
        let mut covered = u64::from(tier.open_secs);
        for h in tier.closed.iter().rev() {
            if covered >= window.as_secs() {
                break;
            }
            histogram::merge(&mut out, h);
            covered += u64::from(tier.step);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second_with(value_ns: u64, n: u64) -> LatencyHistogram {
        let mut h = histogram::new();
        histogram::record(&mut h, value_ns, n);
        h
    }

    #[test]
    fn windows_cover_the_right_seconds() {
        let mut w = Windows::default();
        // 15 minutes: the first 10 minutes at 1 ms, the last 5 at 10 ms.
        for s in 0..900 {
            let v = if s < 600 { 1_000_000 } else { 10_000_000 };
            w.push_second(&second_with(v, 1));
        }
        let one = w.merged(Duration::from_secs(60)).unwrap();
        assert_eq!(one.len(), 60);
        assert!(one.min() >= 9_900_000, "1 min holds only recent seconds");
        let five = w.merged(Duration::from_secs(300)).unwrap();
        assert_eq!(five.len(), 300);
        assert!(five.min() >= 9_900_000);
        let fifteen = w.merged(Duration::from_secs(900)).unwrap();
        assert_eq!(fifteen.len(), 900);
        let p50 = fifteen.value_at_quantile(0.5);
        assert!(
            p50 < 1_100_000,
            "600 of 900 seconds were at 1 ms: p50 {p50}"
        );
        assert!(w.merged(Duration::from_secs(901)).is_none());
    }

    #[test]
    fn young_series_covers_what_it_has() {
        let mut w = Windows::default();
        for _ in 0..5 {
            w.push_second(&second_with(5_000, 2));
        }
        assert_eq!(w.merged(Duration::from_secs(60)).unwrap().len(), 10);
        assert_eq!(
            w.merged(Duration::from_secs(300)).unwrap().len(),
            10,
            "the open 10 s bucket answers before any closed"
        );
        // 25 s in: the open bucket (5 s) and two closed ones (20 s) cover
        // less than a minute, and all of it is used.
        for _ in 0..20 {
            w.push_second(&second_with(5_000, 1));
        }
        assert_eq!(w.merged(Duration::from_secs(60)).unwrap().len(), 30);
        assert_eq!(w.merged(Duration::from_secs(900)).unwrap().len(), 30);
        // 25 s asked at the 10 s tier: open 5 s + two closed buckets = 25 s.
        let mut w = Windows::default();
        for s in 0..65 {
            w.push_second(&second_with(1_000 + s, 1));
        }
        assert_eq!(
            w.merged(Duration::from_secs(61)).unwrap().len(),
            65,
            "61 s: open 5 s + 6 closed 10 s buckets"
        );
    }
}
