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
//! only if it held Graphios perfdata lines and Carbon has confirmed every
//! one of its points (see the Carbon sink's acks); until then it stays and
//! is sent again later (Carbon keeps one value per series and second, so a
//! resend changes nothing). Anything else in the directory (symlinks,
//! FIFOs, devices, files without a perfdata line: `--spool` pointed at the
//! wrong directory) is read only if it is a regular file, never deleted,
//! and logged once (see `spool`).
//!
//! # Flow control
//! Points go to the sink a window at a time, then the forwarder waits for
//! Carbon to confirm them. The window is at most half the sink's
//! `carbon.queue_points` (the sink drops the oldest points beyond that,
//! failing their acks), and a file larger than the window is sent in
//! several parts, so any queue size makes progress.
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

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::config::Config;
use crate::self_stats::Registry;
use crate::sinks::carbon::{CarbonPoint, CarbonSink, Settings, Submission};

pub use args::Args;
use args::Naming;
use spool::{Spool, SpoolFile};

/// Points handed to the sink before waiting for Carbon's confirmation:
/// enough to move a backlog of files quickly, bounded in memory. Less
/// with a small `carbon.queue_points` (see [`window_points`]).
pub(crate) const MAX_INFLIGHT_POINTS: usize = 50_000;

/// Submissions (files or parts of files) handed to the sink before
/// waiting for Carbon's confirmation.
pub(crate) const MAX_INFLIGHT_FILES: usize = 64;

/// Points sent before waiting for confirmation with a sink that keeps
/// `queue_points` in memory: half of that, so that the sink's own series
/// (and a resent window) fit beside them and nothing is dropped.
pub(crate) fn window_points(queue_points: usize) -> usize {
    (queue_points / 2).clamp(1, MAX_INFLIGHT_POINTS)
}

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
    let window = window_points(carbon.queue_points);
    let mut spool = Spool::open(&args.spool)?;
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
            let files = spool.files()?;
            let round = process(&mut spool, &files, &naming, &tx, window);
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

/// A file whose points are (partly) with the sink.
struct Sending {
    /// The file.
    file: SpoolFile,
    /// The file as it was read (deleted only if still that file).
    read: spool::Identity,
    /// Submissions of it not yet settled.
    unsettled: usize,
    /// Whether all its points have been submitted.
    all_sent: bool,
    /// Whether some of its points were not confirmed.
    failed: bool,
}

/// Sends `files` through the sink, at most `window` points before waiting
/// for Carbon's confirmation, deleting each file once Carbon has
/// confirmed all its points.
async fn process(
    spool: &mut Spool,
    files: &[SpoolFile],
    naming: &Naming,
    tx: &mpsc::Sender<Submission>,
    window: usize,
) -> Result<Round> {
    let mut round = Round::default();
    let mut sending: Vec<Sending> = Vec::new();
    let mut pending: Vec<(usize, oneshot::Receiver<()>)> = Vec::new();
    let mut pending_points = 0;
    for file in files {
        // A full window is settled before the next file is even read.
        if pending.len() >= MAX_INFLIGHT_FILES || pending_points >= window {
            settle(spool, &mut sending, &mut pending, &mut round).await;
            pending_points = 0;
        }
        let read = match spool.read(file, naming) {
            Ok(Some(read)) => read,
            // Not perfdata: logged once and left alone.
            Ok(None) => continue,
            Err(e) => {
                // Gone (another forwarder?) or unreadable: leave it.
                warn!(message = "Cannot read a perfdata spool file.", error = %format!("{e:#}"));
                round.kept += 1;
                continue;
            }
        };
        round.malformed += read.malformed;
        if read.metrics.is_empty() {
            // Perfdata lines, none for Graphite: nothing to confirm.
            spool.remove(file, read.id);
            round.files += 1;
            continue;
        }
        let mut points: Vec<CarbonPoint> = read
            .metrics
            .into_iter()
            .map(|m| CarbonPoint {
                path: m.path.into(),
                ts: m.ts,
                value: m.value,
            })
            .collect();
        round.points += points.len();
        let index = sending.len();
        sending.push(Sending {
            file: file.clone(),
            read: read.id,
            unsettled: 0,
            all_sent: false,
            failed: false,
        });
        while !points.is_empty() && !sending[index].failed {
            let rest = points.split_off(points.len().min(window));
            let part = std::mem::replace(&mut points, rest);
            if pending_points + part.len() > window || pending.len() >= MAX_INFLIGHT_FILES {
                settle(spool, &mut sending, &mut pending, &mut round).await;
                pending_points = 0;
            }
            pending_points += part.len();
            let (ack, ack_rx) = oneshot::channel();
            tx.send(Submission {
                points: part,
                ack: Some(ack),
            })
            .await
            .context("the Carbon sink stopped")?;
            sending[index].unsettled += 1;
            pending.push((index, ack_rx));
        }
        sending[index].all_sent = true;
        finish(spool, &mut sending[index], &mut round);
    }
    settle(spool, &mut sending, &mut pending, &mut round).await;
    Ok(round)
}

/// Waits for every pending confirmation, then deletes (or keeps) the
/// files that are done.
async fn settle(
    spool: &Spool,
    sending: &mut [Sending],
    pending: &mut Vec<(usize, oneshot::Receiver<()>)>,
    round: &mut Round,
) {
    for (index, ack) in pending.drain(..) {
        let s = &mut sending[index];
        s.unsettled -= 1;
        if ack.await.is_err() {
            s.failed = true;
        }
        finish(spool, s, round);
    }
}

/// Deletes a file all of whose points Carbon confirmed; keeps (and logs)
/// one some of whose points it did not. Does nothing while parts are
/// unsent or unsettled.
fn finish(spool: &Spool, s: &mut Sending, round: &mut Round) {
    if !s.all_sent || s.unsettled > 0 {
        return;
    }
    // Once: a settled file is not looked at again.
    s.all_sent = false;
    if s.failed {
        warn!(message = "Carbon did not take a perfdata file's points; keeping the file.", file = %spool.display(&s.file.name));
        round.kept += 1;
    } else {
        spool.remove(&s.file, s.read);
        round.files += 1;
    }
}
