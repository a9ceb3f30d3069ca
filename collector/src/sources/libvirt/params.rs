//! Typed parameters of one domain's bulk-stats record, decoded from
//! libvirt's `virTypedParameter` array into owned Rust values.
//!
//! # What this module owns
//!
//! [`DomainRecord`] (one domain's identity and fields) and [`Value`] (one
//! field's value, tagged as libvirt tags it). The unsafe reading of
//! libvirt's structs happens in [`super::ffi`]; everything here is safe and
//! testable without libvirt.
//!
//! # Lookups
//!
//! A record carries 100 to 300 fields and the deriver looks up most of them
//! on every poll, so a linear scan per lookup would make one poll quadratic
//! in the field count. Records built by [`DomainRecord::new`] (which is what
//! [`super::ffi`] uses) keep `params` sorted by field name, and lookups
//! binary-search. A record built by hand with unsorted `params` still
//! answers correctly: a missed binary search falls back to a linear scan.

use std::ffi::c_char;

/// One typed parameter value, as libvirt tags it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i32),
    UInt(u32),
    LLong(i64),
    ULLong(u64),
    Double(f64),
    Boolean(bool),
    String(String),
}

/// The bulk-stats record of one domain: identity plus its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainRecord {
    /// Canonical lowercase UUID string.
    pub uuid: String,
    /// Domain name at the time of the call.
    pub name: String,
    /// Fields such as `cpu.time`, `vcpu.0.delay`, `block.0.name`. Sorted by
    /// field name when built by [`DomainRecord::new`] (lookups are then
    /// O(log n)); any order is accepted, at the cost of slower lookups.
    pub params: Vec<(String, Value)>,
}

impl DomainRecord {
    /// Builds a record, sorting `params` by field name so that lookups
    /// binary-search.
    pub(crate) fn new(
        uuid: String,
        name: String,
        mut params: Vec<(String, Value)>,
    ) -> DomainRecord {
        params.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        DomainRecord { uuid, name, params }
    }

    /// The named field as an unsigned integer, if present and integral
    /// (negative values and doubles give `None`; booleans give 0 or 1).
    pub fn u64(&self, field: &str) -> Option<u64> {
        match self.get(field)? {
            Value::Int(v) => u64::try_from(*v).ok(),
            Value::UInt(v) => Some(u64::from(*v)),
            Value::LLong(v) => u64::try_from(*v).ok(),
            Value::ULLong(v) => Some(*v),
            Value::Boolean(v) => Some(u64::from(*v)),
            Value::Double(_) | Value::String(_) => None,
        }
    }

    /// The named field as a string, if present and a string.
    pub fn str(&self, field: &str) -> Option<&str> {
        match self.get(field)? {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The named field, whatever its type.
    pub(crate) fn get(&self, field: &str) -> Option<&Value> {
        // Binary search first: exact for sorted params, and a hit is right
        // whatever the order (field names are unique). A miss may only mean
        // the params are unsorted, so confirm it with a scan.
        match self.params.binary_search_by(|(k, _)| k.as_str().cmp(field)) {
            Ok(i) => Some(&self.params[i].1),
            Err(_) => self.params.iter().find(|(k, _)| k == field).map(|(_, v)| v),
        }
    }
}

/// Decodes a `virTypedParameter` field name: the bytes up to the first NUL
/// (or the whole array if libvirt filled all of it), invalid UTF-8 replaced.
pub(crate) fn field_name(raw: &[c_char]) -> String {
    // `c_char` is `i8` or `u8` depending on the target; this is a
    // reinterpretation of each byte, not a numeric conversion.
    #[allow(clippy::cast_sign_loss, clippy::unnecessary_cast)]
    let bytes: Vec<u8> = raw
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str, len: usize) -> Vec<c_char> {
        #[allow(clippy::cast_possible_wrap)]
        let mut v: Vec<c_char> = s.bytes().map(|b| b as c_char).collect();
        v.resize(len, 0);
        v
    }

    #[test]
    fn field_name_stops_at_nul() {
        assert_eq!(field_name(&raw("cpu.time", 80)), "cpu.time");
        assert_eq!(field_name(&raw("", 80)), "");
    }

    #[test]
    fn field_name_without_nul_uses_whole_array() {
        let full = "x".repeat(80);
        assert_eq!(field_name(&raw(&full, 80)), full);
    }

    #[test]
    fn field_name_replaces_invalid_utf8() {
        #[allow(clippy::cast_possible_wrap)]
        let bad: Vec<c_char> = vec![b'a' as c_char, 0xff_u8 as c_char, b'b' as c_char, 0];
        assert_eq!(field_name(&bad), "a\u{fffd}b");
    }

    fn record(params: Vec<(&str, Value)>) -> DomainRecord {
        DomainRecord::new(
            "6695eb01-f6a4-8304-79aa-97f2502e193f".into(),
            "test".into(),
            params.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        )
    }

    #[test]
    fn new_sorts_params() {
        let r = record(vec![
            ("vcpu.1.time", Value::ULLong(2)),
            ("cpu.time", Value::ULLong(1)),
            ("block.0.name", Value::String("vda".into())),
        ]);
        let keys: Vec<&str> = r.params.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["block.0.name", "cpu.time", "vcpu.1.time"]);
    }

    #[test]
    fn u64_converts_integral_types() {
        let r = record(vec![
            ("int", Value::Int(7)),
            ("neg", Value::Int(-1)),
            ("uint", Value::UInt(8)),
            ("llong", Value::LLong(9)),
            ("neg_llong", Value::LLong(-9)),
            ("ullong", Value::ULLong(u64::MAX)),
            ("bool", Value::Boolean(true)),
            ("double", Value::Double(1.5)),
            ("string", Value::String("vda".into())),
        ]);
        let cases = [
            ("int", Some(7)),
            ("neg", None),
            ("uint", Some(8)),
            ("llong", Some(9)),
            ("neg_llong", None),
            ("ullong", Some(u64::MAX)),
            ("bool", Some(1)),
            ("double", None),
            ("string", None),
            ("absent", None),
        ];
        for (field, want) in cases {
            assert_eq!(r.u64(field), want, "field {field}");
        }
        assert_eq!(r.str("string"), Some("vda"));
        assert_eq!(r.str("int"), None);
    }

    #[test]
    fn lookups_find_every_field_of_a_large_record() {
        // Field names the way libvirt numbers them: "vcpu.10" sorts before
        // "vcpu.2", which must not matter to lookups.
        let mut params = Vec::new();
        for i in 0..64 {
            for f in ["state", "time", "wait", "delay"] {
                params.push((format!("vcpu.{i}.{f}"), Value::ULLong(i)));
            }
        }
        let r = DomainRecord::new("u".into(), "n".into(), params);
        for i in 0..64 {
            assert_eq!(r.u64(&format!("vcpu.{i}.delay")), Some(i));
        }
        assert_eq!(r.get("vcpu.64.delay"), None);
    }

    #[test]
    fn lookups_work_on_unsorted_hand_built_records() {
        let r = DomainRecord {
            uuid: "u".into(),
            name: "n".into(),
            params: vec![
                ("z".into(), Value::UInt(1)),
                ("a".into(), Value::UInt(2)),
                ("m".into(), Value::UInt(3)),
                ("b".into(), Value::UInt(4)),
            ],
        };
        for (k, want) in [("z", 1), ("a", 2), ("m", 3), ("b", 4)] {
            assert_eq!(r.u64(k), Some(want), "field {k}");
        }
        assert_eq!(r.u64("c"), None);
    }
}
