//! Shared plumbing of the per-group derivations: the output list and the
//! lookup of devices by name.
//!
//! Each group module (`cpu`, `vcpu`, `balloon`, `block`, `net`, `perf`,
//! `state`) turns the previous and current record of one domain into named
//! values. Gauges need only the current record; rates need both and are
//! skipped on a domain's first sample and across counter resets.

use super::params::DomainRecord;

/// One group's two samples of a domain and the time between them: what
/// every group's `derive` turns into values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Interval<'a> {
    /// The previous record, if there is one to difference against.
    pub(crate) prev: Option<&'a DomainRecord>,
    /// The current record.
    pub(crate) cur: &'a DomainRecord,
    /// Seconds between the two.
    pub(crate) dt_s: f64,
}

/// The named values derived from one domain's record, in derivation order.
#[derive(Debug, Default)]
pub(crate) struct Derived {
    /// `(metric name, value)` pairs.
    pub(crate) values: Vec<(String, f64)>,
}

impl Derived {
    /// Records `value` under `metric` if there is one.
    pub(crate) fn put(&mut self, metric: impl Into<String>, value: Option<f64>) {
        if let Some(v) = value.filter(|v| v.is_finite()) {
            self.values.push((metric.into(), v));
        }
    }
}

/// Records `<prefix>.<field>_percent` for each of `fields`: how much of
/// the `dt_s` interval the nanosecond counter `<prefix>.<field>` grew by.
pub(crate) fn put_ns_percents(
    out: &mut Derived,
    (prev, cur, dt_s): (&DomainRecord, &DomainRecord, f64),
    prefix: &str,
    fields: &[&str],
) {
    for field in fields {
        let key = format!("{prefix}.{field}");
        out.put(
            format!("{key}_percent"),
            super::counter::ns_percent(prev.u64(&key), cur.u64(&key), dt_s),
        );
    }
}

/// A device of a `block` or `net` group: its index in this record and its
/// name as a metric path component.
pub(crate) struct Device {
    /// The `N` of `block.N.*` in this record.
    pub(crate) index: u64,
    /// The device name libvirt gives (`vda`, `tap-web-1`), sanitized.
    pub(crate) name: String,
}

/// The devices of `group` (`"block"` or `"net"`) in `rec`, by
/// `<group>.count` and `<group>.N.name`.
pub(crate) fn devices(rec: &DomainRecord, group: &str) -> Vec<Device> {
    let count = rec.u64(&format!("{group}.count")).unwrap_or(0);
    (0..count)
        .filter_map(|index| {
            let name = rec.str(&format!("{group}.{index}.name"))?;
            Some(Device {
                index,
                name: hyper_stats_query::metric::sanitize_component(name),
            })
        })
        .collect()
}

/// The index in `prev` of the device called `name`: devices are matched by
/// name, since hot-plug can shift indices between two samples.
pub(crate) fn index_of(prev: &DomainRecord, group: &str, name: &str) -> Option<u64> {
    devices(prev, group)
        .into_iter()
        .find(|d| d.name == name)
        .map(|d| d.index)
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Builders for records in tests.
    use super::super::params::{DomainRecord, Value};

    /// A record with the given unsigned fields and string fields.
    pub(crate) fn record(u: &[(&str, u64)], s: &[(&str, &str)]) -> DomainRecord {
        let mut params: Vec<(String, Value)> = u
            .iter()
            .map(|(k, v)| (k.to_string(), Value::ULLong(*v)))
            .collect();
        params.extend(
            s.iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string()))),
        );
        DomainRecord::new(
            "6f1c2f4e-9c1a-4d43-9d7e-1a2b3c4d5e6f".into(),
            "web-1".into(),
            params,
        )
    }

    /// The value of `metric` in `d`, panicking with the list if absent.
    pub(crate) fn get(d: &super::Derived, metric: &str) -> f64 {
        d.values
            .iter()
            .find(|(m, _)| m == metric)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no {metric} in {:?}", d.values))
    }

    /// What `derive` makes of `prev` and `cur`, `dt_s` apart.
    pub(crate) fn derived(
        derive: fn(&super::Interval<'_>, &mut super::Derived),
        prev: Option<&DomainRecord>,
        cur: &DomainRecord,
        dt_s: f64,
    ) -> super::Derived {
        let mut out = super::Derived::default();
        derive(&super::Interval { prev, cur, dt_s }, &mut out);
        out
    }

    /// Whether `metric` is present in `d`.
    pub(crate) fn has(d: &super::Derived, metric: &str) -> bool {
        d.values.iter().any(|(m, _)| m == metric)
    }
}
