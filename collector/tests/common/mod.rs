//! Helpers the lab integration tests share: `virsh` against the lab's
//! libvirtd and the list of running lab guests, the Nagios plugin build,
//! and, in their own files, the agent runner and its [`Point`]s
//! (`agent.rs`), daemons stopped by their pid (`daemon.rs`), the Nagios
//! core fixture (`nagios.rs`), a Unix socket proxy to libvirtd
//! (`proxy.rs`), a fixture shared by the cases of one test binary and
//! stopped at its exit (`shared.rs`), free ports (`ports.rs`), the unix
//! clock (`clock.rs`), and for the dashboard a Graphite of the test's own
//! (`graphite.rs`), whisper files written directly (`whisper.rs`), a
//! loopback HTTP client (`http.rs`) and Chromium through WebDriver
//! (`webdriver.rs`).
//!
//! Each test target compiles this module on its own and uses part of it
//! (hence the allows: a target leaves some helpers and re-exports unused).
#![allow(dead_code, unused_imports)]

use std::process::Command;

mod agent;
mod clock;
mod daemon;
pub mod graphite;
pub mod http;
mod nagios;
mod ports;
mod proxy;
mod shared;
pub mod webdriver;
pub mod whisper;

pub use agent::{Agent, AgentBuilder, Finished, Point};
pub use clock::now_unix;
pub use daemon::Daemon;
pub use nagios::{NAGIOS, Nagios, NagiosConfig, service_block, service_state};
pub use ports::{free_port, free_ports};
pub use proxy::Proxy;
pub use shared::{Shared, SharedGuard};

/// Asks `f` every 100 ms until it gives something, for at most
/// `timeout`; panics naming `what` when it never does.
pub fn wait_for<T>(
    what: &str,
    timeout: std::time::Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let until = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The lab's libvirt connection.
pub const URI: &str = "qemu:///system";

/// Runs `virsh -c URI ARGS`, panicking with its stderr if it fails;
/// returns its stdout.
pub fn virsh(args: &[&str]) -> String {
    let out = Command::new("virsh")
        .args(["-c", URI])
        .args(args)
        .output()
        .expect("virsh runs");
    assert!(
        out.status.success(),
        "virsh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The names of the running lab guests, sorted; panics if there are none.
pub fn lab_guests() -> Vec<String> {
    let mut guests: Vec<String> = virsh(&["list", "--name", "--state-running"])
        .lines()
        .map(str::trim)
        .filter(|n| n.starts_with("hs-lab-"))
        .map(str::to_owned)
        .collect();
    guests.sort();
    assert!(
        !guests.is_empty(),
        "no lab guests running: run `cargo xtask lab up` first"
    );
    guests
}

/// The workspace root.
pub fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds check_hyper_stats in a target directory of its own (the test's
/// cargo holds the workspace's) and copies it into `dest`, mode 0755, where
/// user `nagios` can run it.
pub fn build_plugin(dest: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let target = repo().join("target").join("nagios-it");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            "check-hyper-stats",
            "--bin",
            "check_hyper_stats",
        ])
        .arg("--target-dir")
        .arg(&target)
        .current_dir(repo())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building check_hyper_stats failed");
    let bin = dest.join("check_hyper_stats");
    std::fs::copy(target.join("debug/check_hyper_stats"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// The uid and gid of user `nagios` (Debian's nagios4-core creates it).
pub fn nagios_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, "nagios"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("user nagios exists (cargo xtask setup installs nagios4-core)")
    };
    (id("-u"), id("-g"))
}
