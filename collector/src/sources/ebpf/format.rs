//! Tracepoint field offsets, read from tracefs' `format` files.
//!
//! The programs read tracepoint fields at byte offsets that differ between
//! kernels. This module parses `events/<category>/<name>/format` and
//! builds the [`TracepointOffsets`] the loader writes into the object's
//! `.rodata` before the verifier sees it. A field that is missing or has an
//! unexpected size is an error naming the file and the field: reading the
//! wrong bytes would give wrong numbers, not a crash.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use hyper_stats_ebpf::TracepointOffsets;
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
pub struct Field {
    /// The field's name, without type or array suffix.
    pub name: String,
    /// Byte offset in the record.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

/// Parses the `field:` lines of a format file; other lines are ignored.
pub fn parse_fields(text: &str) -> Vec<Field> {
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
pub fn format_path(tracefs: &Path, category: &str, event: &str) -> PathBuf {
    tracefs
        .join("events")
        .join(category)
        .join(event)
        .join("format")
}

/// Reads the offsets of every field the programs use. The KVM offset falls
/// back to its default when the kvm module is not loaded (its programs are
/// then not attached either).
pub fn read_offsets(tracefs: &Path) -> Result<TracepointOffsets, FormatError> {
    let fields = |category: &str, event: &str| {
        let path = format_path(tracefs, category, event);
        match fs::read_to_string(&path) {
            Ok(text) => Ok((path, parse_fields(&text))),
            Err(source) => Err(FormatError::Read { path, source }),
        }
    };
    let switch = fields("sched", "sched_switch")?;
    let wakeup = fields("sched", "sched_wakeup")?;
    let wakeup_new = fields("sched", "sched_wakeup_new")?;
    let mut offsets = TracepointOffsets {
        switch_prev_pid: offset_of(&switch, "prev_pid", 4)?,
        switch_prev_state: offset_of(&switch, "prev_state", 8)?,
        switch_next_pid: offset_of(&switch, "next_pid", 4)?,
        wakeup_pid: offset_of(&wakeup, "pid", 4)?,
        wakeup_new_pid: offset_of(&wakeup_new, "pid", 4)?,
        ..TracepointOffsets::DEFAULT
    };
    if let Ok(kvm_exit) = fields("kvm", "kvm_exit") {
        offsets.kvm_exit_reason = offset_of(&kvm_exit, "exit_reason", 4)?;
    }
    Ok(offsets)
}

/// The offset of `field` in a parsed file, checking its size.
fn offset_of(
    (path, fields): &(PathBuf, Vec<Field>),
    field: &'static str,
    expected: u32,
) -> Result<u32, FormatError> {
    let found =
        fields
            .iter()
            .find(|f| f.name == field)
            .ok_or_else(|| FormatError::MissingField {
                path: path.clone(),
                field,
            })?;
    if found.size != expected {
        return Err(FormatError::FieldSize {
            path: path.clone(),
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
    fn defaults_match_the_kernel_the_probes_were_written_on() {
        let dir = tempfile::tempdir().unwrap();
        for (category, event, text) in [
            ("sched", "sched_switch", SWITCH),
            ("sched", "sched_wakeup", WAKEUP),
            ("sched", "sched_wakeup_new", WAKEUP),
            ("kvm", "kvm_exit", KVM_EXIT),
        ] {
            let path = format_path(dir.path(), category, event);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, text).unwrap();
        }
        assert_eq!(
            read_offsets(dir.path()).unwrap(),
            TracepointOffsets::DEFAULT
        );
    }

    #[test]
    fn a_missing_or_resized_field_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let resized = SWITCH.replace(
            "long prev_state;\toffset:32;\tsize:8;",
            "int prev_state;\toffset:32;\tsize:4;",
        );
        assert_ne!(resized, SWITCH);
        for (event, text) in [
            ("sched_switch", resized.as_str()),
            ("sched_wakeup", WAKEUP),
            ("sched_wakeup_new", "format:\n"),
        ] {
            let path = format_path(dir.path(), "sched", event);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, text).unwrap();
        }
        let err = read_offsets(dir.path()).unwrap_err().to_string();
        assert!(
            err.ends_with("sched_switch/format is 4 bytes, the probes read 8"),
            "{err}"
        );
        assert!(err.starts_with("field `prev_state` in "), "{err}");

        let path = format_path(dir.path(), "sched", "sched_switch");
        fs::write(&path, SWITCH).unwrap();
        let err = read_offsets(dir.path()).unwrap_err().to_string();
        assert!(
            err.ends_with("sched_wakeup_new/format has no field `pid`"),
            "{err}"
        );
    }
}
