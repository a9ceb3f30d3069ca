//! Which threads to watch: the vCPU threads of the running guests.
//!
//! QEMU names each vCPU thread `CPU <n>/KVM` (or `CPU <n>/TCG` without
//! hardware virtualization), and libvirt's QEMU driver writes each running
//! domain's QEMU pid to `<run dir>/<name>.pid`. This module turns a domain
//! name into its vCPU thread ids by reading both; it keeps no state. A
//! domain that stopped between the listing and the read simply has no
//! threads (the error says which file was missing).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Where libvirt's QEMU driver keeps its run files (system instance).
pub(crate) const LIBVIRT_QEMU_RUN_DIR: &str = "/run/libvirt/qemu";

/// Where the kernel shows processes.
pub(crate) const PROC: &str = "/proc";

/// A vCPU thread of a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct VcpuThread {
    /// The vCPU's index in the guest (`vcpu.<n>` in libvirt's stats).
    pub(crate) vcpu: u32,
    /// The thread id on the host.
    pub(crate) tid: u32,
    /// Whether the vCPU runs under KVM (`CPU n/KVM`), not emulated
    /// (`CPU n/TCG`): only then can it have KVM exits.
    pub(crate) kvm: bool,
}

/// Why a domain's vCPU threads could not be listed.
#[derive(Debug, Error)]
pub(crate) enum TargetError {
    /// A file or directory could not be read.
    #[error("failed to read {}: {source}", path.display())]
    Read {
        /// What was read.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The pid file did not hold a pid.
    #[error("{} does not hold a pid: {content:?}", path.display())]
    BadPid {
        /// The pid file.
        path: PathBuf,
        /// What it held.
        content: String,
    },
}

/// The vCPU index and accelerator in a QEMU thread name: `CPU 3/KVM`
/// gives `(3, "KVM")`, `CPU 3/TCG` gives `(3, "TCG")`.
pub(crate) fn parse_vcpu_comm(comm: &str) -> Option<(u32, &str)> {
    let rest = comm.trim_end().strip_prefix("CPU ")?;
    let (index, accel) = rest.split_once('/')?;
    if accel.is_empty() {
        return None;
    }
    Some((index.parse().ok()?, accel))
}

/// The QEMU pid of the running domain `name`, from libvirt's pid file.
pub(crate) fn qemu_pid(run_dir: &Path, name: &str) -> Result<u32, TargetError> {
    let path = run_dir.join(format!("{name}.pid"));
    let content = fs::read_to_string(&path).map_err(|source| TargetError::Read {
        path: path.clone(),
        source,
    })?;
    content
        .trim()
        .parse()
        .map_err(|_| TargetError::BadPid { path, content })
}

/// The vCPU threads of process `pid`, by vCPU index.
pub(crate) fn vcpu_threads(proc_root: &Path, pid: u32) -> Result<Vec<VcpuThread>, TargetError> {
    let tasks = proc_root.join(pid.to_string()).join("task");
    let entries = fs::read_dir(&tasks).map_err(|source| TargetError::Read {
        path: tasks.clone(),
        source,
    })?;
    let mut threads: Vec<VcpuThread> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let tid = entry.file_name().to_str()?.parse().ok()?;
            // A thread that exited since the listing has no comm: skip it.
            let comm = fs::read_to_string(entry.path().join("comm")).ok()?;
            let (vcpu, accel) = parse_vcpu_comm(&comm)?;
            Some(VcpuThread {
                vcpu,
                tid,
                kvm: accel == "KVM",
            })
        })
        .collect();
    threads.sort();
    Ok(threads)
}

/// How many threads on the host are named like vCPU threads: what the
/// probes' maps are sized from when they load. Processes and threads that
/// vanish meanwhile are skipped.
pub(crate) fn host_vcpu_threads(proc_root: &Path) -> usize {
    let Ok(processes) = fs::read_dir(proc_root) else {
        return 0;
    };
    processes
        .filter_map(Result::ok)
        .filter(|p| {
            p.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter_map(|p| fs::read_dir(p.path().join("task")).ok())
        .flat_map(|tasks| tasks.filter_map(Result::ok))
        .filter_map(|task| fs::read_to_string(task.path().join("comm")).ok())
        .filter(|comm| parse_vcpu_comm(comm).is_some())
        .count()
}

/// The name a process goes by (`/proc/PID/comm`), for a process watched
/// as a pseudo-domain (`hyper-stats run --watch-pid`).
pub(crate) fn process_name(proc_root: &Path, pid: u32) -> Result<String, TargetError> {
    let path = proc_root.join(pid.to_string()).join("comm");
    fs::read_to_string(&path)
        .map(|comm| comm.trim_end().to_string())
        .map_err(|source| TargetError::Read { path, source })
}

/// The vCPU threads of the running domain `name`.
pub(crate) fn domain_vcpu_threads(name: &str) -> Result<Vec<VcpuThread>, TargetError> {
    let pid = qemu_pid(Path::new(LIBVIRT_QEMU_RUN_DIR), name)?;
    vcpu_threads(Path::new(PROC), pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_thread_names() {
        let cases = [
            ("CPU 0/KVM\n", Some((0, "KVM"))),
            ("CPU 12/TCG", Some((12, "TCG"))),
            ("CPU 1/", None),
            ("CPU x/KVM", None),
            ("qemu-system-x86", None),
            ("IO mon_iothread", None),
            ("worker", None),
        ];
        for (comm, want) in cases {
            assert_eq!(parse_vcpu_comm(comm), want, "{comm:?}");
        }
    }

    #[test]
    fn finds_the_vcpu_threads_of_a_domain() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let proc_root = dir.path().join("proc");
        fs::create_dir_all(&run).unwrap();
        fs::write(run.join("web-1.pid"), "4242").unwrap();
        fs::write(run.join("bad.pid"), "x\n").unwrap();
        for (tid, comm) in [
            (4242, "qemu-system-x86\n"),
            (4250, "CPU 1/KVM\n"),
            (4249, "CPU 0/TCG\n"),
            (4251, "worker\n"),
        ] {
            let task = proc_root.join("4242/task").join(tid.to_string());
            fs::create_dir_all(&task).unwrap();
            fs::write(task.join("comm"), comm).unwrap();
        }

        let pid = qemu_pid(&run, "web-1").unwrap();
        assert_eq!(
            vcpu_threads(&proc_root, pid).unwrap(),
            vec![
                VcpuThread {
                    vcpu: 0,
                    tid: 4249,
                    kvm: false
                },
                VcpuThread {
                    vcpu: 1,
                    tid: 4250,
                    kvm: true
                },
            ]
        );
        assert_eq!(host_vcpu_threads(&proc_root), 2);
        fs::write(proc_root.join("4242/comm"), "synth-1\n").unwrap();
        assert_eq!(process_name(&proc_root, 4242).unwrap(), "synth-1");
        assert!(process_name(&proc_root, 1).is_err());
        let err = qemu_pid(&run, "gone").unwrap_err().to_string();
        assert!(
            err.starts_with("failed to read ") && err.contains("gone.pid"),
            "{err}"
        );
        let err = qemu_pid(&run, "bad").unwrap_err().to_string();
        assert!(
            err.ends_with("bad.pid does not hold a pid: \"x\\n\""),
            "{err}"
        );
    }
}
