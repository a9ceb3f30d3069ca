//! The `vcpu` group: per vCPU, the share of one host CPU it ran
//! (`vcpu.N.time`), waited for a host CPU while runnable (`vcpu.N.delay`,
//! the run-queue wait the kernel accounts in schedstat), and waited
//! otherwise (`vcpu.N.wait`), plus the vCPU counts.

use super::derive::{Derived, Interval, put_ns_percents};

/// Derives `vcpu.{current,maximum}` and `vcpu.N.{time,delay,wait}_percent`,
/// `vcpu.N.halted`.
pub(crate) fn derive(i: &Interval<'_>, out: &mut Derived) {
    let Interval { prev, cur, dt_s } = *i;
    let as_f64 = |v: Option<u64>| v.map(|v| v as f64);
    out.put("vcpu.current", as_f64(cur.u64("vcpu.current")));
    out.put("vcpu.maximum", as_f64(cur.u64("vcpu.maximum")));
    // vCPU ids are stable (hot-plug adds or removes ids), so unlike devices
    // they can be matched by index.
    let maximum = cur.u64("vcpu.maximum").unwrap_or(0);
    for n in 0..maximum {
        if cur.u64(&format!("vcpu.{n}.state")).is_none()
            && cur.u64(&format!("vcpu.{n}.time")).is_none()
        {
            continue;
        }
        out.put(
            format!("vcpu.{n}.halted"),
            as_f64(cur.u64(&format!("vcpu.{n}.halted"))),
        );
        let Some(prev) = prev else { continue };
        let prefix = format!("vcpu.{n}");
        put_ns_percents(out, (prev, cur, dt_s), &prefix, &["time", "delay", "wait"]);
    }
}

#[cfg(test)]
mod tests {
    use super::super::derive::testutil::{derived, get, has, record};
    use super::*;

    #[test]
    fn per_vcpu_percentages() {
        let prev = record(
            &[
                ("vcpu.maximum", 2),
                ("vcpu.current", 2),
                ("vcpu.0.state", 1),
                ("vcpu.0.time", 0),
                ("vcpu.0.delay", 0),
                ("vcpu.1.state", 1),
                ("vcpu.1.time", 0),
            ],
            &[],
        );
        let cur = record(
            &[
                ("vcpu.maximum", 2),
                ("vcpu.current", 2),
                ("vcpu.0.state", 1),
                ("vcpu.0.time", 200_000_000),
                ("vcpu.0.delay", 20_000_000),
                ("vcpu.1.state", 1),
                ("vcpu.1.time", 2_000_000_000),
            ],
            &[],
        );
        let out = derived(derive, Some(&prev), &cur, 2.0);
        assert!((get(&out, "vcpu.0.time_percent") - 10.0).abs() < 1e-9);
        assert!((get(&out, "vcpu.0.delay_percent") - 1.0).abs() < 1e-9);
        assert!((get(&out, "vcpu.1.time_percent") - 100.0).abs() < 1e-9);
        assert_eq!(get(&out, "vcpu.current"), 2.0);
        assert!(!has(&out, "vcpu.1.delay_percent"));
    }

    #[test]
    fn unplugged_vcpu_ids_are_skipped() {
        let cur = record(
            &[
                ("vcpu.maximum", 4),
                ("vcpu.current", 1),
                ("vcpu.0.state", 1),
                ("vcpu.0.time", 5),
            ],
            &[],
        );
        let out = derived(derive, Some(&cur), &cur, 1.0);
        assert!(has(&out, "vcpu.0.time_percent"));
        assert!(!out.values.iter().any(|(m, _)| m.starts_with("vcpu.3.")));
    }
}
