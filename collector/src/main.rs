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

/// `mi_option_purge_delay` in the `mi_option_t` of the mimalloc the
/// `mimalloc` crate builds (v3, `libmimalloc-sys` 0.1.49: `mimalloc.h`).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// How long mimalloc keeps memory freed and not reused before returning
/// it to the kernel, ms. The agent frees and allocates about the same
/// memory every second: with mimalloc's default it returned it between
/// seconds and faulted in and zeroed fresh pages each second, a fifth of
/// its CPU at 1,024 watched threads. Never returning it (-1) let
/// fragmentation grow the RSS past the memory goal within minutes; ten
/// seconds keeps the per-second churn and still returns what stays free.
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

unsafe extern "C" {
    /// mimalloc's option setter (`mimalloc.h`).
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

fn main() -> ExitCode {
    // Safety: sets a plain integer option before any thread runs;
    // mimalloc reads it when it next considers purging.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
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
