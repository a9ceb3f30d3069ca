//! `cargo xtask build-ebpf`: build the eBPF programs into the agent.
//!
//! This owns no build logic: the one build path is `collector/build.rs`
//! (aya-build). This task runs the agent's build with
//! `HYPER_STATS_EBPF=require`, which turns the build script's "toolchain
//! missing, probes off" warning into an error that says what is missing.

use std::process::Command;

use anyhow::Result;

use crate::util::{self, workspace_root};

/// The variable `collector/build.rs` reads; `require` makes a missing bpf
/// toolchain an error instead of a warning.
pub const MODE_VAR: &str = "HYPER_STATS_EBPF";

/// Builds the agent (dev profile, what `cargo build` and `cargo test` use)
/// with the eBPF object embedded, or fails saying why it cannot.
pub fn run() -> Result<()> {
    util::run(&mut cargo_require(&["build", "--package", "hyper-stats"]))
}

/// A `cargo` command in the workspace root with the eBPF build required.
/// `cargo xtask test` can use it to run the root-only probe tests:
/// `cargo_require(&["test", "--package", "hyper-stats", "--test",
/// "ebpf_probes", "--", "--ignored"])`.
pub fn cargo_require(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(workspace_root())
        .env(MODE_VAR, "require")
        .args(args);
    cmd
}

/// Builds the release agent with its eBPF object required (the build fails
/// rather than produce an agent without probes) and returns its path: the
/// binary the kernel matrix boots and the probe benchmark measures.
pub fn release_agent() -> Result<std::path::PathBuf> {
    util::run(&mut cargo_require(&[
        "build",
        "--release",
        "--package",
        "hyper-stats",
        "--bin",
        "hyper-stats",
    ]))?;
    Ok(workspace_root().join("target/release/hyper-stats"))
}
