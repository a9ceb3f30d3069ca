//! `hyper-stats`: the agent's command line.
//!
//! This file parses arguments, sets up logging, runs one command and is
//! the only place that prints a top-level error and picks the exit code.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use hyper_stats::cli::{Cli, Command};
use hyper_stats::config::{Config, Overrides};
use hyper_stats::pipeline;

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
        // Reads Graphite only: no config, no libvirt.
        Command::Dashboard(args) => {
            hyper_stats::dashboard::run(&args)?;
            Ok(ExitCode::SUCCESS)
        }
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
