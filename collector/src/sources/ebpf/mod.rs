//! The eBPF source: scheduler probes on the qemu vCPU threads.
//!
//! # What does this module do?
//!
//! It loads the eBPF object that `collector/build.rs` built from
//! `collector-ebpf` and embedded in the agent, attaches its programs to the
//! kernel's tracepoints, and reads the maps they fill. The names and
//! layouts of those maps come from the `hyper-stats-ebpf` library, the one
//! place both sides take them from.
//!
//! # When the probes cannot run
//!
//! The agent must run without its probes: libvirt's stats do not need them.
//! [`Probes::load`] returns a [`ProbesOff`] that says why, with the fix on a
//! second line: the object was not built into this binary (no bpf toolchain
//! at build time), the agent lacks a capability the probes need (named,
//! see `caps`), the kernel has no BTF or its BTF lacks a field the
//! programs read, tracefs is not mounted and cannot be, or the kernel
//! refused a program. The caller logs it once and goes on
//! with its other sources.

pub(crate) mod btf;
pub(crate) mod caps;
pub(crate) mod config;
pub(crate) mod format;
pub(crate) mod maps;
pub(crate) mod mmap;
pub(crate) mod source;
pub(crate) mod targets;

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

use aya::maps::{MapData, MapError, PerCpuArray};
use aya::programs::{BtfTracePoint, ProgramError, RawTracePoint, TracePoint};
use aya::programs::{RawTracePointRunOptions, TestRun as _};
use aya::{Btf, Ebpf, EbpfError, EbpfLoader, Endianness};
use hyper_stats_ebpf::{
    DEFAULT_MAX_WATCHED, KERNEL_OFFSETS, KVM_EXITS, ONCPU_HIST, RUNQ_HIST, STATS, Stat,
    THREAD_COUNTERS, THREAD_STATE, WATCHED, program,
};
use thiserror::Error;

pub use btf::BtfError;
pub use format::FormatError;
pub(crate) use maps::ThreadMaps;
pub use maps::{HistDelta, KernelWatch, MapIds, ThreadDelta};
pub use source::EbpfSource;

/// What a developer runs to build the eBPF object into the agent.
pub const BUILD_COMMAND: &str = "cargo xtask setup && cargo xtask build-ebpf";

/// Where tracefs lives (the kernel creates the mount point); aya reads
/// tracepoint ids from it when attaching.
pub(crate) const TRACEFS: &str = "/sys/kernel/tracing";

/// The kernel's own BTF, present on kernels built with
/// `CONFIG_DEBUG_INFO_BTF`; the probes are only tested on such kernels.
pub(crate) const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The eBPF object embedded at build time, or why there is none.
pub(crate) fn object() -> Result<&'static [u8], ProbesOff> {
    #[cfg(hyper_stats_ebpf_object)]
    {
        Ok(aya::include_bytes_aligned!(concat!(
            env!("OUT_DIR"),
            "/hyper-stats-ebpf"
        )))
    }
    #[cfg(not(hyper_stats_ebpf_object))]
    {
        Err(ProbesOff::NotBuilt {
            reason: option_env!("HYPER_STATS_EBPF_SKIPPED")
                .unwrap_or("collector/build.rs did not say why"),
        })
    }
}

/// Why the eBPF probes are off. Each message names the cause and, on a
/// second line, the fix.
#[derive(Debug, Error)]
pub enum ProbesOff {
    /// The agent was built without the bpf toolchain.
    #[error(
        "the eBPF object was not built into this binary: {reason}\n\
         build it with: {BUILD_COMMAND}"
    )]
    NotBuilt {
        /// What the build script found missing.
        reason: &'static str,
    },
    /// Loading and attaching the programs needs `CAP_BPF` and
    /// `CAP_PERFMON` (or `CAP_SYS_ADMIN`, as root has).
    #[error(
        "loading eBPF programs needs {missing}, which the agent (uid {euid}) does not have\n\
         run the agent as root, or with CAP_BPF and CAP_PERFMON (the packaged systemd unit grants them)"
    )]
    MissingCapability {
        /// The missing capabilities, e.g. `CAP_BPF and CAP_PERFMON`.
        missing: String,
        /// The effective uid the agent runs as.
        euid: u32,
    },
    /// tracefs is mounted but the agent may not look into it: the kernel
    /// makes it root's only (mode 0700), and the KVM tracepoints' ids and
    /// record formats are read from it.
    #[error(
        "cannot read tracefs at {TRACEFS}: {source}\n\
         give the agent CAP_DAC_READ_SEARCH (the packaged systemd unit does), or run it as root"
    )]
    TracefsDenied {
        /// The error from stat(2).
        source: io::Error,
    },
    /// The kernel was built without BTF.
    #[error(
        "the kernel has no BTF ({path} is missing)\n\
         the probes need a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf {
        /// Where it was looked for.
        path: String,
    },
    /// tracefs was not mounted and mounting it failed.
    #[error(
        "tracefs is not mounted at {TRACEFS} and mounting it failed: {source}\n\
         mount it with: mount -t tracefs tracefs {TRACEFS}"
    )]
    NoTracefs {
        /// The error from mount(2).
        source: io::Error,
    },
    /// The kernel's BTF could not be parsed for attaching the BTF
    /// tracepoint programs.
    #[error(
        "failed to parse the kernel's BTF at {path}: {source}\n\
         the probes need the running kernel's own BTF (CONFIG_DEBUG_INFO_BTF=y)"
    )]
    KernelBtf {
        /// The file.
        path: String,
        /// aya's error.
        source: aya::BtfError,
    },
    /// The kernel's BTF exists but could neither be mapped nor read.
    #[error(
        "cannot read the kernel's BTF at {path}: {source}\n\
         the probes need the running kernel's own BTF, readable by root (CONFIG_DEBUG_INFO_BTF=y)"
    )]
    UnreadableBtf {
        /// The file.
        path: String,
        /// The cause.
        source: BtfError,
    },
    /// The kernel's BTF lacks a struct field the scheduler programs read.
    #[error(
        "cannot find the kernel fields the probes read: {source}\n{}",
        btf::NEEDS
    )]
    KernelFields {
        /// The cause.
        source: BtfError,
    },
    /// The `kvm:kvm_exit` format file could not be read or lacks its field.
    #[error(
        "cannot read the kvm:kvm_exit field offsets: {source}\n\
         unload and reload the kvm module, or report this kernel's format file"
    )]
    Offsets {
        /// The cause.
        source: FormatError,
    },
    /// The kernel refused the object (a map, BTF, or a program).
    #[error(
        "failed to load the eBPF object: {source}\n\
         was collector-ebpf rebuilt with cargo xtask build-ebpf?"
    )]
    Load {
        /// aya's error, with the verifier log for a refused program.
        source: EbpfError,
    },
    /// The arrays the agent reads every second could not be mapped.
    #[error(
        "failed to map the eBPF arrays into the agent: {source}\n\
         the probes need Linux 5.5 or later (BPF_F_MMAPABLE arrays)"
    )]
    Mmap {
        /// The error from mmap(2).
        source: io::Error,
    },
    /// A program could not be loaded or attached.
    #[error("failed to attach eBPF program `{program}` to tracepoint {tracepoint}: {source}")]
    Attach {
        /// The program's name in the object.
        program: &'static str,
        /// `category:name` of the tracepoint.
        tracepoint: &'static str,
        /// aya's error.
        source: ProgramError,
    },
    /// The object lacks a program or map the agent expects.
    #[error(
        "the eBPF object has no {kind} `{name}`\n\
         was collector-ebpf rebuilt with cargo xtask build-ebpf?"
    )]
    Missing {
        /// `program` or `map`.
        kind: &'static str,
        /// Its name.
        name: &'static str,
    },
    /// A map has another type or value size than the agent expects.
    #[error(
        "map `{name}` does not match the agent: {source}\n\
         was collector-ebpf rebuilt with cargo xtask build-ebpf?"
    )]
    MapMismatch {
        /// The map's name.
        name: &'static str,
        /// aya's error.
        source: aya::maps::MapError,
    },
}

/// How to load the probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOptions {
    /// How many threads can be watched at once: `max_entries` of `WATCHED`
    /// and of every per-slot array. Each slot costs about 27 KiB of kernel
    /// memory (two histograms).
    pub max_watched: u32,
    /// The running kernel's BTF: [`KERNEL_BTF`] but in tests of the
    /// failure paths.
    pub btf: PathBuf,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            max_watched: DEFAULT_MAX_WATCHED,
            btf: PathBuf::from(KERNEL_BTF),
        }
    }
}

/// What the probes found in the kernel when they loaded, for
/// `hyper-stats selftest` to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KernelFeatures {
    /// Whether the BTF file ([`ProbeOptions::btf`]) was mapped or read.
    pub(crate) btf_source: btf::BtfSource,
    /// The offsets the programs were loaded with.
    pub(crate) offsets: hyper_stats_ebpf::KernelOffsets,
    /// Whether the KVM tracepoint programs are attached.
    pub(crate) kvm_attached: bool,
}

/// The attached programs: `(name, program type, tracepoint)`.
pub(crate) fn attached_programs(
    kvm_attached: bool,
) -> Vec<(&'static str, &'static str, &'static str)> {
    let sched = SCHED_PROGRAMS.iter().map(|&(n, t)| (n, "tp_btf", t));
    let kvm = KVM_PROGRAMS.iter().map(|&(n, t)| (n, "tracepoint", t));
    sched.chain(kvm.filter(|_| kvm_attached)).collect()
}

/// The scheduler programs, BTF tracepoints named after their tracepoint,
/// always attached.
const SCHED_PROGRAMS: [(&str, &str); 3] = [
    (program::SCHED_SWITCH, "sched_switch"),
    (program::SCHED_WAKEUP, "sched_wakeup"),
    (program::SCHED_WAKEUP_NEW, "sched_wakeup_new"),
];

/// The KVM tracepoints and their programs, attached when the kvm module
/// has registered them.
const KVM_PROGRAMS: [(&str, &str); 2] = [
    (program::KVM_EXIT, "kvm:kvm_exit"),
    (program::KVM_ENTRY, "kvm:kvm_entry"),
];

/// The loaded and attached probes. Dropping this detaches them.
pub struct Probes {
    /// Owns the programs and their links; kept for as long as the probes
    /// should run.
    ebpf: Ebpf,
    /// The per-thread maps: which threads are watched, what they recorded.
    threads: ThreadMaps,
    /// See [`hyper_stats_ebpf::STATS`].
    stats: PerCpuArray<MapData, u64>,
    /// What the kernel offered.
    features: KernelFeatures,
}

impl Probes {
    /// Checks what the probes need, then loads the embedded object with
    /// this kernel's field offsets and attaches every program.
    pub fn load(options: &ProbeOptions) -> Result<Self, ProbesOff> {
        let object = object()?;
        let btf_path = options.btf.as_path();
        check_environment(btf_path)?;
        let tracefs = Path::new(TRACEFS);
        let path = || btf_path.display().to_string();
        let (fields_btf, btf_source) =
            btf::open(btf_path).map_err(|source| ProbesOff::UnreadableBtf {
                path: path(),
                source,
            })?;
        let mut offsets =
            btf::read_offsets(&fields_btf).map_err(|source| ProbesOff::KernelFields { source })?;
        drop(fields_btf);
        let kvm_exit_reason =
            format::kvm_exit_reason(tracefs).map_err(|source| ProbesOff::Offsets { source })?;
        if let Some(offset) = kvm_exit_reason {
            offsets.kvm_exit_reason = offset;
        }
        let kernel_btf = Btf::parse_file(btf_path, Endianness::default()).map_err(|source| {
            ProbesOff::KernelBtf {
                path: path(),
                source,
            }
        })?;

        let mut loader = EbpfLoader::new();
        loader.override_global(KERNEL_OFFSETS, &offsets, true);
        for map in [
            WATCHED,
            THREAD_STATE,
            THREAD_COUNTERS,
            RUNQ_HIST,
            ONCPU_HIST,
            KVM_EXITS,
        ] {
            loader.map_max_entries(map, options.max_watched);
        }
        let mut ebpf = loader
            .load(object)
            .map_err(|source| ProbesOff::Load { source })?;

        for (name, tracepoint) in SCHED_PROGRAMS {
            attach_btf_tracepoint(&mut ebpf, &kernel_btf, name, tracepoint)?;
        }
        let kvm_attached = kvm_exit_reason.is_some();
        if kvm_attached {
            for (name, tracepoint) in KVM_PROGRAMS {
                attach_tracepoint(&mut ebpf, name, tracepoint)?;
            }
        }

        let threads = ThreadMaps::new(
            take_map(&mut ebpf, WATCHED)?,
            take_map(&mut ebpf, THREAD_STATE)?,
            take_map(&mut ebpf, THREAD_COUNTERS)?,
            take_map(&mut ebpf, RUNQ_HIST)?,
            take_map(&mut ebpf, ONCPU_HIST)?,
            take_map(&mut ebpf, KVM_EXITS)?,
        )
        .map_err(|source| ProbesOff::Mmap { source })?;
        let stats = take_map(&mut ebpf, STATS)?;
        Ok(Self {
            ebpf,
            threads,
            stats,
            features: KernelFeatures {
                btf_source,
                offsets,
                kvm_attached,
            },
        })
    }

    /// The kernel memory the probes' maps hold, as the kernel accounts it
    /// (`memlock` in each map's fdinfo); 0 for a map it does not say.
    pub fn kernel_map_bytes(&self) -> u64 {
        use aya::maps::IterableMap as _;
        self.threads.kernel_bytes() + memlock(self.stats.map())
    }

    /// Whether `kvm:kvm_exit`/`kvm:kvm_entry` are attached (the kvm module
    /// is loaded). They fire only for guests that run under KVM.
    pub(crate) fn kvm_attached(&self) -> bool {
        self.features.kvm_attached
    }

    /// What the kernel offered the probes.
    pub(crate) fn features(&self) -> &KernelFeatures {
        &self.features
    }

    /// The watched threads: set them with [`ThreadMaps::set_watched`] and
    /// read them each interval with [`ThreadMaps::read`].
    pub fn threads(&mut self) -> &mut ThreadMaps {
        &mut self.threads
    }

    /// The counters in [`STATS`], summed over the CPUs, in [`Stat::ALL`]
    /// order. They only grow while the probes are attached.
    pub fn stats(&self) -> Result<Vec<(Stat, u64)>, MapError> {
        Stat::ALL
            .iter()
            .map(|&stat| {
                let per_cpu = self.stats.get(&stat.index(), 0)?;
                Ok((stat, per_cpu.iter().sum()))
            })
            .collect()
    }

    /// Runs the KVM handlers on the calling thread through
    /// `BPF_PROG_TEST_RUN`: an exit with `reason` when `Some`, an entry when
    /// `None`. For tests: the KVM tracepoints never fire on a host without
    /// hardware virtualization, and the kernel cannot test-run tracepoint
    /// programs, so raw tracepoint drivers call the same handlers.
    pub fn kvm_test_run(&mut self, exit_reason: Option<u32>) -> Result<(), ProgramError> {
        let name = match exit_reason {
            Some(_) => program::KVM_EXIT_TEST,
            None => program::KVM_ENTRY_TEST,
        };
        let program: &mut RawTracePoint = self
            .ebpf
            .program_mut(name)
            .ok_or(ProgramError::NotLoaded)?
            .try_into()?;
        if program.fd().is_err() {
            program.load()?;
        }
        let mut opts = RawTracePointRunOptions::new();
        opts.args[0] = u64::from(exit_reason.unwrap_or(0));
        program.test_run(opts)?;
        Ok(())
    }
}

/// The kernel memory of `map`: the `memlock` line of its fdinfo.
pub(crate) fn memlock(map: &MapData) -> u64 {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let fd = map.fd().as_fd().as_raw_fd();
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Checks the capabilities, BTF and tracefs, mounting tracefs if it is
/// not.
fn check_environment(btf: &Path) -> Result<(), ProbesOff> {
    let missing = caps::missing_for_probes(caps::effective());
    if !missing.is_empty() {
        // Safety: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        return Err(ProbesOff::MissingCapability {
            missing: missing.join(" and "),
            euid,
        });
    }
    if !btf.exists() {
        return Err(ProbesOff::NoBtf {
            path: btf.display().to_string(),
        });
    }
    match std::fs::metadata(Path::new(TRACEFS).join("events")) {
        Ok(events) if events.is_dir() => {}
        Err(source) if source.kind() == io::ErrorKind::PermissionDenied => {
            return Err(ProbesOff::TracefsDenied { source });
        }
        _ => mount_tracefs().map_err(|source| ProbesOff::NoTracefs { source })?,
    }
    Ok(())
}

/// `mount -t tracefs tracefs /sys/kernel/tracing`.
fn mount_tracefs() -> io::Result<()> {
    let c = |s: &str| CString::new(s).expect("no NUL in a constant");
    let (source, target, fstype) = (c("tracefs"), c(TRACEFS), c("tracefs"));
    // Safety: every pointer is a valid NUL-terminated string that outlives
    // the call; a null data argument is allowed.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Loads the program `name` and attaches it to `tracepoint`, given as
/// `category:name` the way the kernel's `events/` directory names it.
fn attach_tracepoint(
    ebpf: &mut Ebpf,
    name: &'static str,
    tracepoint: &'static str,
) -> Result<(), ProbesOff> {
    let (category, event) = tracepoint
        .split_once(':')
        .expect("tracepoints are named category:name");
    let program: &mut TracePoint = program_mut(ebpf, name, tracepoint)?;
    let attach_err = attach_error(name, tracepoint);
    program.load().map_err(attach_err)?;
    program.attach(category, event).map_err(attach_err)?;
    Ok(())
}

/// Loads the BTF tracepoint program `name` for the kernel tracepoint
/// `tracepoint` and attaches it.
fn attach_btf_tracepoint(
    ebpf: &mut Ebpf,
    btf: &Btf,
    name: &'static str,
    tracepoint: &'static str,
) -> Result<(), ProbesOff> {
    let program: &mut BtfTracePoint = program_mut(ebpf, name, tracepoint)?;
    let attach_err = attach_error(name, tracepoint);
    program.load(tracepoint, btf).map_err(attach_err)?;
    program.attach().map_err(attach_err)?;
    Ok(())
}

/// The program `name` of `ebpf` as the program type `P`, for attaching to
/// `tracepoint`.
fn program_mut<'a, P>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
    tracepoint: &'static str,
) -> Result<&'a mut P, ProbesOff>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(ProbesOff::Missing {
            kind: "program",
            name,
        })?
        .try_into()
        .map_err(attach_error(name, tracepoint))
}

/// Wraps aya's error for the program `name` on `tracepoint`.
fn attach_error(
    name: &'static str,
    tracepoint: &'static str,
) -> impl Fn(ProgramError) -> ProbesOff + Copy {
    move |source| ProbesOff::Attach {
        program: name,
        tracepoint,
        source,
    }
}

/// Takes the map `name` out of `ebpf`, typed.
fn take_map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, ProbesOff>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(ProbesOff::Missing { kind: "map", name })?;
    M::try_from(map).map_err(|source| ProbesOff::MapMismatch { name, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_off_messages_name_the_cause_and_the_fix() {
        let err = ProbesOff::NotBuilt {
            reason: "bpf-linker is not on PATH",
        };
        let text = err.to_string();
        let (first, fix) = text.split_once('\n').expect("a fix on the second line");
        assert_eq!(
            first,
            "the eBPF object was not built into this binary: bpf-linker is not on PATH"
        );
        assert_eq!(
            fix,
            "build it with: cargo xtask setup && cargo xtask build-ebpf"
        );
    }

    #[test]
    fn object_is_embedded_or_says_why_not() {
        match object() {
            Ok(bytes) => assert_eq!(&bytes[..4], b"\x7fELF"),
            Err(ProbesOff::NotBuilt { reason }) => assert!(!reason.is_empty()),
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
}
