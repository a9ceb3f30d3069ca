//! Prepares this host for a hand-started libvirtd: the directories, user and
//! `qemu.conf` settings that Debian's packaging would make under systemd, and
//! the kernel bits the guests' taps need.
//!
//! Everything here is idempotent and checks before it changes anything, so
//! `lab up` runs it every time. It receives nothing and emits only notes on
//! what it changed; a failure names the file or command and stops `lab up`
//! before any daemon starts.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::cmd;

/// Directories libvirtd and QEMU expect and that are missing on a machine
/// without Debian's systemd units (they create them through tmpfiles).
const LIBVIRT_DIRS: &[&str] = &[
    "/var/log/libvirt/qemu",
    "/var/lib/libvirt/qemu",
    "/var/cache/libvirt/qemu",
    "/run/libvirt",
];

/// The user and group libvirt's QEMU driver looks up before it reads
/// `qemu.conf`; without them libvirtd fails to load the driver.
const QEMU_ACCOUNT: &str = "libvirt-qemu";

/// libvirt's QEMU driver configuration. QEMU must run as root here: the
/// guests' disks, consoles and kernels live in the workspace's target dir,
/// which the `libvirt-qemu` user cannot read.
const QEMU_CONF: &str = "/etc/libvirt/qemu.conf";

/// What `prepare` changed, so `lab up` can warn when a libvirtd that was
/// already running has not seen a new `qemu.conf`.
pub struct Prepared {
    /// `qemu.conf` was written or edited by this run.
    pub qemu_conf_changed: bool,
}

/// Makes the directories, the `libvirt-qemu` account, the `qemu.conf`
/// settings, IPv6 on new interfaces and `/dev/net/tun` ready.
pub fn prepare() -> Result<Prepared> {
    for dir in LIBVIRT_DIRS {
        fs::create_dir_all(dir).with_context(|| format!("failed to create {dir}"))?;
    }
    ensure_account()?;
    let qemu_conf_changed = ensure_qemu_conf(Path::new(QEMU_CONF))?;
    ensure_ipv6()?;
    ensure_tun()?;
    Ok(Prepared { qemu_conf_changed })
}

/// Creates the `libvirt-qemu` system group and user if they are missing.
fn ensure_account() -> Result<()> {
    let known = |db: &str| {
        Command::new("getent")
            .args([db, QEMU_ACCOUNT])
            .output()
            .is_ok_and(|out| out.status.success())
    };
    if !known("group") {
        cmd::capture(Command::new("groupadd").args(["--system", QEMU_ACCOUNT]))?;
        println!("lab: created group {QEMU_ACCOUNT}");
    }
    if !known("passwd") {
        cmd::capture(Command::new("useradd").args([
            "--system",
            "--gid",
            QEMU_ACCOUNT,
            "--home-dir",
            "/var/lib/libvirt",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            QEMU_ACCOUNT,
        ]))?;
        println!("lab: created user {QEMU_ACCOUNT}");
    }
    Ok(())
}

/// Sets `user = "root"` and `group = "root"` in `qemu.conf`, creating the
/// file if needed. Returns whether the file changed.
fn ensure_qemu_conf(path: &Path) -> Result<bool> {
    let old = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
    };
    let new = with_root_qemu_user(&old);
    if new == old {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    }
    fs::write(path, new).with_context(|| format!("failed to write {}", path.display()))?;
    println!("lab: set user and group \"root\" in {}", path.display());
    Ok(true)
}

/// `qemu.conf` text with every active `user =` / `group =` setting replaced by
/// `"root"` (appended when absent); everything else is kept as it was.
fn with_root_qemu_user(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut seen_user = false;
    let mut seen_group = false;
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        let active = line.contains('=') && !line.trim_start().starts_with('#');
        if active && key == "user" {
            out.push_str("user = \"root\"\n");
            seen_user = true;
        } else if active && key == "group" {
            out.push_str("group = \"root\"\n");
            seen_group = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !seen_user || !seen_group {
        out.push_str("# Set by `cargo xtask lab up` (hyper-stats): QEMU runs as root.\n");
    }
    if !seen_user {
        out.push_str("user = \"root\"\n");
    }
    if !seen_group {
        out.push_str("group = \"root\"\n");
    }
    out
}

/// Makes new interfaces (the guests' taps) get an IPv6 link-local address,
/// the only address the lab's guest traffic uses.
fn ensure_ipv6() -> Result<()> {
    for scope in ["all", "default"] {
        let knob = format!("/proc/sys/net/ipv6/conf/{scope}/disable_ipv6");
        let Ok(value) = fs::read_to_string(&knob) else {
            bail!(
                "{knob} is missing: this kernel has no IPv6\nthe lab's guest traffic needs IPv6 link-local addresses"
            );
        };
        if value.trim() != "0" {
            fs::write(&knob, "0").with_context(|| format!("failed to write 0 to {knob}"))?;
            println!("lab: enabled IPv6 ({knob} = 0)");
        }
    }
    Ok(())
}

/// Makes sure `/dev/net/tun` exists: libvirt creates the guests' taps with it.
fn ensure_tun() -> Result<()> {
    let tun = Path::new("/dev/net/tun");
    if tun.exists() {
        return Ok(());
    }
    // The tun driver may be a module that nothing has loaded yet.
    let _ = Command::new("modprobe").arg("tun").status();
    if !tun.exists() {
        bail!(
            "/dev/net/tun is missing: the kernel has no tun driver\nthe lab's guest NICs are taps and need it"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_qemu_conf_gets_both_settings() {
        let text = with_root_qemu_user("");
        assert!(text.contains("\nuser = \"root\"\n"), "{text}");
        assert!(text.ends_with("group = \"root\"\n"), "{text}");
    }

    #[test]
    fn active_settings_are_replaced_and_comments_kept() {
        let old = "# user = \"qemu\"\nuser = \"libvirt-qemu\"\n  group=\"kvm\"\nvnc_listen = \"127.0.0.1\"\n";
        let text = with_root_qemu_user(old);
        assert_eq!(
            text,
            "# user = \"qemu\"\nuser = \"root\"\ngroup = \"root\"\nvnc_listen = \"127.0.0.1\"\n"
        );
    }

    #[test]
    fn edit_is_idempotent() {
        let once = with_root_qemu_user("stdio_handler = \"logd\"\n");
        assert_eq!(with_root_qemu_user(&once), once);
    }
}
