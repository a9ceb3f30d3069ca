//! `hyper-stats graphios`: forwards Nagios perfdata spool files to Carbon
//! with Graphios's naming rules, in place of the unmaintained Python 2
//! Graphios.
//!
//! # What it reads
//! Nagios writes service (and host) perfdata with the Graphios template
//! (see the README), one line per check result, tab-separated `NAME::value`
//! fields:
//!
//! ```text
//! DATATYPE::SERVICEPERFDATA  TIMET::1764100001  HOSTNAME::web-1  SERVICEDESC::Load
//! SERVICEPERFDATA::load1=0.5;4;8;0; load5=0.3;4;8;0;  SERVICECHECKCOMMAND::check_load
//! GRAPHITEPREFIX::nagios.dc1  GRAPHITEPOSTFIX::load
//! ```
//!
//! and every few seconds moves the file it appends to (`service-perfdata`)
//! to `service-perfdata.<TIMET>` in the spool directory. Those moved files
//! are what this command processes, oldest first.
//!
//! # Naming (Graphios's rules)
//! - A line counts only if it has `TIMET`, `HOSTNAME` and perfdata, and a
//!   `GRAPHITEPREFIX` or `GRAPHITEPOSTFIX` (or, with `--use-service-desc`,
//!   a `SERVICEDESC`, or is host perfdata). Values still holding an
//!   unexpanded `$_...` macro count as empty. Whitespace is removed from
//!   every field but the perfdata.
//! - The host name's components are reversed with `--reverse-hostname`,
//!   and its dots replaced (unless `--no-replace-hostname`).
//! - Path: `[BASE.][PREFIX.]HOST[.POSTFIX].LABEL`, or with
//!   `--use-service-desc` `[BASE.][PREFIX.]HOST.SERVICEDESC[.POSTFIX].LABEL`;
//!   then a trailing dot is removed, `..` becomes `.`, and whitespace and
//!   each of ``~!$:;%^*()+={}[]|\/<>`` become the replacement character
//!   (`_`).
//! - Value: the number before the first `;`, its unit removed; timestamp:
//!   `TIMET`.
//!
//! Two deliberate differences: labels in single quotes (the plugin
//! guidelines' form for labels with spaces, `'my label'=5`) are unquoted
//! instead of being split at the space, and a value's unit is cut from its
//! end instead of deleting every letter, so `1e-05` stays a number. A
//! value that is no number (`U`) is logged and skipped.
//!
//! # When things fail
//! A malformed line (or perfdata item) is logged with its file and line
//! number and skipped; the rest of the file goes on. A file is deleted
//! only once Carbon has confirmed every one of its points (see the Carbon
//! sink's acks); until then it stays and is sent again later (Carbon keeps
//! one value per series and second, so a resend changes nothing).
//!
//! # Layout
//! `args` holds the options and the naming rules they select, `line` the
//! spool line parser (its perfdata items read by the parser the plugin
//! shares, `hyper_stats_query::perfdata`), `spool` the spool directory;
//! this file runs the loop that sends files through the Carbon sink and
//! deletes them once confirmed.

mod args;
pub mod line;
mod spool;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::self_stats::Registry;
use crate::sinks::carbon::{CarbonPoint, CarbonSink, Settings, Submission};

pub use args::Args;
use args::Naming;
use spool::{read_file, spool_files};

/// Points handed to the sink before waiting for Carbon's confirmation:
/// enough to move a backlog of files quickly, bounded in memory.
pub(crate) const MAX_INFLIGHT_POINTS: usize = 50_000;

/// Files handed to the sink before waiting for Carbon's confirmation.
pub(crate) const MAX_INFLIGHT_FILES: usize = 64;

/// Runs the forwarder until SIGINT/SIGTERM (or, with `--once`, until the
/// files present are done).
pub async fn run(config: &Config, args: &Args) -> Result<()> {
    // `--carbon` is applied to the config with the other overrides.
    let mut carbon = config.carbon.clone();
    if carbon.address.is_none() {
        bail!("no Carbon address\ngive --carbon HOST:PORT or set carbon.address in the config");
    }
    // The Nagios spool files are the durable copy: no second spool here.
    carbon.spool_dir = None;
    let settings = Settings::from_config(&carbon, "graphios")?.expect("address is set");
    let naming = Naming::from(args);
    // The sink's own series (`agent.graphios.*`), reported each second
    // into its batch input as the agent's pipeline would.
    let stats = Arc::new(Registry::default());
    let sink = CarbonSink::new(settings, &stats)?;
    let files_path = sink.agent_path("graphios.files");
    let malformed_path = sink.agent_path("graphios.malformed");
    let (tx, rx) = mpsc::channel::<Submission>(MAX_INFLIGHT_FILES + 2);
    let (stats_tx, stats_rx) = mpsc::channel(4);
    let sink_task = tokio::spawn(sink.run(Some(stats_rx), Some(rx)));
    let reporter = tokio::spawn(crate::self_stats::run(stats, stats_tx, Arc::new));
    info!(message = "Forwarding Nagios perfdata to Carbon.", spool = %args.spool.display());

    let result = async {
        let stop = crate::pipeline::shutdown_signal();
        tokio::pin!(stop);
        loop {
            let files = spool_files(&args.spool)?;
            let round = process(&files, &naming, &tx);
            let outcome = if args.once {
                tokio::select! {
                    r = round => r?,
                    _ = tokio::time::sleep(args.timeout) => {
                        bail!("Carbon did not confirm the perfdata within {:?}; the spool files stay for the next run", args.timeout)
                    }
                    r = &mut stop => { info!(message = "Stopping.", reason = r?); return Ok(()); }
                }
            } else {
                tokio::select! {
                    r = round => r?,
                    r = &mut stop => { info!(message = "Stopping.", reason = r?); return Ok(()); }
                }
            };
            if outcome.files > 0 {
                info!(
                    message = "Forwarded perfdata files.",
                    files = outcome.files,
                    points = outcome.points,
                    malformed = outcome.malformed,
                );
            }
            let ts = crate::clock::now_unix_whole();
            let _ = tx
                .send(Submission {
                    points: vec![
                        CarbonPoint {
                            path: Arc::clone(&files_path),
                            ts,
                            value: outcome.files as f64,
                        },
                        CarbonPoint {
                            path: Arc::clone(&malformed_path),
                            ts,
                            value: outcome.malformed as f64,
                        },
                    ],
                    ack: None,
                })
                .await;
            if args.once {
                if outcome.kept > 0 {
                    bail!("{} spool files were not confirmed by Carbon and stay", outcome.kept);
                }
                return Ok(());
            }
            tokio::select! {
                _ = tokio::time::sleep(args.interval) => {}
                r = &mut stop => { info!(message = "Stopping.", reason = r?); return Ok(()); }
            }
        }
    }
    .await;
    reporter.abort();
    let _ = reporter.await;
    drop(tx);
    sink_task.await.context("the Carbon sink panicked")??;
    result
}

/// What one round over the spool did.
#[derive(Debug, Default)]
struct Round {
    files: usize,
    points: usize,
    malformed: usize,
    kept: usize,
}

/// Sends `files` through the sink, a window at a time, deleting each file
/// once Carbon has confirmed its points.
async fn process(
    files: &[PathBuf],
    naming: &Naming,
    tx: &mpsc::Sender<Submission>,
) -> Result<Round> {
    let mut round = Round::default();
    let mut pending: Vec<(PathBuf, oneshot::Receiver<()>)> = Vec::new();
    let mut pending_points = 0;
    for (i, path) in files.iter().enumerate() {
        let file = match read_file(path, naming) {
            Ok(f) => f,
            Err(e) => {
                // Gone (another forwarder?) or unreadable: leave it.
                warn!(message = "Cannot read a perfdata spool file.", error = %format!("{e:#}"));
                round.kept += 1;
                continue;
            }
        };
        round.malformed += file.malformed;
        if file.metrics.is_empty() {
            remove(path);
            round.files += 1;
            continue;
        }
        let points: Vec<CarbonPoint> = file
            .metrics
            .into_iter()
            .map(|m| CarbonPoint {
                path: m.path.into(),
                ts: m.ts,
                value: m.value,
            })
            .collect();
        pending_points += points.len();
        round.points += points.len();
        let (ack, ack_rx) = oneshot::channel();
        tx.send(Submission {
            points,
            ack: Some(ack),
        })
        .await
        .context("the Carbon sink stopped")?;
        pending.push((path.clone(), ack_rx));
        let last = i + 1 == files.len();
        if last || pending.len() >= MAX_INFLIGHT_FILES || pending_points >= MAX_INFLIGHT_POINTS {
            for (path, ack) in pending.drain(..) {
                match ack.await {
                    Ok(()) => {
                        remove(&path);
                        round.files += 1;
                    }
                    Err(_) => {
                        warn!(message = "Carbon did not take a perfdata file's points; keeping the file.", file = %path.display());
                        round.kept += 1;
                    }
                }
            }
            pending_points = 0;
        }
    }
    Ok(round)
}

fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => debug!(message = "Deleted a forwarded perfdata file.", file = %path.display()),
        Err(e) => {
            warn!(message = "Cannot delete a forwarded perfdata file.", file = %path.display(), error = %e)
        }
    }
}
