//! Offsets of the kernel struct fields the programs read, from the
//! kernel's BTF.
//!
//! The scheduler programs read a few fields of `task_struct`, `cfs_rq` and
//! `rq` (see [`KernelOffsets`]). Their layout differs between kernels and
//! configs, so the agent looks each one up in `/sys/kernel/btf/vmlinux`
//! when it loads the probes, descending through anonymous structs and
//! unions, and checks the size of each field against what the programs
//! read. A field that is missing or has another size is an error naming
//! it: the probes then stay off, since wrong bytes would give wrong numbers,
//! not a crash.
//!
//! The file is memory-mapped where the kernel allows it (6.10 and later)
//! and read whole where it does not (`mmap` of the sysfs file fails with
//! ENODEV on Debian 12's 6.1 and 6.12): [`BtfSource`] says which, for
//! `hyper-stats selftest` to report.

use btf_rs::{Backend, Btf, Type};
use thiserror::Error;

/// Why an offset could not be found.
#[derive(Debug, Error)]
pub enum BtfError {
    /// The BTF could not be parsed, or a type id in it did not resolve.
    #[error("failed to read the kernel's BTF: {0}")]
    Parse(#[from] btf_rs::Error),
    /// No struct of that name.
    #[error("the kernel's BTF has no `struct {0}`")]
    NoStruct(&'static str),
    /// The struct lacks the field.
    #[error("`struct {strukt}` has no field `{field}` in the kernel's BTF")]
    NoField {
        /// The struct.
        strukt: &'static str,
        /// The field, dotted through nested structs.
        field: &'static str,
    },
    /// The field is a bitfield, or has another size than the programs read.
    #[error(
        "field `{strukt}.{field}` is {size} bytes in the kernel's BTF, the probes read {expected}"
    )]
    FieldSize {
        /// The struct.
        strukt: &'static str,
        /// The field.
        field: &'static str,
        /// Its size per BTF (0 for a bitfield).
        size: usize,
        /// The size the programs read.
        expected: usize,
    },
}

/// A field the programs read: `strukt.path` (path dotted through named
/// nested structs, like `sched_info.run_delay`) of `size` bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FieldSpec {
    /// The outer struct.
    pub(crate) strukt: &'static str,
    /// The member, dotted through nested (named) members.
    pub(crate) path: &'static str,
    /// Bytes the programs read there.
    pub(crate) size: usize,
}

/// What a kernel without the field lacks, for the error's second line.
pub(crate) const NEEDS: &str = "the probes need a kernel with CONFIG_SCHED_INFO (schedstat) and \
                         CONFIG_FAIR_GROUP_SCHED (CPU cgroups), as distribution kernels have";

pub(crate) use hyper_stats_ebpf::KernelOffsets;

/// How the kernel BTF was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BtfSource {
    /// Memory-mapped: only the types looked up were parsed.
    Mapped,
    /// Read and parsed whole, because mapping it failed with this error.
    Read {
        /// Why `mmap` was refused (ENODEV on kernels before 6.10).
        mmap_error: String,
    },
}

impl std::fmt::Display for BtfSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Mapped => f.write_str("mapped"),
            Self::Read { mmap_error } => write!(f, "read: mmap refused: {mmap_error}"),
        }
    }
}

/// Opens the BTF at `path`: mapped, or read whole if the kernel refuses
/// to map it.
pub(crate) fn open(path: &std::path::Path) -> Result<(Btf, BtfSource), BtfError> {
    open_with(path, |path| {
        Btf::from_file_with_backend(path, Backend::Mmap)
    })
}

/// [`open`], with `map` standing in for the mapping attempt.
fn open_with(
    path: &std::path::Path,
    map: impl Fn(&std::path::Path) -> Result<Btf, btf_rs::Error>,
) -> Result<(Btf, BtfSource), BtfError> {
    // Mapped, not parsed whole, where the kernel allows it: the agent needs
    // seven fields of a 5 MB file, and parsing all of it costs 0.3 s of
    // start-up (the mapping and the lookups take about 20 ms).
    match map(path) {
        Ok(btf) => Ok((btf, BtfSource::Mapped)),
        Err(mmap_error) => {
            let btf = Btf::from_file_with_backend(path, Backend::Cache)?;
            let mmap_error = mmap_error.to_string();
            Ok((btf, BtfSource::Read { mmap_error }))
        }
    }
}

/// Looks up every struct field of [`KernelOffsets`] in `btf`; the KVM
/// tracepoint offset is left at its default for the caller to set.
pub(crate) fn read_offsets(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    let field = |strukt, path, size| field_offset(btf, FieldSpec { strukt, path, size });
    Ok(KernelOffsets {
        task_pid: field("task_struct", "pid", 4)?,
        task_run_delay: field("task_struct", "sched_info.run_delay", 8)?,
        task_last_queued: field("task_struct", "sched_info.last_queued", 8)?,
        task_cfs_rq: field("task_struct", "se.cfs_rq", 8)?,
        task_sum_exec_runtime: field("task_struct", "se.sum_exec_runtime", 8)?,
        cfs_rq_rq: field("cfs_rq", "rq", 8)?,
        rq_clock: field("rq", "clock", 8)?,
        ..KernelOffsets::DEFAULT
    })
}

/// The byte offset of `spec` in its struct, its size checked.
pub(crate) fn field_offset(btf: &Btf, spec: FieldSpec) -> Result<u32, BtfError> {
    let no_field = || BtfError::NoField {
        strukt: spec.strukt,
        field: spec.path,
    };
    let mut ty = btf
        .resolve_types_by_name(spec.strukt)
        .unwrap_or_default()
        .into_iter()
        .find(|t| matches!(t, Type::Struct(s) if !s.members.is_empty()))
        .ok_or(BtfError::NoStruct(spec.strukt))?;
    let mut offset_bits = 0u32;
    for name in spec.path.split('.') {
        let (bits, member_ty, bitfield) = member(btf, &ty, name)?.ok_or_else(no_field)?;
        offset_bits += bits;
        if bitfield {
            return Err(BtfError::FieldSize {
                strukt: spec.strukt,
                field: spec.path,
                size: 0,
                expected: spec.size,
            });
        }
        ty = member_ty;
    }
    let size = type_size(btf, &ty)?;
    if size != spec.size || !offset_bits.is_multiple_of(8) {
        return Err(BtfError::FieldSize {
            strukt: spec.strukt,
            field: spec.path,
            size,
            expected: spec.size,
        });
    }
    Ok(offset_bits / 8)
}

/// The member `name` of the struct or union `ty`, looked for through
/// anonymous members too: its bit offset, its type with typedefs and
/// qualifiers stripped, and whether it is a bitfield.
fn member(btf: &Btf, ty: &Type, name: &str) -> Result<Option<(u32, Type, bool)>, BtfError> {
    let (Type::Struct(s) | Type::Union(s)) = ty else {
        return Ok(None);
    };
    for m in &s.members {
        // Only the member asked for, and anonymous ones that may hold it,
        // need their type resolved (`task_struct` has hundreds of members).
        let member_name = btf.resolve_name(m).unwrap_or_default();
        if member_name != name && !member_name.is_empty() {
            continue;
        }
        let member_ty = strip(btf, btf.resolve_chained_type(m)?)?;
        if member_name == name {
            return Ok(Some((
                m.bit_offset(),
                member_ty,
                m.bitfield_size().is_some_and(|b| b != 0),
            )));
        }
        if let Some((bits, t, bitfield)) = member(btf, &member_ty, name)? {
            return Ok(Some((m.bit_offset() + bits, t, bitfield)));
        }
    }
    Ok(None)
}

/// `ty` with typedefs, `const`, `volatile` and friends stripped.
fn strip(btf: &Btf, mut ty: Type) -> Result<Type, BtfError> {
    loop {
        ty = match &ty {
            Type::Typedef(t) => btf.resolve_chained_type(t)?,
            Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => {
                btf.resolve_chained_type(t)?
            }
            Type::TypeTag(t) => btf.resolve_chained_type(t)?,
            _ => return Ok(ty),
        };
    }
}

/// The size in bytes of a (stripped) field type; 0 for what the programs
/// never read whole (arrays, functions).
fn type_size(btf: &Btf, ty: &Type) -> Result<usize, BtfError> {
    Ok(match strip(btf, ty.clone())? {
        Type::Int(i) => i.size(),
        Type::Ptr(_) => 8,
        Type::Enum(e) => e.size(),
        Type::Struct(s) | Type::Union(s) => s.size(),
        _ => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field resolves on the kernel these tests run on (the agent's
    /// kind: BTF at the usual place), each inside its struct and distinct.
    #[test]
    fn this_kernels_fields_resolve_inside_their_structs() {
        let path = std::path::Path::new(super::super::KERNEL_BTF);
        let btf = Btf::from_file(path).expect("the test machine has kernel BTF");
        let (mapped, source) = open(path).unwrap();
        assert_eq!(source, BtfSource::Mapped, "6.10 and later map the file");
        let offsets = read_offsets(&mapped).unwrap();
        assert_eq!(
            offsets,
            read_offsets(&btf).unwrap(),
            "read and mapped agree"
        );
        let task_size = match btf.resolve_types_by_name("task_struct").unwrap().remove(0) {
            Type::Struct(s) => s.size(),
            other => panic!("task_struct is a {}", other.name()),
        };
        for off in [
            offsets.task_pid,
            offsets.task_run_delay,
            offsets.task_last_queued,
            offsets.task_cfs_rq,
            offsets.task_sum_exec_runtime,
        ] {
            assert!((off as usize) < task_size, "{offsets:?}");
        }
        // run_delay and last_queued are both in sched_info, run_delay first.
        assert!(offsets.task_run_delay < offsets.task_last_queued);
        assert!(offsets.task_last_queued - offsets.task_run_delay < 64);
    }

    /// When mapping is refused (as the 6.1 sysfs file refuses it with
    /// ENODEV; `cargo xtask lab kernels` boots the real one), the file is
    /// read instead, with the same offsets, and the source says why.
    #[test]
    fn a_refused_mapping_falls_back_to_reading() {
        let path = std::path::Path::new(super::super::KERNEL_BTF);
        let enodev = |_: &std::path::Path| -> Result<Btf, btf_rs::Error> {
            Err(std::io::Error::from_raw_os_error(libc::ENODEV).into())
        };
        let (btf, source) = open_with(path, enodev).unwrap();
        assert_eq!(
            source.to_string(),
            "read: mmap refused: i/o error: No such device (os error 19)"
        );
        let (mapped, _) = open(path).unwrap();
        assert_eq!(read_offsets(&btf).unwrap(), read_offsets(&mapped).unwrap());
    }

    #[test]
    fn missing_and_resized_fields_are_errors_naming_them() {
        let btf = Btf::from_file(super::super::KERNEL_BTF).unwrap();
        let missing = FieldSpec {
            strukt: "task_struct",
            path: "sched_info.no_such_field",
            size: 8,
        };
        assert_eq!(
            field_offset(&btf, missing).unwrap_err().to_string(),
            "`struct task_struct` has no field `sched_info.no_such_field` in the kernel's BTF"
        );
        let resized = FieldSpec {
            path: "pid",
            size: 8,
            ..missing
        };
        assert_eq!(
            field_offset(&btf, resized).unwrap_err().to_string(),
            "field `task_struct.pid` is 4 bytes in the kernel's BTF, the probes read 8"
        );
        let no_struct = FieldSpec {
            strukt: "no_such_struct",
            ..missing
        };
        assert_eq!(
            field_offset(&btf, no_struct).unwrap_err().to_string(),
            "the kernel's BTF has no `struct no_such_struct`"
        );
    }
}
