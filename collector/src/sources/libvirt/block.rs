//! The `block` group: per disk (by target name, e.g. `vda`), requests and
//! bytes per second and mean latency per request for reads, writes and
//! flushes, plus the allocation, capacity and physical size in bytes.
//!
//! Mean latency is the growth of the total time spent in requests divided by
//! the number of requests completed in the interval; an interval with no
//! requests has no latency, so it yields no datapoint rather than a zero.

use super::counter::{delta, rate};
use super::derive::{Derived, Interval, devices, index_of};

/// The request kinds: (libvirt prefix, metric component).
const KINDS: [(&str, &str); 3] = [("rd", "rd"), ("wr", "wr"), ("fl", "flush")];

/// Size gauges in bytes: (libvirt suffix, metric suffix).
const SIZES: [(&str, &str); 3] = [
    ("allocation", "allocation_bytes"),
    ("capacity", "capacity_bytes"),
    ("physical", "physical_bytes"),
];

/// Derives `block.<dev>.*` for every disk.
pub(crate) fn derive(i: &Interval<'_>, out: &mut Derived) {
    let Interval { prev, cur, dt_s } = *i;
    for dev in devices(cur, "block") {
        let c = |suffix: &str| cur.u64(&format!("block.{}.{suffix}", dev.index));
        for (suffix, metric) in SIZES {
            out.put(
                format!("block.{}.{metric}", dev.name),
                c(suffix).map(|v| v as f64),
            );
        }
        let Some(prev) = prev else { continue };
        let Some(pi) = index_of(prev, "block", &dev.name) else {
            continue;
        };
        let p = |suffix: &str| prev.u64(&format!("block.{pi}.{suffix}"));
        for (kind, label) in KINDS {
            let reqs = format!("{kind}.reqs");
            let times = format!("{kind}.times");
            out.put(
                format!("block.{}.{label}.reqs_per_s", dev.name),
                rate(p(&reqs), c(&reqs), dt_s),
            );
            if kind != "fl" {
                let bytes = format!("{kind}.bytes");
                out.put(
                    format!("block.{}.{label}.bytes_per_s", dev.name),
                    rate(p(&bytes), c(&bytes), dt_s),
                );
            }
            let latency_ms = match (delta(p(&reqs), c(&reqs)), delta(p(&times), c(&times))) {
                (Some(n), Some(ns)) if n > 0 => Some(ns as f64 / n as f64 / 1e6),
                _ => None,
            };
            out.put(
                format!("block.{}.{label}.latency_mean_ms", dev.name),
                latency_ms,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::derive::testutil::{derived, get, has, record};
    use super::*;

    #[test]
    fn rates_and_latency_matched_by_device_name() {
        // Between the samples a cdrom was plugged in front of vda, shifting
        // its index from 0 to 1.
        let prev = record(
            &[
                ("block.count", 1),
                ("block.0.wr.reqs", 100),
                ("block.0.wr.bytes", 4096),
                ("block.0.wr.times", 1_000_000),
                ("block.0.rd.reqs", 7),
            ],
            &[("block.0.name", "vda")],
        );
        let cur = record(
            &[
                ("block.count", 2),
                ("block.1.wr.reqs", 110),
                ("block.1.wr.bytes", 4096 + 40960),
                ("block.1.wr.times", 1_000_000 + 20_000_000),
                ("block.1.rd.reqs", 7),
                ("block.1.capacity", 67108864),
            ],
            &[("block.0.name", "sda"), ("block.1.name", "vda")],
        );
        let out = derived(derive, Some(&prev), &cur, 1.0);
        assert_eq!(get(&out, "block.vda.wr.reqs_per_s"), 10.0);
        assert_eq!(get(&out, "block.vda.wr.bytes_per_s"), 40960.0);
        assert!((get(&out, "block.vda.wr.latency_mean_ms") - 2.0).abs() < 1e-9);
        assert_eq!(get(&out, "block.vda.rd.reqs_per_s"), 0.0);
        assert!(
            !has(&out, "block.vda.rd.latency_mean_ms"),
            "no reads, no latency"
        );
        assert_eq!(get(&out, "block.vda.capacity_bytes"), 67108864.0);
        assert!(
            !has(&out, "block.sda.wr.reqs_per_s"),
            "new device has no rate yet"
        );
    }
}
