//! Turning libvirt's cumulative counters into per-interval values.
//!
//! libvirt reports monotonically growing totals (nanoseconds of CPU,
//! bytes, requests). Between two samples of the same domain a total can only
//! shrink when the counter restarted: the domain or QEMU was restarted, or a
//! device was unplugged and plugged back. Such an interval yields no value
//! rather than a negative or huge spike; the next interval is normal again.

/// The growth of a counter between two samples, or `None` when either side
/// is missing or the counter went backwards (a reset).
pub(crate) fn delta(prev: Option<u64>, cur: Option<u64>) -> Option<u64> {
    let (prev, cur) = (prev?, cur?);
    cur.checked_sub(prev)
}

/// The growth of a counter per second over `dt_s` seconds.
pub(crate) fn rate(prev: Option<u64>, cur: Option<u64>, dt_s: f64) -> Option<f64> {
    if dt_s <= 0.0 {
        return None;
    }
    delta(prev, cur).map(|d| d as f64 / dt_s)
}

/// The growth of a nanosecond counter as a percentage of `dt_s` seconds of
/// one host CPU (100 means one CPU fully used for the whole interval).
pub(crate) fn ns_percent(prev: Option<u64>, cur: Option<u64>, dt_s: f64) -> Option<f64> {
    rate(prev, cur, dt_s).map(|ns_per_s| ns_per_s / 1e9 * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_handles_growth_reset_and_missing() {
        assert_eq!(delta(Some(10), Some(15)), Some(5));
        assert_eq!(delta(Some(10), Some(10)), Some(0));
        assert_eq!(delta(Some(10), Some(3)), None, "reset gives no value");
        assert_eq!(delta(None, Some(3)), None);
        assert_eq!(delta(Some(3), None), None);
    }

    #[test]
    fn rate_and_percent_scale_by_interval() {
        assert_eq!(rate(Some(0), Some(500), 0.5), Some(1000.0));
        assert_eq!(rate(Some(0), Some(500), 0.0), None);
        // 250 ms of CPU in 0.5 s is half of one CPU.
        let pct = ns_percent(Some(1_000), Some(1_000 + 250_000_000), 0.5).unwrap();
        assert!((pct - 50.0).abs() < 1e-9, "{pct}");
        assert_eq!(ns_percent(Some(5), Some(4), 1.0), None);
    }
}
