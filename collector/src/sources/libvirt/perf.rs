//! The `perf` group: the host perf events libvirt counts for the domain
//! (`<perf><event name=.../></perf>` in its XML), per second; `cmt` is a
//! cache occupancy in bytes and is kept as a gauge.

use super::counter::rate;
use super::derive::{Derived, Interval};

/// Derives `perf.<event>_per_s` for every counter and `perf.cmt_bytes`.
pub(crate) fn derive(i: &Interval<'_>, out: &mut Derived) {
    let Interval { prev, cur, dt_s } = *i;
    for (key, _) in &cur.params {
        let Some(event) = key.strip_prefix("perf.") else {
            continue;
        };
        let event = hyper_stats_query::metric::sanitize_component(event);
        if event == "cmt" {
            out.put("perf.cmt_bytes", cur.u64(key).map(|v| v as f64));
            continue;
        }
        let Some(prev) = prev else { continue };
        out.put(
            format!("perf.{event}_per_s"),
            rate(prev.u64(key), cur.u64(key), dt_s),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::derive::testutil::{derived, get, record};
    use super::*;

    #[test]
    fn every_perf_counter_becomes_a_rate() {
        let prev = record(
            &[
                ("perf.cpu_cycles", 1_000),
                ("perf.instructions", 10),
                ("perf.cmt", 7),
            ],
            &[],
        );
        let cur = record(
            &[
                ("perf.cpu_cycles", 3_000),
                ("perf.instructions", 20),
                ("perf.cmt", 9),
            ],
            &[],
        );
        let out = derived(derive, Some(&prev), &cur, 1.0);
        assert_eq!(get(&out, "perf.cpu_cycles_per_s"), 2000.0);
        assert_eq!(get(&out, "perf.instructions_per_s"), 10.0);
        assert_eq!(get(&out, "perf.cmt_bytes"), 9.0);
    }
}
