//! The `cpu` group: the domain's total CPU time, split into user and
//! system, as a percentage of one host CPU over the interval.
//!
//! `cpu.time` counts every QEMU thread of the domain (vCPUs, I/O threads,
//! the emulator), so it can exceed 100 on multi-vCPU guests.

use super::derive::{Derived, Interval, put_ns_percents};

/// Derives `cpu.{time,user,system}_percent`.
pub(crate) fn derive(i: &Interval<'_>, out: &mut Derived) {
    let Interval { prev, cur, dt_s } = *i;
    let Some(prev) = prev else { return };
    put_ns_percents(out, (prev, cur, dt_s), "cpu", &["time", "user", "system"]);
}

#[cfg(test)]
mod tests {
    use super::super::derive::testutil::{derived, get, has, record};
    use super::*;

    #[test]
    fn percent_of_one_cpu_and_nothing_on_first_sample_or_reset() {
        let prev = record(&[("cpu.time", 1_000_000_000), ("cpu.user", 0)], &[]);
        let cur = record(
            &[("cpu.time", 1_500_000_000), ("cpu.user", 100_000_000)],
            &[],
        );
        let out = derived(derive, Some(&prev), &cur, 1.0);
        assert!((get(&out, "cpu.time_percent") - 50.0).abs() < 1e-9);
        assert!((get(&out, "cpu.user_percent") - 10.0).abs() < 1e-9);
        assert!(!has(&out, "cpu.system_percent"), "absent field, no value");

        let first = derived(derive, None, &cur, 1.0);
        assert!(first.values.is_empty());

        let reset = derived(derive, Some(&cur), &prev, 1.0);
        assert!(!has(&reset, "cpu.time_percent"), "{:?}", reset.values);
    }
}
