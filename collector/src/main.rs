//! `hyper-stats`: the agent's command line.
//!
//! This file parses arguments, sets up logging, runs one command and is
//! the only place that prints a top-level error and picks the exit code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use hyper_stats::config::{Config, Overrides};
use hyper_stats::pipeline;
use hyper_stats::sinks::Output;

#[derive(Parser)]
#[command(
    name = "hyper-stats",
    version,
    about = "Per-VM statistics for libvirt/QEMU compute nodes"
)]
struct Cli {
    /// Config file (TOML). Default: /etc/hyper-stats/hyper-stats.toml if it
    /// exists.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    Graphios(hyper_stats::graphios::Args),
    /// Load the eBPF probes, watch one of this process' threads among busy
    /// spinners and compare with the kernel's own accounting (no libvirt
    /// needed). Exit 0 when every check agrees within 2%.
    Selftest(hyper_stats::selftest::Args),
    /// Show this host's guests live in the terminal, worst run-queue wait
    /// first, from the running agent's query socket.
    Top(hyper_stats::top::Args),
}

/// The agent's allocator: mimalloc, not glibc's malloc. The rollup and
/// the sinks allocate and free tens of thousands of small values a second
/// on a dense host; glibc spent a quarter of the agent's CPU in malloc and
/// free there and let RSS creep up with fragmentation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("hyper-stats: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("HYPER_STATS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn run(cli: Cli) -> Result<ExitCode> {
    let config = |overrides| Config::load(cli.config.as_deref(), overrides);
    match cli.command {
        // Needs no config: it is what an operator runs on a new kernel
        // before anything else is set up.
        Command::Selftest(args) => Ok(match hyper_stats::selftest::run(&args)? {
            true => ExitCode::SUCCESS,
            false => ExitCode::FAILURE,
        }),
        Command::Top(args) => {
            hyper_stats::top::run(&args, cli.config.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            connect,
            output,
            carbon,
            duration,
            watch_pids,
        } => {
            let config = config(Overrides { connect, carbon })?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("failed to start the async runtime")?;
            let args = pipeline::RunArgs {
                outputs: output,
                duration,
                watch_pids,
            };
            runtime.block_on(pipeline::run(&config, &args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Graphios(args) => {
            let carbon = args.carbon.clone();
            let config = config(Overrides {
                carbon,
                ..Overrides::default()
            })?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("failed to start the async runtime")?;
            runtime.block_on(hyper_stats::graphios::run(&config, &args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Domains { connect, json } => {
            let config = config(Overrides {
                connect,
                ..Overrides::default()
            })?;
            hyper_stats::domains::run(&config, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig => {
            print!("{}", config(Overrides::default())?.describe());
            Ok(ExitCode::SUCCESS)
        }
    }
}
