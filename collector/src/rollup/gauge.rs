//! The window of one gauge series: recent values in fixed-width buckets,
//! for "average / maximum over the last 5 minutes" at a fixed cost per
//! series whatever the poll interval.
//!
//! # Tiers
//! A window keeps three rings of buckets (sum, count, min, max), each fed
//! every value, like the histogram windows: 5 s buckets for the last
//! minute, 10 s buckets for the last 5 minutes and 1-minute buckets for
//! the last 15 ([`MAX_WINDOW_S`]), plus the newest value with its time. A
//! question is answered from the finest tier that covers it, rounded out
//! to whole buckets of that tier: a window of up to 1 minute covers at
//! most 5 s more than asked, up to 5 minutes at most 10 s more, up to 15
//! minutes at most 1 minute more. Sums, minima and maxima are exact
//! (`f64`, as the values came). Sixty buckets of 32 bytes, 2 KiB per
//! series, where a single ring of 5 s buckets over 15 minutes took 181 of
//! 40 bytes (7 KiB): a host with a thousand vCPUs has about ten gauge
//! series per vCPU.
//!
//! The bucket being filled is kept in the window itself and the closed
//! ones in the rings, so a value touches one place in memory. A domain's
//! windows live in a [`GaugeSet`], which finds a series without comparing
//! names in the usual case (see there).
//!
//! Values that are not finite are ignored; a value older than a tier's
//! newest bucket (a late batch) is left out of that tier, and only counts
//! as the last value if it is the newest seen.

use std::collections::VecDeque;

use hyper_stats_query::MAX_WINDOW_S;

use super::histogram::ALLOC_OVERHEAD_BYTES;

/// The tiers as (bucket width in seconds, longest window they answer in
/// seconds): fine for the 1-minute checks, as coarse as the histogram
/// windows' for the 5- and 15-minute ones.
const TIERS: [(u32, u32); 3] = [(5, 60), (10, 300), (60, MAX_WINDOW_S)];

/// Buckets a tier keeps: its longest window plus the bucket being filled.
const fn tier_len(step_s: u32, span_s: u32) -> usize {
    span_s.div_ceil(step_s) as usize + 1
}

/// Buckets per window, all tiers together.
#[cfg(test)]
pub(crate) const BUCKETS: usize = tier_len(TIERS[0].0, TIERS[0].1)
    + tier_len(TIERS[1].0, TIERS[1].1)
    + tier_len(TIERS[2].0, TIERS[2].1);

/// One bucket: 32 bytes.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Index of the bucket: seconds on the rollup's clock (which starts at
    /// 0 and never goes back) / the tier's width. 32 bits last 680 years
    /// at 5 s.
    index: u32,
    /// Values in the bucket; a 1-minute bucket polled at 10 Hz holds 600.
    count: u32,
    /// Their sum, exact as `f64` adds.
    sum: f64,
    /// Their minimum, as it came.
    min: f64,
    /// Their maximum, as it came.
    max: f64,
}

/// One tier: the bucket being filled and a ring of closed buckets of one
/// width.
#[derive(Debug)]
struct Tier {
    /// Width of a bucket in seconds.
    step_s: u32,
    /// The longest window this tier answers, in seconds.
    span_s: u32,
    /// The bucket being filled (`count` 0 before the first value): kept
    /// inline, so that a value touches the window itself and the ring
    /// only when a bucket closes, every 5 s to 1 min. A host of a thousand
    /// vCPUs pushes ten thousand values a second into windows spread over
    /// 20 MiB, and a cache miss per ring per value cost more than the rest.
    open: Bucket,
    /// Closed buckets, oldest first; at most one less than [`tier_len`]
    /// of `step_s` and `span_s` (the open bucket is the last).
    closed: VecDeque<Bucket>,
}

impl Tier {
    fn push(&mut self, ts: f64, value: f64) {
        let index = (ts / f64::from(self.step_s)).floor() as u32;
        let open = &mut self.open;
        if open.count > 0 && open.index == index {
            open.sum += value;
            open.count = open.count.saturating_add(1);
            open.min = open.min.min(value);
            open.max = open.max.max(value);
            return;
        }
        if open.count > 0 && open.index > index {
            // A late value: its bucket is closed (or never was).
            return;
        }
        if open.count > 0 {
            let len = tier_len(self.step_s, self.span_s) - 1;
            if self.closed.len() == len {
                self.closed.pop_front();
            }
            // The ring never grows past `len`: allocate it once, exactly.
            self.closed.reserve_exact(len - self.closed.len());
            self.closed.push_back(*open);
        }
        *open = Bucket {
            index,
            sum: value,
            count: 1,
            min: value,
            max: value,
        };
    }

    /// The buckets, newest (the open one, if any) first.
    fn newest_first(&self) -> impl Iterator<Item = &Bucket> {
        let open = (self.open.count > 0).then_some(&self.open);
        open.into_iter().chain(self.closed.iter().rev())
    }
}

/// The recent values of one series.
#[derive(Debug)]
pub(crate) struct GaugeWindow {
    /// Finest first.
    tiers: [Tier; 3],
    /// The newest value, for `last` whatever the window.
    last: f64,
    /// Its time on the rollup's clock, for `age_s`.
    last_ts: f64,
}

impl Default for GaugeWindow {
    fn default() -> Self {
        GaugeWindow {
            tiers: TIERS.map(|(step_s, span_s)| Tier {
                step_s,
                span_s,
                open: Bucket {
                    index: 0,
                    count: 0,
                    sum: 0.0,
                    min: 0.0,
                    max: 0.0,
                },
                closed: VecDeque::new(),
            }),
            last: 0.0,
            last_ts: 0.0,
        }
    }
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
    /// Adds the value `value` seen at `ts` (seconds on the rollup's clock).
    pub(crate) fn push(&mut self, ts: f64, value: f64) {
        if !value.is_finite() {
            return;
        }
        for tier in &mut self.tiers {
            tier.push(ts, value);
        }
        if ts >= self.last_ts {
            self.last = value;
            self.last_ts = ts;
        }
    }

    /// The buckets overlapping the `window_s` seconds before `now`, in the
    /// finest tier that covers `window_s`.
    pub(crate) fn summary(&self, now: f64, window_s: u32) -> GaugeSummary {
        let tier = self
            .tiers
            .iter()
            .find(|t| window_s <= t.span_s)
            .unwrap_or(&self.tiers[self.tiers.len() - 1]);
        let from = ((now - f64::from(window_s)) / f64::from(tier.step_s)).floor() as i64;
        let (mut sum, mut count) = (0.0, 0u64);
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for b in tier
            .newest_first()
            .take_while(|b| i64::from(b.index) >= from)
        {
            sum += b.sum;
            count += u64::from(b.count);
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

    /// Heap bytes held by the rings, allocator overhead included.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.tiers
            .iter()
            .map(|t| match t.closed.capacity() {
                0 => 0,
                n => n * size_of::<Bucket>() + ALLOC_OVERHEAD_BYTES,
            })
            .sum()
    }

    /// How many buckets are kept, all tiers (at most [`BUCKETS`]).
    #[cfg(test)]
    pub(crate) fn buckets(&self) -> usize {
        self.tiers.iter().map(|t| t.newest_first().count()).sum()
    }
}

/// A domain's (or the agent's) gauge windows by name: sorted by name, and
/// found without comparing names in the common case.
///
/// Sources send the same series in the same order every poll, so each
/// entry learns which entry was pushed after it (`next`); a push checks
/// that guess with one comparison of equal names and falls back to a
/// binary search. A map keyed by name compared a dozen names sharing
/// their `vcpu.N.` prefix per value, the stage's largest single cost on a
/// host of a thousand vCPUs.
#[derive(Debug, Default)]
pub(crate) struct GaugeSet {
    /// Sorted by name, no name twice.
    entries: Vec<GaugeEntry>,
    /// The entry pushed to last, whose `next` guesses the next push.
    last: usize,
}

/// One series of a [`GaugeSet`].
#[derive(Debug)]
struct GaugeEntry {
    /// The full metric name, e.g. `vcpu.0.wakeups_per_s`.
    name: Box<str>,
    window: GaugeWindow,
    /// The index of the entry pushed after this one last time (a guess:
    /// any index, checked before use).
    next: u32,
}

impl GaugeSet {
    /// Adds `value`, seen at `ts` on the rollup's clock, to the series
    /// `name`, created on first use.
    pub(crate) fn push(&mut self, name: &str, ts: f64, value: f64) {
        let guess = self.entries.get(self.last).map(|e| e.next as usize);
        let i = match guess {
            Some(g) if self.entries.get(g).is_some_and(|e| *e.name == *name) => g,
            _ => {
                let i = self.index_or_insert(name);
                if let Some(e) = self.entries.get_mut(self.last) {
                    e.next = i as u32;
                }
                i
            }
        };
        self.entries[i].window.push(ts, value);
        self.last = i;
    }

    /// The index of `name`, inserted (with an empty window) if missing.
    fn index_or_insert(&mut self, name: &str) -> usize {
        match self.entries.binary_search_by(|e| (*e.name).cmp(name)) {
            Ok(i) => i,
            Err(i) => {
                // The guesses past `i` move with their entries.
                for e in &mut self.entries {
                    if e.next as usize >= i {
                        e.next += 1;
                    }
                }
                if self.last >= i && !self.entries.is_empty() {
                    self.last += 1;
                }
                // Series are added once and kept: no room to spare.
                self.entries.reserve_exact(1);
                self.entries.insert(
                    i,
                    GaugeEntry {
                        name: name.into(),
                        window: GaugeWindow::default(),
                        next: 0,
                    },
                );
                i
            }
        }
    }

    /// The window of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&GaugeWindow> {
        let i = self
            .entries
            .binary_search_by(|e| (*e.name).cmp(name))
            .ok()?;
        Some(&self.entries[i].window)
    }

    /// The series, by ascending name.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &GaugeWindow)> {
        self.entries.iter().map(|e| (&*e.name, &e.window))
    }

    /// The names, ascending.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| &*e.name)
    }

    /// Whether there is no series.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Heap bytes held: the entries, names and rings, allocator overhead
    /// included.
    pub(crate) fn heap_bytes(&self) -> usize {
        let table = match self.entries.capacity() {
            0 => 0,
            n => n * size_of::<GaugeEntry>() + ALLOC_OVERHEAD_BYTES,
        };
        let entries: usize = self
            .entries
            .iter()
            .map(|e| e.name.len() + ALLOC_OVERHEAD_BYTES + e.window.heap_bytes())
            .sum();
        table + entries
    }
}

impl std::ops::Index<&str> for GaugeSet {
    type Output = GaugeWindow;

    /// The window of `name`; panics if there is none.
    fn index(&self, name: &str) -> &GaugeWindow {
        self.get(name)
            .unwrap_or_else(|| panic!("no gauge series {name:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every window answers from whole buckets of its tier, exactly: the
    /// samples, sum, minimum and maximum of the seconds it covers.
    #[test]
    fn tiers_answer_exactly_over_their_buckets() {
        let mut w = GaugeWindow::default();
        // 20 minutes at 1 Hz of distinct, unround values.
        let value = |s: u32| f64::from(s) * 1.37 + (f64::from(s) * 0.7).sin();
        for s in 0..1_200 {
            w.push(f64::from(s), value(s));
        }
        let now = 1_200.0;
        for (window_s, step_s) in [(1, 5), (60, 5), (61, 10), (300, 10), (301, 60), (900, 60)] {
            let from = (f64::from(1_200 - window_s) / f64::from(step_s)).floor() as u32 * step_s;
            let want: Vec<f64> = (from..1_200).map(value).collect();
            let got = w.summary(now, window_s);
            assert_eq!(got.samples, want.len() as u64, "{window_s} s");
            let max = want.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let min = want.iter().copied().fold(f64::INFINITY, f64::min);
            assert_eq!(got.max, Some(max), "{window_s} s");
            assert_eq!(got.min, Some(min), "{window_s} s");
            let avg = want.iter().sum::<f64>() / want.len() as f64;
            assert!(
                (got.avg.unwrap() - avg).abs() <= avg * 1e-12,
                "{window_s} s"
            );
            // At most one bucket of the tier more than asked.
            assert!(got.samples <= u64::from(window_s + step_s), "{window_s} s");
        }
        assert_eq!(w.buckets(), BUCKETS);
        assert_eq!(BUCKETS, 13 + 31 + 16);
        assert_eq!(size_of::<Bucket>(), 32);
        assert!(w.heap_bytes() <= BUCKETS * 32 + 3 * ALLOC_OVERHEAD_BYTES);
    }

    /// Pushes through the guesses give every series exactly the values
    /// a plain map would, whatever the order of arrival, new names in
    /// the middle, and orders that change; names stay sorted.
    #[test]
    fn gauge_set_finds_the_same_series_as_a_map() {
        let mut set = GaugeSet::default();
        let mut want: std::collections::BTreeMap<String, (u64, f64)> = Default::default();
        let mut rng = crate::rollup::histogram::tests::Rng(9);
        let mut names: Vec<String> = (0..12).map(|i| format!("vcpu.{}.g{}", i % 4, i)).collect();
        for second in 0..300u32 {
            if second % 50 == 0 {
                // A new series, and a reshuffled order of arrival.
                names.push(format!("vcpu.{second}.new"));
                for i in (1..names.len()).rev() {
                    names.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
                }
            }
            for name in &names {
                let value = f64::from(second) + rng.unit();
                set.push(name, f64::from(second), value);
                let w = want.entry(name.clone()).or_default();
                w.0 += 1;
                w.1 += value;
            }
        }
        let got: Vec<&str> = set.names().collect();
        let keys: Vec<&str> = want.keys().map(String::as_str).collect();
        assert_eq!(got, keys);
        for (name, (count, sum)) in &want {
            let s = set[name.as_str()].summary(300.0, 900);
            assert_eq!(s.samples, *count, "{name}");
            assert!(
                (s.avg.unwrap() * *count as f64 - sum).abs() < 1e-6,
                "{name}"
            );
        }
        assert!(set.get("vcpu.0.none").is_none());
    }

    #[test]
    fn late_and_non_finite_values() {
        let mut w = GaugeWindow::default();
        w.push(100.0, 1.0);
        w.push(100.2, f64::NAN);
        w.push(100.5, f64::INFINITY);
        w.push(90.0, 7.0);
        let s = w.summary(101.0, 60);
        assert_eq!(s.samples, 1, "a late value stays out of the buckets");
        assert_eq!((s.last, s.age_s), (1.0, 1.0));
        assert_eq!(w.summary(200.0, 60).avg, None);
    }
}
