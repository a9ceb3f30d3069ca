//! Running host programs for `setup` and `lab`: capture their output, find
//! them on `PATH`, and talk to libvirt through `virsh`.
//!
//! Every helper puts the full command line (and the program's stderr, when it
//! was captured) into its error, so a failure names what ran and what it said.
//! Nothing here retries; callers decide what a failure means.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The libvirt connection the lab uses: the system QEMU driver of the
/// libvirtd we start (or find) on this host.
pub const LIBVIRT_URI: &str = "qemu:///system";

/// The command line of `cmd` as a user would type it (program and arguments,
/// space separated), for error messages.
pub fn show(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `cmd` with no stdin and returns its stdout; fails with the command
/// line, the exit status and the program's stderr if it does not succeed.
pub fn capture(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to start `{}`", show(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed with {}: {}",
            show(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with its output shown to the user (for long steps such as
/// `apt-get install`); fails with the command line if it does not succeed.
pub fn run_shown(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("failed to start `{}`", show(cmd)))?;
    if !status.success() {
        bail!("`{}` failed with {status}", show(cmd));
    }
    Ok(())
}

/// The full path of `program` if it is an executable file in a `PATH`
/// directory (the way a shell finds it), else `None`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Fails with a hint to run `cargo xtask setup` unless every program in
/// `needed` (program, the Debian package that ships it) is on `PATH`.
pub fn require_programs(needed: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<String> = needed
        .iter()
        .filter(|(program, _)| find_program(program).is_none())
        .map(|(program, package)| format!("{program} (Debian package {package})"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "not installed: {}\nrun `cargo xtask setup` to install them",
            missing.join(", ")
        );
    }
    Ok(())
}

/// A `virsh` command on [`LIBVIRT_URI`], quiet (no headers), ready for
/// arguments.
pub fn virsh() -> Command {
    let mut cmd = Command::new("virsh");
    cmd.args(["-c", LIBVIRT_URI, "-q"]);
    cmd
}

/// Whether this process runs as root (the lab and setup change the host).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Fails unless this process runs as root, naming the task that needs it.
pub fn require_root(task: &str) -> Result<()> {
    if !is_root() {
        bail!("`cargo xtask {task}` changes the host and must run as root\nrun it again as root");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_joins_program_and_args() {
        let mut cmd = Command::new("virsh");
        cmd.args(["-c", "qemu:///system", "list"]);
        assert_eq!(show(&cmd), "virsh -c qemu:///system list");
    }

    #[test]
    fn capture_reports_stderr_and_command() {
        let err = capture(Command::new("sh").args(["-c", "echo boom >&2; exit 3"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sh -c"), "{err}");
        assert!(err.contains("boom"), "{err}");
    }

    #[test]
    fn find_program_finds_sh_not_nonsense() {
        assert!(find_program("sh").is_some());
        assert!(find_program("hs-no-such-program").is_none());
    }
}
