//! `cargo xtask test`: the whole test suite, as CI runs it.
//!
//! 1. formatting and clippy, warnings as errors;
//! 2. the unit tests of every crate (no daemon, no root needed);
//! 3. `lab kernels`: the agent's selftest on the host's kernel and on each
//!    kernel in `lab/kernels.txt`, booted directly under QEMU;
//! 4. the lab: real libvirtd and QEMU guests (`lab up`), then every
//!    integration test marked `#[ignore = "needs the lab..."]` (including
//!    the eBPF probe tests, which need root), one at a time since they stop
//!    and start guests and libvirtd. (`scale` needs no lab, only root:
//!    300 threads of its own watched with `--watch-pid`.) `package`
//!    installs the Debian package that `cargo xtask package` built before
//!    the lab came up, runs it as its unit would, and purges it.
//!
//! Every build here requires the eBPF object (`HYPER_STATS_EBPF=require`).
//!
//! A lab this task brought up is taken down again at the end; one that was
//! already running is left as it was.

use std::process::Command;

use anyhow::Result;

use crate::util::{run, workspace_root};
use crate::{build_ebpf, lab, package};

/// Integration test targets that run against the lab.
const LAB_TESTS: &[&str] = &[
    "lab",
    "libvirt_conn",
    "selftest",
    "ebpf_probes",
    "ebpf_lab",
    "nagios",
    "top",
    "carbon",
    "shared_dirs",
    "stale",
    "scale",
    "dashboard",
    "package",
];

/// The variable that tells `collector/tests/package.rs` which `.deb` to
/// install.
const DEB_VAR: &str = "HYPER_STATS_DEB";

/// Guests the integration tests run against.
const LAB_GUESTS: u32 = 2;

pub fn run_all() -> Result<()> {
    let root = workspace_root();
    // Every build requires the eBPF object: a CI machine without the bpf
    // toolchain must fail, not quietly test an agent without probes.
    let cargo = || {
        let mut c = Command::new(env!("CARGO"));
        c.current_dir(&root).env(build_ebpf::MODE_VAR, "require");
        c
    };
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo().args(["test", "--workspace"]))?;
    lab::run(lab::Action::Kernels)?;
    let deb = package::build()?;

    let was_up = lab::is_up()?;
    lab::run(lab::Action::Up { guests: LAB_GUESTS })?;
    // Every test binary runs even after one fails, so one run shows every
    // failure.
    let mut args = vec!["test", "--no-fail-fast", "--package", "hyper-stats"];
    for t in LAB_TESTS {
        args.extend(["--test", t]);
    }
    args.extend(["--", "--ignored", "--test-threads=1", "--nocapture"]);
    let result = run(cargo().args(&args).env(DEB_VAR, &deb));
    if !was_up {
        lab::run(lab::Action::Down)?;
    }
    result
}
