//! The run-queue check of the scale bench: the agent's per-second
//! run-queue sums of a few synthetic vCPU threads against the kernel's
//! own total (`/proc/PID/task/TID/schedstat`, field 2, ns).
//!
//! # Alignment
//! The agent reads each thread's counters once a second and reports the
//! difference to its previous read: the point read at instant `r_i`
//! covers `(r_{i-1}, r_i]`. So the points `a+1 ..= b` of a series sum to
//! the kernel's `S(r_b) - S(r_a)`, where `S` is schedstat's total; point
//! `a` itself covers the second before `r_a` and is left out.
//!
//! Carbon gives only `floor(r_i)`. The read lies in
//! `[ts_i, min(arrival_i, ts_i + 1)]`: not before its second, and not
//! after its line reached the bench. The arrival alone is a poor estimate:
//! the Carbon sink sends in batches, so a line can arrive most of a second
//! after its read (a first version of this check, which took each point's
//! arrival, scattered by ±1-3% over 88 s). But the agent reads on a fixed
//! interval, so the read's phase in its second, `r_i - ts_i`, hardly moves
//! from one second to the next, and its best bound is the smallest
//! `arrival_j - ts_j` among the neighbouring points (within
//! [`PHASE_NEIGHBOURS`]): the line that left with the least delay. The
//! kernel's total is taken at those estimated reads, interpolated between
//! schedstat samples taken every [`SAMPLE_EVERY`] with the unix time. The
//! bracket, the smallest and largest totals the bounds of the two reads
//! allow, is printed too, with how far the agent's sum lies outside it
//! (as the README's accuracy table does); it holds whatever the phase
//! does. The check is the estimate within [`TOLERANCE_PERCENT`]. Over
//! [`super::DETAIL_MIN_WINDOW_S`] or more even a whole second of
//! misalignment at both ends would stay under 2%.
//!
//! A missing second (two consecutive points more than a second apart)
//! would make the agent's sum short; such gaps are counted and printed.

use std::time::Duration;

/// How often the sampled threads' schedstat is read.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// How many points either side of a read its phase estimate looks at:
/// 30 s, so a slow drift of the agent's read phase is followed, and
/// enough batches that one of them left the agent with little delay.
pub const PHASE_NEIGHBOURS: usize = 30;

/// The goal: the agent's sum within 2% of the kernel's.
pub const TOLERANCE_PERCENT: f64 = 2.0;

/// One sampled thread.
pub struct Thread {
    /// `<domain>.vcpu.<n>.runq_latency_us.sum`, the Carbon series (after
    /// `<prefix>.<host>.`).
    pub series: String,
    /// The process.
    pub pid: u32,
    /// The thread.
    pub tid: u32,
    /// (unix time, schedstat field 2 in ns) every [`SAMPLE_EVERY`].
    pub samples: Vec<(f64, u64)>,
}

impl Thread {
    /// Reads schedstat now and keeps it with the unix time.
    pub fn sample(&mut self) {
        let t = super::carbon::unix_now();
        if let Ok(s) =
            std::fs::read_to_string(format!("/proc/{}/task/{}/schedstat", self.pid, self.tid))
            && let Some(ns) = s.split_whitespace().nth(1).and_then(|v| v.parse().ok())
        {
            self.samples.push((t, ns));
        }
    }
}

/// The kernel's total at unix time `t`, interpolated between the samples
/// around it; `None` outside the samples.
pub fn interpolate(samples: &[(f64, u64)], t: f64) -> Option<f64> {
    let i = samples.partition_point(|&(st, _)| st <= t);
    if i == 0 || i == samples.len() && samples[i - 1].0 < t {
        return None;
    }
    let (t0, v0) = samples[i - 1];
    if t0 == t || i == samples.len() {
        return Some(v0 as f64);
    }
    let (t1, v1) = samples[i];
    Some(v0 as f64 + (v1 as f64 - v0 as f64) * (t - t0) / (t1 - t0))
}

/// One thread's comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The agent's sum over the window, µs.
    pub agent_us: f64,
    /// The kernel's total over the window at the estimated reads, µs.
    pub kernel_us: f64,
    /// The smallest and largest kernel total the reads allow, µs.
    pub bracket_us: (f64, f64),
    /// Seconds from the first read to the last (estimated).
    pub window_s: f64,
    /// The estimated phase of the first read in its second, s.
    pub phase_s: f64,
    /// Points summed.
    pub points: usize,
    /// Consecutive points more than one second apart within the window.
    pub gaps: usize,
}

impl Check {
    /// The agent's sum against the estimate, in percent of the estimate.
    pub fn diff_percent(&self) -> f64 {
        (self.agent_us - self.kernel_us) / self.kernel_us * 100.0
    }

    /// How far the agent's sum lies outside the bracket, in percent of
    /// the estimate (0 inside).
    pub fn outside_percent(&self) -> f64 {
        let (lo, hi) = self.bracket_us;
        let off = if self.agent_us < lo {
            lo - self.agent_us
        } else if self.agent_us > hi {
            self.agent_us - hi
        } else {
            0.0
        };
        off / self.kernel_us * 100.0
    }

    /// Whether the estimate agrees within [`TOLERANCE_PERCENT`].
    pub fn ok(&self) -> bool {
        self.kernel_us > 0.0 && self.diff_percent().abs() <= TOLERANCE_PERCENT && self.gaps == 0
    }
}

/// Compares a series' points `(ts, arrival, value µs)`, in arrival order,
/// with the kernel's `samples`, over the longest run of points whose reads
/// lie within the samples and start no earlier than `from` (unix time).
pub fn compare(points: &[(i64, f64, f64)], samples: &[(f64, u64)], from: f64) -> Option<Check> {
    let (first, last) = (samples.first()?.0, samples.last()?.0);
    // Earliest and latest instant of each point's read.
    let lo = |p: &(i64, f64, f64)| p.0 as f64;
    let hi = |p: &(i64, f64, f64)| p.1.min(p.0 as f64 + 1.0);
    let a = points
        .iter()
        .position(|p| lo(p) >= first.max(from) && hi(p) <= last)?;
    let b = points
        .iter()
        .rposition(|p| lo(p) >= first && hi(p) <= last)?;
    if b <= a {
        return None;
    }
    let s = |t: f64| interpolate(samples, t);
    let (pa, pb) = (&points[a], &points[b]);
    let kernel_ns = s(pb.0 as f64 + phase(points, b))? - s(pa.0 as f64 + phase(points, a))?;
    let min_ns = s(lo(pb))? - s(hi(pa))?;
    let max_ns = s(hi(pb))? - s(lo(pa))?;
    let agent_us: f64 = points[a + 1..=b].iter().map(|p| p.2).sum();
    let gaps = points[a..=b]
        .windows(2)
        .filter(|w| w[1].0 - w[0].0 > 1)
        .count();
    Some(Check {
        agent_us,
        kernel_us: kernel_ns / 1000.0,
        bracket_us: (min_ns / 1000.0, max_ns / 1000.0),
        window_s: (pb.0 - pa.0) as f64,
        phase_s: phase(points, a),
        points: b - a,
        gaps,
    })
}

/// The estimated phase of point `i`'s read in its second: the least
/// `arrival - ts` of the points within [`PHASE_NEIGHBOURS`], in `[0, 1]`.
fn phase(points: &[(i64, f64, f64)], i: usize) -> f64 {
    let from = i.saturating_sub(PHASE_NEIGHBOURS);
    let to = (i + PHASE_NEIGHBOURS + 1).min(points.len());
    points[from..to]
        .iter()
        .map(|p| (p.1 - p.0 as f64).clamp(0.0, 1.0))
        .fold(1.0, f64::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's total grows by 10 µs a second from 0 at t = 100 s,
    /// sampled every 100 ms from 100.0 to 104.0.
    fn kernel() -> Vec<(f64, u64)> {
        (0..=40)
            .map(|i| (100.0 + f64::from(i) * 0.1, i as u64 * 1_000))
            .collect()
    }

    #[test]
    fn interpolates_between_samples_and_not_outside() {
        let k = kernel();
        assert_eq!(interpolate(&k, 100.0), Some(0.0));
        assert!((interpolate(&k, 100.55).unwrap() - 5_500.0).abs() < 1e-6);
        assert_eq!(interpolate(&k, 104.0), Some(40_000.0));
        assert_eq!(interpolate(&k, 99.9), None);
        assert_eq!(interpolate(&k, 104.1), None);
    }

    /// By hand: reads at 100.5, 101.5, 102.5 (lines arrive at once),
    /// reported with ts 100, 101, 102. The kernel's total is 5,000 ns at
    /// 100.5 and 25,000 ns at 102.5: 20 µs between the first and the last
    /// read. The agent's points at 101 and 102 each cover one second,
    /// 10 µs each; the point at 100 covers the second before 100.5 and is
    /// not summed. The bracket: reads anywhere in [ts, arrival]: from
    /// S(102) - S(100.5) = 15 µs to S(102.5) - S(100) = 25 µs.
    #[test]
    fn sums_the_points_after_the_first_read_by_hand() {
        let points = [(100, 100.5, 999.0), (101, 101.5, 10.0), (102, 102.5, 10.0)];
        let c = compare(&points, &kernel(), 0.0).unwrap();
        assert!((c.agent_us - 20.0).abs() < 1e-9);
        assert!((c.kernel_us - 20.0).abs() < 1e-9);
        assert!((c.bracket_us.0 - 15.0).abs() < 1e-9);
        assert!((c.bracket_us.1 - 25.0).abs() < 1e-9);
        assert_eq!((c.points, c.gaps), (2, 0));
        assert!(c.ok());
        assert_eq!(c.outside_percent(), 0.0);
    }

    /// Reads at x.5 again, but the lines left in batches, 0.9, 0.0 and
    /// 0.7 s after their reads: the phase is the least delay, 0.5, for
    /// every point, so the kernel's total is still taken from 100.5 to
    /// 102.5. Each point's own arrival would have put the first read at
    /// 101.0 and the last at 102.5 + 0.7.
    #[test]
    fn the_phase_is_the_least_delay_of_the_neighbours() {
        let points = [(100, 101.4, 0.0), (101, 101.5, 10.0), (102, 103.2, 10.0)];
        assert_eq!(phase(&points, 0), 0.5);
        assert_eq!(phase(&points, 2), 0.5);
        let c = compare(&points, &kernel(), 0.0).unwrap();
        assert!((c.kernel_us - 20.0).abs() < 1e-9);
        assert!(c.ok());
    }

    #[test]
    fn a_missing_second_is_a_gap() {
        let points = [(100, 100.5, 0.0), (102, 102.5, 20.0)];
        let c = compare(&points, &kernel(), 0.0).unwrap();
        assert!((c.kernel_us - 20.0).abs() < 1e-9);
        assert_eq!(c.gaps, 1);
        assert!(!c.ok());
    }

    #[test]
    fn a_short_agent_sum_is_outside_and_fails() {
        let points = [(100, 100.5, 0.0), (101, 101.5, 10.0), (102, 102.5, 4.0)];
        let c = compare(&points, &kernel(), 0.0).unwrap();
        assert!((c.diff_percent() + 30.0).abs() < 1e-9);
        assert!((c.outside_percent() - 5.0).abs() < 1e-9);
        assert!(!c.ok());
    }
}
