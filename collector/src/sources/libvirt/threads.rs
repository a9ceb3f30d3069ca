//! Where a running domain's QEMU process and vCPU threads are: the host
//! thread ids the eBPF probes watch.
//!
//! libvirt's bulk stats carry no thread ids. The QEMU driver writes them to
//! its status file `<run dir>/<name>.xml` (`<vcpu id='0' pid='1234'/>`
//! inside `<domstatus pid='...'>`); when that file cannot be read, the
//! threads of the QEMU process named `CPU <n>/TCG` or `CPU <n>/KVM` are
//! used instead, with the pid from `<run dir>/<name>.pid`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

/// The QEMU driver's state directory for `qemu:///system`.
pub const QEMU_RUN_DIR: &str = "/run/libvirt/qemu";

/// A domain's host-side threads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainThreads {
    /// The QEMU process id.
    pub qemu_pid: u32,
    /// `(vCPU id, host thread id)`, by vCPU id.
    pub vcpus: Vec<(u32, u32)>,
}

/// Finds the QEMU pid and vCPU threads of the domain called `name`.
pub fn find(run_dir: &Path, name: &str) -> Result<DomainThreads> {
    let status = run_dir.join(format!("{name}.xml"));
    match std::fs::read_to_string(&status) {
        Ok(xml) => {
            let threads = parse_status(&xml)
                .with_context(|| format!("failed to parse {}", status.display()))?;
            if !threads.vcpus.is_empty() {
                return Ok(threads);
            }
            from_proc(threads.qemu_pid)
        }
        Err(_) => {
            let pid_file = run_dir.join(format!("{name}.pid"));
            let pid = std::fs::read_to_string(&pid_file)
                .with_context(|| format!("failed to read {}", pid_file.display()))?;
            let pid: u32 = pid.trim().parse().with_context(|| {
                format!("{} holds {:?}, not a pid", pid_file.display(), pid.trim())
            })?;
            from_proc(pid)
        }
    }
}

/// Reads the pid and vCPU threads from a libvirt QEMU status file.
pub fn parse_status(xml: &str) -> Result<DomainThreads> {
    let doc = roxmltree::Document::parse(xml)?;
    let root = doc.root_element();
    if root.tag_name().name() != "domstatus" {
        bail!(
            "root element is <{}>, expected <domstatus>",
            root.tag_name().name()
        );
    }
    let qemu_pid = root
        .attribute("pid")
        .context("<domstatus> has no pid attribute")?
        .parse()
        .context("<domstatus pid> is not a number")?;
    let mut vcpus = Vec::new();
    for node in root.children().filter(|n| n.has_tag_name("vcpus")) {
        for vcpu in node.children().filter(|n| n.has_tag_name("vcpu")) {
            let (Some(id), Some(pid)) = (vcpu.attribute("id"), vcpu.attribute("pid")) else {
                continue;
            };
            vcpus.push((id.parse()?, pid.parse()?));
        }
    }
    vcpus.sort_unstable();
    Ok(DomainThreads { qemu_pid, vcpus })
}

/// Finds vCPU threads by name (`CPU <n>/TCG`, `CPU <n>/KVM`) under
/// `/proc/<pid>/task`.
pub fn from_proc(qemu_pid: u32) -> Result<DomainThreads> {
    let task_dir = PathBuf::from(format!("/proc/{qemu_pid}/task"));
    let mut vcpus = Vec::new();
    for entry in std::fs::read_dir(&task_dir)
        .with_context(|| format!("failed to list {}", task_dir.display()))?
    {
        let entry = entry?;
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        if let Some(id) = vcpu_id_from_comm(comm.trim()) {
            vcpus.push((id, tid));
        }
    }
    vcpus.sort_unstable();
    Ok(DomainThreads { qemu_pid, vcpus })
}

/// The vCPU id in a QEMU vCPU thread name such as `CPU 1/TCG`.
fn vcpu_id_from_comm(comm: &str) -> Option<u32> {
    let rest = comm.strip_prefix("CPU ")?;
    let (id, accel) = rest.split_once('/')?;
    matches!(accel, "TCG" | "KVM" | "HVF" | "WHPX").then_some(())?;
    id.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_file_gives_pid_and_vcpus() {
        let xml = r#"<domstatus state='running' reason='booted' pid='4242'>
  <monitor path='/var/lib/libvirt/qemu/domain-1-x/monitor.sock' type='unix'/>
  <vcpus>
    <vcpu id='1' pid='4250'/>
    <vcpu id='0' pid='4249'/>
  </vcpus>
  <domain type='qemu'><name>x</name><vcpu>2</vcpu></domain>
</domstatus>"#;
        let t = parse_status(xml).unwrap();
        assert_eq!(t.qemu_pid, 4242);
        assert_eq!(t.vcpus, vec![(0, 4249), (1, 4250)]);
    }

    #[test]
    fn bad_status_files_are_errors() {
        assert!(parse_status("<domain/>").is_err());
        assert!(parse_status("<domstatus/>").is_err());
        assert!(parse_status("<domstatus pid='x'/>").is_err());
        assert!(parse_status("not xml").is_err());
    }

    #[test]
    fn thread_names() {
        assert_eq!(vcpu_id_from_comm("CPU 0/TCG"), Some(0));
        assert_eq!(vcpu_id_from_comm("CPU 12/KVM"), Some(12));
        assert_eq!(vcpu_id_from_comm("qemu-system-x86"), None);
        assert_eq!(vcpu_id_from_comm("CPU x/TCG"), None);
        assert_eq!(vcpu_id_from_comm("CPU 1/IO"), None);
    }
}
