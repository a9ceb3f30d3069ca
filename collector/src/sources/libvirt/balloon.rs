//! The `balloon` group: guest memory as the balloon driver reports it,
//! in bytes (libvirt reports KiB), and the guest's page faults per second.
//!
//! The guest fills most of these fields only when its balloon driver has a
//! stats period; absent fields simply yield no datapoint.

use super::counter::rate;
use super::derive::{Derived, Interval};

/// Gauges in KiB, published in bytes: (libvirt field, metric name).
const SIZES_KIB: [(&str, &str); 8] = [
    ("balloon.current", "balloon.current_bytes"),
    ("balloon.maximum", "balloon.maximum_bytes"),
    ("balloon.available", "balloon.available_bytes"),
    ("balloon.usable", "balloon.usable_bytes"),
    ("balloon.unused", "balloon.unused_bytes"),
    ("balloon.rss", "balloon.rss_bytes"),
    ("balloon.disk_caches", "balloon.disk_caches_bytes"),
    ("balloon.swap_in", "balloon.swap_in_bytes"),
];

/// Counters, published per second: (libvirt field, metric name).
const COUNTERS: [(&str, &str); 2] = [
    ("balloon.major_fault", "balloon.major_faults_per_s"),
    ("balloon.minor_fault", "balloon.minor_faults_per_s"),
];

/// Derives the `balloon.*` values.
pub(crate) fn derive(i: &Interval<'_>, out: &mut Derived) {
    let Interval { prev, cur, dt_s } = *i;
    for (field, metric) in SIZES_KIB {
        out.put(metric, cur.u64(field).map(|kib| kib as f64 * 1024.0));
    }
    let Some(prev) = prev else { return };
    for (field, metric) in COUNTERS {
        out.put(metric, rate(prev.u64(field), cur.u64(field), dt_s));
    }
}

#[cfg(test)]
mod tests {
    use super::super::derive::testutil::{derived, get, has, record};
    use super::*;

    #[test]
    fn sizes_in_bytes_and_fault_rates() {
        let prev = record(
            &[("balloon.current", 131072), ("balloon.major_fault", 10)],
            &[],
        );
        let cur = record(
            &[
                ("balloon.current", 131072),
                ("balloon.rss", 1024),
                ("balloon.major_fault", 30),
            ],
            &[],
        );
        let out = derived(derive, Some(&prev), &cur, 2.0);
        assert_eq!(get(&out, "balloon.current_bytes"), 128.0 * 1024.0 * 1024.0);
        assert_eq!(get(&out, "balloon.rss_bytes"), 1024.0 * 1024.0);
        assert_eq!(get(&out, "balloon.major_faults_per_s"), 10.0);
        assert!(!has(&out, "balloon.minor_faults_per_s"));
    }
}
