//! The latency histogram every rollup uses: an HDR histogram of nanoseconds
//! with 1% relative error, bounded, clamping outliers instead of failing.
//!
//! The bounds match the kernel side: its log-linear buckets carry at most
//! 1% error, so two significant digits here lose nothing it measured.

use hdrhistogram::Histogram;

/// The largest latency tracked exactly: 10 s. A vCPU that waits longer
/// than this for a host CPU is recorded as 10 s (and counted as clamped);
/// past it the distinction no longer changes what an operator does.
pub(crate) const MAX_LATENCY_NS: u64 = 10_000_000_000;

/// Significant decimal digits kept: 2 means at most 1% relative error,
/// matching the kernel's buckets, at a tenth of the memory of 3 digits.
pub(crate) const SIGNIFICANT_DIGITS: u8 = 2;

/// A latency histogram in nanoseconds.
pub(crate) type LatencyHistogram = Histogram<u64>;

/// A new, empty latency histogram.
pub(crate) fn new() -> LatencyHistogram {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, SIGNIFICANT_DIGITS)
        .expect("static histogram bounds are valid")
}

/// Records `count` values of `value_ns`, clamped into the tracked range.
/// Returns whether the value had to be clamped.
pub(crate) fn record(h: &mut LatencyHistogram, value_ns: u64, count: u64) -> bool {
    let clamped = value_ns.clamp(1, MAX_LATENCY_NS);
    h.record_n(clamped, count)
        .expect("clamped value is in range");
    clamped != value_ns && value_ns != 0
}

/// Adds `from` into `into`; both come from [`new`], so this cannot fail.
pub(crate) fn merge(into: &mut LatencyHistogram, from: &LatencyHistogram) {
    into.add(from).expect("histograms share bounds");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_percent_error_and_clamping() {
        let mut h = new();
        assert!(!record(&mut h, 123_456, 10));
        let p50 = h.value_at_quantile(0.5) as f64;
        assert!((p50 - 123_456.0).abs() / 123_456.0 <= 0.01, "{p50}");
        assert!(record(&mut h, MAX_LATENCY_NS * 3, 1));
        assert_eq!(h.len(), 11);
        assert!(h.max() <= MAX_LATENCY_NS + MAX_LATENCY_NS / 100);
    }
}
