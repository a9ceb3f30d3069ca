//! Classic tracepoint field offsets, read from tracefs' `format` files.
//!
//! The `kvm_exit` program reads a field of its tracepoint's record at a
//! byte offset that differs between kernels (the scheduler programs are BTF
//! tracepoints and take their offsets from BTF, see `btf`). This module
//! parses `events/<category>/<name>/format` for the offset the loader
//! writes into the object's `.rodata` before the verifier sees it. A field
//! that is missing or has an unexpected size is an error naming the file
//! and the field: reading the wrong bytes would give wrong numbers, not a
//! crash.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why the offsets could not be read.
#[derive(Debug, Error)]
pub enum FormatError {
    /// The format file could not be read.
    #[error("failed to read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A field the programs read is not in the file.
    #[error("{} has no field `{field}`", path.display())]
    MissingField {
        /// The file.
        path: PathBuf,
        /// The field.
        field: &'static str,
    },
    /// A field has another size than the programs read.
    #[error("field `{field}` in {} is {size} bytes, the probes read {expected}", path.display())]
    FieldSize {
        /// The file.
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// Its size in the file.
        size: u32,
        /// The size the programs read.
        expected: u32,
    },
}

/// One `field:` line of a format file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field {
    /// The field's name, without type or array suffix.
    pub(crate) name: String,
    /// Byte offset in the record.
    pub(crate) offset: u32,
    /// Size in bytes.
    pub(crate) size: u32,
}

/// Parses the `field:` lines of a format file; other lines are ignored.
pub(crate) fn parse_fields(text: &str) -> Vec<Field> {
    text.lines()
        .filter_map(|line| {
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            for part in line.trim().split(';') {
                let part = part.trim();
                if let Some(v) = part.strip_prefix("field:") {
                    decl = Some(v);
                } else if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse().ok();
                }
            }
            // `unsigned int exit_reason`, `char prev_comm[16]`: the name is
            // the last word, less any array suffix.
            let name = decl?.split_whitespace().last()?;
            let name = name.split('[').next().unwrap_or(name);
            Some(Field {
                name: name.to_owned(),
                offset: offset?,
                size: size?,
            })
        })
        .collect()
}

/// The format file of `category:event` under the tracefs mount `tracefs`.
pub(crate) fn format_path(tracefs: &Path, category: &str, event: &str) -> PathBuf {
    tracefs
        .join("events")
        .join(category)
        .join(event)
        .join("format")
}

/// The offset of `kvm_exit.exit_reason`, or `None` when the kvm module is
/// not loaded (the KVM programs are then not attached either).
pub(crate) fn kvm_exit_reason(tracefs: &Path) -> Result<Option<u32>, FormatError> {
    let path = format_path(tracefs, "kvm", "kvm_exit");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(FormatError::Read { path, source }),
    };
    offset_of(path, &parse_fields(&text), "exit_reason", 4).map(Some)
}

/// The offset of `field` in the parsed format file at `path`, checking its
/// size.
fn offset_of(
    path: PathBuf,
    fields: &[Field],
    field: &'static str,
    expected: u32,
) -> Result<u32, FormatError> {
    let Some(found) = fields.iter().find(|f| f.name == field) else {
        return Err(FormatError::MissingField { path, field });
    };
    if found.size != expected {
        return Err(FormatError::FieldSize {
            path,
            field,
            size: found.size,
            expected,
        });
    }
    Ok(found.offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SWITCH: &str = include_str!("testdata/sched_switch.format");
    const WAKEUP: &str = include_str!("testdata/sched_wakeup.format");
    const KVM_EXIT: &str = include_str!("testdata/kvm_exit.format");

    fn field(text: &str, name: &str) -> Field {
        parse_fields(text)
            .into_iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no field {name}"))
    }

    #[test]
    fn parses_fields_of_a_6_18_kernel() {
        let cases = [
            (SWITCH, "prev_comm", 8, 16),
            (SWITCH, "prev_pid", 24, 4),
            (SWITCH, "prev_state", 32, 8),
            (SWITCH, "next_pid", 56, 4),
            (WAKEUP, "pid", 24, 4),
            (WAKEUP, "common_pid", 4, 4),
            (KVM_EXIT, "exit_reason", 8, 4),
            (KVM_EXIT, "guest_rip", 16, 8),
        ];
        for (text, name, offset, size) in cases {
            let f = field(text, name);
            assert_eq!((f.offset, f.size), (offset, size), "{name}");
        }
    }

    #[test]
    fn kvm_exit_reason_is_read_or_absent_with_the_module() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(kvm_exit_reason(dir.path()).unwrap(), None);
        let path = format_path(dir.path(), "kvm", "kvm_exit");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, KVM_EXIT).unwrap();
        assert_eq!(kvm_exit_reason(dir.path()).unwrap(), Some(8));
    }

    #[test]
    fn a_missing_or_resized_field_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = format_path(dir.path(), "kvm", "kvm_exit");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let resized = KVM_EXIT.replace(
            "unsigned int exit_reason;\toffset:8;\tsize:4;",
            "unsigned long exit_reason;\toffset:8;\tsize:8;",
        );
        assert_ne!(resized, KVM_EXIT);
        fs::write(&path, resized).unwrap();
        let err = kvm_exit_reason(dir.path()).unwrap_err().to_string();
        assert!(err.starts_with("field `exit_reason` in "), "{err}");
        assert!(
            err.ends_with("kvm_exit/format is 8 bytes, the probes read 4"),
            "{err}"
        );
        fs::write(&path, "format:\n").unwrap();
        let err = kvm_exit_reason(dir.path()).unwrap_err().to_string();
        assert!(
            err.ends_with("kvm_exit/format has no field `exit_reason`"),
            "{err}"
        );
    }
}
