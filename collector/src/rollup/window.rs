//! Sliding windows over per-second histograms: the last 1, 5 and 15
//! minutes of one series, for percentile queries such as "p99 over 5 min".
//!
//! # Tiers
//! Keeping 900 per-second histograms per series would cost too much, so
//! the window is tiered: 60 one-second histograms, 30 ten-second
//! histograms and 15 one-minute histograms (105 in all), every one
//! [`Frozen`] (3 to 12 bits per non-empty bucket). A query is answered
//! from the finest tier that covers it: the bucket being filled plus as
//! many closed buckets as it takes, so the 1-minute window covers exactly
//! the last 60 s, the 5-minute window 5 min to 5 min 10 s and the
//! 15-minute window 15 to 16 min.
//!
//! # No open buckets
//! A coarse tier keeps no bucket being filled: all tiers start together
//! and their steps divide each other, so the seconds since a tier last
//! closed are exactly the finer tiers' newest closed buckets (the open
//! minute of 35 s is the three newest 10 s buckets and the five newest
//! seconds). A coarse bucket is built when it closes, by merging those
//! finer buckets; queries merge them as the open part. This costs CPU
//! (decoding ten seconds to build a 10 s bucket) instead of memory (open
//! 10 s and 1 min buckets would take 13 KiB a series). Only frozen
//! histograms are kept, and a quiet series (empty seconds) holds nothing
//! but its rings. Each series has a phase ([`Windows::with_phase`]) so
//! that the rollup's thousands of series do not all build their coarse
//! buckets in the same second.

use std::collections::VecDeque;
use std::time::Duration;

use super::histogram::{Frozen, LatencyHistogram, Merger};

/// One tier: a ring of closed buckets of `step` seconds.
struct Tier {
    /// Seconds per bucket; a multiple of the finer tier's.
    step: u64,
    /// How many closed buckets are kept: the tier's span is `step * len`.
    len: usize,
    /// Closed buckets, oldest first.
    closed: VecDeque<Frozen>,
}

impl Tier {
    fn new(step: u64, len: usize) -> Tier {
        Tier {
            step,
            len,
            closed: VecDeque::new(),
        }
    }

    fn push(&mut self, bucket: Frozen) {
        if self.closed.len() == self.len {
            self.closed.pop_front();
        }
        self.closed.push_back(bucket);
    }

    fn span(&self) -> Duration {
        Duration::from_secs(self.step * self.len as u64)
    }
}

/// Distinct phases a series' coarse buckets can close at: the coarsest
/// step, in seconds.
pub(crate) const PHASES: u64 = 60;

/// The sliding windows of one series.
pub(crate) struct Windows {
    /// Tiers from finest to coarsest.
    tiers: [Tier; 3],
    /// Seconds pushed since the series started, plus its phase: where
    /// each tier stands in the bucket it is filling.
    seconds: u64,
}

impl Default for Windows {
    fn default() -> Self {
        Windows::with_phase(0)
    }
}

impl Windows {
    /// Windows whose coarse buckets close `phase` seconds (below
    /// [`PHASES`]) earlier than those of a series started at the same time
    /// with phase 0: the series starts as if `phase` empty seconds had
    /// passed. Building a coarse bucket costs tens of microseconds, so the
    /// rollup spreads its thousands of series over the minute. The first
    /// 10 s and 1 min buckets are shorter by the phase, so a young series
    /// covers up to `phase` seconds less than a window asks.
    pub(crate) fn with_phase(phase: u64) -> Windows {
        Windows {
            tiers: [Tier::new(1, 60), Tier::new(10, 30), Tier::new(60, 15)],
            seconds: phase % PHASES,
        }
    }

    /// Adds the histogram of the second that just ended; `scratch` builds
    /// the coarse buckets that close with it.
    pub(crate) fn push_second(&mut self, second: &LatencyHistogram, scratch: &mut Merger) {
        self.seconds += 1;
        self.tiers[0].push(scratch.freeze(second));
        for i in 1..self.tiers.len() {
            let (finer, tier) = self.tiers.split_at_mut(i);
            let (finer, tier) = (&finer[i - 1], &mut tier[0]);
            if !self.seconds.is_multiple_of(tier.step) {
                // Coarser tiers close at multiples of this one's step.
                break;
            }
            let parts = (tier.step / finer.step) as usize;
            for h in finer.closed.iter().rev().take(parts) {
                scratch.add_frozen(h);
            }
            tier.push(scratch.finish_frozen());
        }
    }

    /// Adds the last `window` (rounded up to whole buckets of the tier
    /// that answers) to `into`. Returns `false`, adding nothing, if
    /// `window` is longer than the coarsest tier covers (15 min). Covers
    /// less time while the series is young.
    pub(crate) fn add_to(&self, window: Duration, into: &mut Merger) -> bool {
        let Some(t) = self.tiers.iter().position(|t| window <= t.span()) else {
            return false;
        };
        // The bucket being filled counts too, so a young series (or one
        // second after a bucket closed) is never answered from nothing: it
        // is the finer tiers' newest closed buckets.
        let open_secs = self.seconds % self.tiers[t].step;
        let mut rest = open_secs;
        for finer in self.tiers[..t].iter().rev() {
            let parts = (rest / finer.step) as usize;
            for h in finer.closed.iter().rev().take(parts) {
                into.add_frozen(h);
            }
            rest %= finer.step;
        }
        // Closed buckets are added, newest first, until the window is
        // covered: at most `step` seconds more than asked.
        let tier = &self.tiers[t];
        let mut covered = open_secs;
        for h in tier.closed.iter().rev() {
            if covered >= window.as_secs() {
                break;
            }
            into.add_frozen(h);
            covered += tier.step;
        }
        true
    }

    /// Seconds pushed plus the phase.
    #[cfg(test)]
    pub(crate) fn position(&self) -> u64 {
        self.seconds
    }

    /// The merged histogram of the last `window`; see [`Windows::add_to`].
    #[cfg(test)]
    pub(crate) fn merged(&self, window: Duration) -> Option<LatencyHistogram> {
        let mut m = Merger::default();
        self.add_to(window, &mut m).then(|| m.finish())
    }

    /// Heap bytes held: the rings and every frozen bucket, allocator
    /// overhead included.
    pub(crate) fn heap_bytes(&self) -> usize {
        use super::histogram::ALLOC_OVERHEAD_BYTES;
        self.tiers
            .iter()
            .map(|t| {
                let ring = match t.closed.capacity() {
                    0 => 0,
                    n => n * size_of::<Frozen>() + ALLOC_OVERHEAD_BYTES,
                };
                ring + t.closed.iter().map(Frozen::heap_bytes).sum::<usize>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second_with(value_ns: u64, n: u64) -> LatencyHistogram {
        let mut h = LatencyHistogram::default();
        h.record(value_ns, n);
        h
    }

    /// Pushes `h` with a fresh scratch merger.
    fn push(w: &mut Windows, h: &LatencyHistogram) {
        w.push_second(h, &mut Merger::default());
    }

    #[test]
    fn windows_cover_the_right_seconds() {
        let mut w = Windows::default();
        // 15 minutes: the first 10 minutes at 1 ms, the last 5 at 10 ms.
        for s in 0..900 {
            let v = if s < 600 { 1_000_000 } else { 10_000_000 };
            push(&mut w, &second_with(v, 1));
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
            push(&mut w, &second_with(5_000, 2));
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
            push(&mut w, &second_with(5_000, 1));
        }
        assert_eq!(w.merged(Duration::from_secs(60)).unwrap().len(), 30);
        assert_eq!(w.merged(Duration::from_secs(900)).unwrap().len(), 30);
        // 25 s asked at the 10 s tier: open 5 s + two closed buckets = 25 s.
        let mut w = Windows::default();
        for s in 0..65 {
            push(&mut w, &second_with(1_000 + s, 1));
        }
        assert_eq!(
            w.merged(Duration::from_secs(61)).unwrap().len(),
            65,
            "61 s: open 5 s + 6 closed 10 s buckets"
        );
    }

    /// Every window, at every phase of the coarse tiers and whatever the
    /// series' own phase, holds exactly the seconds the tiers promise: the
    /// open part rebuilt from finer tiers neither loses nor repeats a
    /// second.
    #[test]
    fn open_buckets_rebuilt_from_finer_tiers_are_exact() {
        let mut scratch = Merger::default();
        for phase in [0, 7, 59] {
            let mut w = Windows::with_phase(phase);
            // Second s holds s + 1 values, so a window's count names its
            // seconds.
            for s in 0..1_000u64 {
                w.push_second(&second_with(1_000 + s, s + 1), &mut scratch);
                let pushed = s + 1;
                for (window, step) in [(60u64, 1u64), (300, 10), (900, 60)] {
                    // The open bucket plus closed buckets until covered,
                    // bounded by what was pushed.
                    let open = (pushed + phase) % step;
                    let closed = window.saturating_sub(open).div_ceil(step) * step;
                    let first = pushed.saturating_sub(open + closed);
                    let want: u64 = (first..pushed).map(|s| s + 1).sum();
                    let got = w.merged(Duration::from_secs(window)).unwrap().len();
                    assert_eq!(got, want, "phase {phase}, {window} s after {pushed} s");
                }
            }
        }
    }

    #[test]
    fn quiet_series_hold_no_buckets() {
        let mut w = Windows::default();
        for _ in 0..1_000 {
            push(&mut w, &LatencyHistogram::default());
        }
        // Only the rings' slots.
        assert!(w.heap_bytes() < 105 * 16 + 3 * 64, "{}", w.heap_bytes());
    }
}
