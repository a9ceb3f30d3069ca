//! The `net` group: per interface (by host-side device name, e.g.
//! `tap-web-1` or `vnet0`), bytes, packets, errors and drops per second in
//! each direction.

use super::counter::rate;
use super::derive::{Derived, Interval, devices, index_of};

/// Counters per direction: (libvirt suffix, metric suffix).
const COUNTERS: [(&str, &str); 4] = [
    ("bytes", "bytes_per_s"),
    ("pkts", "packets_per_s"),
    ("errs", "errors_per_s"),
    ("drop", "drops_per_s"),
];

/// Derives `net.<dev>.{rx,tx}.*` for every interface.
pub(crate) fn derive(i: &Interval<'_>, out: &mut Derived) {
    let Interval { prev, cur, dt_s } = *i;
    let Some(prev) = prev else { return };
    for dev in devices(cur, "net") {
        let Some(pi) = index_of(prev, "net", &dev.name) else {
            continue;
        };
        for dir in ["rx", "tx"] {
            for (suffix, metric) in COUNTERS {
                out.put(
                    format!("net.{}.{dir}.{metric}", dev.name),
                    rate(
                        prev.u64(&format!("net.{pi}.{dir}.{suffix}")),
                        cur.u64(&format!("net.{}.{dir}.{suffix}", dev.index)),
                        dt_s,
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::derive::testutil::{derived, get, record};
    use super::*;

    #[test]
    fn per_direction_rates() {
        let prev = record(
            &[
                ("net.count", 1),
                ("net.0.tx.bytes", 1000),
                ("net.0.rx.drop", 5),
            ],
            &[("net.0.name", "tap.web 1")],
        );
        let cur = record(
            &[
                ("net.count", 1),
                ("net.0.tx.bytes", 3000),
                ("net.0.rx.drop", 6),
            ],
            &[("net.0.name", "tap.web 1")],
        );
        let out = derived(derive, Some(&prev), &cur, 2.0);
        assert_eq!(get(&out, "net.tap_web_1.tx.bytes_per_s"), 1000.0);
        assert_eq!(get(&out, "net.tap_web_1.rx.drops_per_s"), 0.5);
    }
}
