//! Developer tasks for hyper-stats: `cargo xtask <task>`.
//!
//! Each task lives in its own module and is a plain function over the
//! workspace root; this file only parses the command line and reports the
//! error chain once.

mod bench;
mod build_ebpf;
mod demo;
mod lab;
mod package;
mod setup;
mod synthetic;
mod sys;
mod test;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Developer tasks for hyper-stats")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install everything the project needs on a fresh Debian 12 machine
    /// (Debian packages, rust-src, bpf-linker). Idempotent.
    Setup,
    /// Build the eBPF programs (needs nightly rust-src and bpf-linker).
    BuildEbpf,
    /// Run the lab of real libvirt/QEMU guests.
    Lab {
        #[command(subcommand)]
        action: lab::Action,
    },
    /// Run every test: fmt, clippy, unit tests, then the integration tests
    /// against the lab (what CI runs).
    Test,
    /// Build the Debian package (target/debian/): agent, systemd unit,
    /// config, Nagios plugin, man pages, examples.
    Package,
    /// Set up, start the lab and the agent, and show the guests live in
    /// `hyper-stats top` (q quits and stops the agent).
    Demo(demo::Args),
    /// Run a benchmark suite; reports go to bench/runs/.
    Bench {
        #[command(subcommand)]
        suite: bench::Suite,
    },
    /// Start a synthetic vCPU load (processes `synth-NNN` with threads
    /// `CPU <n>/TCG`) and keep it until killed; prints the pids.
    #[command(hide = true)]
    SyntheticGuests(synthetic::GuestsArgs),
    /// One pseudo-guest of a synthetic load (started by the load itself).
    #[command(hide = true)]
    SyntheticGuest(synthetic::GuestArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run(),
        Task::BuildEbpf => build_ebpf::run(),
        Task::Lab { action } => lab::run(action),
        Task::Test => test::run_all(),
        Task::Package => package::run_package(),
        Task::Demo(args) => demo::run_demo(&args),
        Task::Bench { suite } => bench::run(suite),
        Task::SyntheticGuests(args) => synthetic::run_guests(&args),
        Task::SyntheticGuest(args) => synthetic::run_guest(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
