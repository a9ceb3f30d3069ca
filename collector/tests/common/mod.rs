//! Helpers the lab integration tests share: `virsh` against the lab's
//! libvirtd and the list of running lab guests.
//!
//! Each test target compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::process::Command;

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
