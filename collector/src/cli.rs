//! The agent's command line, as clap definitions: `main.rs` parses it,
//! and the man pages are generated from it (`cargo xtask package` runs
//! `collector/examples/manpage.rs`, which calls [`command`]), so the
//! `--help` text and `man hyper-stats` never disagree.

use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

use crate::sinks::Output;

/// The clap command of `hyper-stats`, for generating its man pages.
pub fn command() -> clap::Command {
    Cli::command()
}

/// The whole command line: global options and one command.
#[derive(Parser)]
#[command(
    name = "hyper-stats",
    version,
    about = "Per-VM statistics for libvirt/QEMU compute nodes"
)]
pub struct Cli {
    /// Config file (TOML). Default: /etc/hyper-stats/hyper-stats.toml if it
    /// exists.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands; each variant's doc comment is its `--help` text.
#[derive(Subcommand)]
pub enum Command {
    /// Sample every running domain and write datapoints to the outputs.
    Run {
        /// libvirt connection URI (overrides libvirt.uri).
        #[arg(long, value_name = "URI")]
        connect: Option<String>,
        /// Where datapoints go (default: json, unless Carbon is configured).
        #[arg(long, value_enum)]
        output: Vec<Output>,
        /// Also push every datapoint to Carbon at HOST:PORT (overrides
        /// carbon.address).
        #[arg(long, value_name = "HOST:PORT")]
        carbon: Option<String>,
        /// Stop after this long (e.g. `10s`, `5m`); default: run until
        /// SIGINT or SIGTERM.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Also probe the `CPU <n>/...` threads of process PID as the
        /// vCPUs of a pseudo-domain named after the process (uuid
        /// `pid-PID`), besides libvirt's guests: for benchmarks and tests
        /// with synthetic vCPU threads. Repeatable, or comma-separated.
        #[arg(long = "watch-pid", value_name = "PID", value_delimiter = ',')]
        watch_pids: Vec<u32>,
    },
    /// List running domains: UUID, name, QEMU pid and vCPU thread ids.
    Domains {
        /// libvirt connection URI (overrides libvirt.uri).
        #[arg(long, value_name = "URI")]
        connect: Option<String>,
        /// Print one JSON object per domain instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Validate the config file and print the effective settings.
    CheckConfig,
    /// Forward Nagios perfdata spool files (Graphios format) to Carbon.
    Graphios(crate::graphios::Args),
    /// Load the eBPF probes, watch one of this process' threads among busy
    /// spinners and compare with the kernel's own accounting (no libvirt
    /// needed). Exit 0 when every check agrees within 2%.
    Selftest(crate::selftest::Args),
    /// Show this host's guests live in the terminal, worst run-queue wait
    /// first, from the running agent's query socket.
    Top(crate::top::Args),
    /// Serve the browser dashboard over graphite-web (fleet and guest
    /// views, latency heatmaps).
    Dashboard(crate::dashboard::Args),
}
