//! Typed parameters of one domain's bulk-stats record, decoded from
//! libvirt's `virTypedParameter` array into owned Rust values.
//!
//! OWNER: libvirt helper. The interface below is fixed; fill in decoding.

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

/// The bulk-stats record of one domain: identity plus its parameters in the
/// order libvirt returned them.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainRecord {
    /// Canonical lowercase UUID string.
    pub uuid: String,
    /// Domain name at the time of the call.
    pub name: String,
    /// Fields such as `cpu.time`, `vcpu.0.delay`, `block.0.name`.
    pub params: Vec<(String, Value)>,
}

impl DomainRecord {
    /// The named field as an unsigned integer, if present and integral.
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
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.params.iter().find(|(k, _)| k == field).map(|(_, v)| v)
    }
}
