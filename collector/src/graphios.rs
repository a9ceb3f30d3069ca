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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::sinks::carbon::encoder::is_valid_path;
use crate::sinks::carbon::{CarbonPoint, CarbonSink, Settings, Submission};

/// Points handed to the sink before waiting for Carbon's confirmation:
/// enough to move a backlog of files quickly, bounded in memory.
pub const MAX_INFLIGHT_POINTS: usize = 50_000;

/// Files handed to the sink before waiting for Carbon's confirmation.
pub const MAX_INFLIGHT_FILES: usize = 64;

/// Characters Graphios replaces in paths (besides whitespace).
const INVALID_CHARS: &str = "~!$:;%^*()+={}[]|\\/<>";

/// The files Nagios is still appending to: never touched.
const ACTIVE_FILES: [&str; 2] = ["host-perfdata", "service-perfdata"];

/// `hyper-stats graphios` options (Graphios's own, renamed to this CLI's
/// style).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The Nagios perfdata spool directory (Graphios's spool_directory).
    #[arg(long, value_name = "DIR")]
    pub spool: PathBuf,
    /// Carbon at HOST:PORT (overrides carbon.address).
    #[arg(long, value_name = "HOST:PORT")]
    pub carbon: Option<String>,
    /// Prepended to every path (Graphios's metric_base_path).
    #[arg(long, value_name = "PATH")]
    pub base_path: Option<String>,
    /// Name series HOST.SERVICEDESC.LABEL, sending every service
    /// (Graphios's use_service_desc).
    #[arg(long)]
    pub use_service_desc: bool,
    /// Keep the dots of Nagios host names (by default they become the
    /// replacement character).
    #[arg(long)]
    pub no_replace_hostname: bool,
    /// Reverse the components of Nagios host names (a.b.c → c.b.a).
    #[arg(long)]
    pub reverse_hostname: bool,
    /// Replaces characters Carbon paths cannot hold.
    #[arg(long, value_name = "CHAR", default_value = "_")]
    pub replacement_character: char,
    /// How long to wait between scans of the spool directory.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Process the files there now, then exit (nonzero if some could not
    /// be confirmed by Carbon within --timeout).
    #[arg(long)]
    pub once: bool,
    /// With --once: how long to wait for Carbon.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Graphios's naming options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    /// `metric_base_path`, prepended to every path.
    pub base_path: Option<String>,
    /// `use_service_desc`.
    pub use_service_desc: bool,
    /// `replace_hostname`: dots in host names become `replacement`.
    pub replace_hostname: bool,
    /// `reverse_hostname`.
    pub reverse_hostname: bool,
    /// `replacement_character`.
    pub replacement: char,
}

impl Default for Naming {
    fn default() -> Self {
        Naming {
            base_path: None,
            use_service_desc: false,
            replace_hostname: true,
            reverse_hostname: false,
            replacement: '_',
        }
    }
}

impl From<&Args> for Naming {
    fn from(a: &Args) -> Naming {
        Naming {
            base_path: a.base_path.clone().filter(|b| !b.is_empty()),
            use_service_desc: a.use_service_desc,
            replace_hostname: !a.no_replace_hostname,
            reverse_hostname: a.reverse_hostname,
            replacement: a.replacement_character,
        }
    }
}

/// One Carbon point from perfdata.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// The full path.
    pub path: String,
    /// The value, unit removed.
    pub value: f64,
    /// `TIMET`.
    pub ts: i64,
}

/// What one spool line gave.
#[derive(Debug, Default, PartialEq)]
pub struct Line {
    /// Its points.
    pub metrics: Vec<Metric>,
    /// Perfdata items that could not be turned into points, with why.
    pub bad_items: Vec<String>,
    /// Whether Graphios's rules leave the line out (no prefix or postfix,
    /// no perfdata): not an error.
    pub not_for_graphite: bool,
}

/// Parses one spool line; `Err` for a malformed line.
pub fn parse_line(line: &str, naming: &Naming) -> Result<Line, String> {
    if !line.starts_with("DATATYPE::") {
        return Err("does not start with DATATYPE::".into());
    }
    let mut datatype = String::new();
    let mut timet = String::new();
    let mut hostname = String::new();
    let mut servicedesc = String::new();
    let mut prefix = String::new();
    let mut postfix = String::new();
    let mut perfdata = String::new();
    for field in line.trim_end_matches(['\n', '\r']).split('\t') {
        let Some((name, value)) = field.split_once("::") else {
            return Err(format!("field {field:?} has no `::`"));
        };
        if name.contains("PERFDATA") {
            perfdata = value.to_owned();
            continue;
        }
        if value.starts_with("$_") {
            continue;
        }
        let value: String = value.chars().filter(|c| !c.is_whitespace()).collect();
        match name {
            "DATATYPE" => datatype = value,
            "TIMET" => timet = value,
            "HOSTNAME" => hostname = value,
            "SERVICEDESC" => servicedesc = value,
            "GRAPHITEPREFIX" => prefix = value,
            "GRAPHITEPOSTFIX" => postfix = value,
            _ => {}
        }
    }
    if timet.is_empty() {
        return Err("has no TIMET".into());
    }
    if hostname.is_empty() {
        return Err("has no HOSTNAME".into());
    }
    let ts: i64 = timet
        .parse()
        .map_err(|_| format!("TIMET {timet:?} is not a unix time"))?;
    let wanted = if naming.use_service_desc {
        !servicedesc.is_empty() || datatype == "HOSTPERFDATA"
    } else {
        !prefix.is_empty() || !postfix.is_empty()
    };
    if perfdata.trim().is_empty() || !wanted {
        return Ok(Line {
            not_for_graphite: true,
            ..Line::default()
        });
    }
    if naming.reverse_hostname {
        hostname = hostname.split('.').rev().collect::<Vec<_>>().join(".");
    }
    if naming.replace_hostname {
        hostname = hostname.replace('.', &naming.replacement.to_string());
    }
    let mut out = Line::default();
    for item in split_perfdata(&perfdata) {
        let (label, data) = match item {
            Ok(pair) => pair,
            Err(raw) => {
                out.bad_items.push(format!("{raw:?} is not label=value"));
                continue;
            }
        };
        let Some(value) = parse_value(&data) else {
            out.bad_items
                .push(format!("{label:?} has no numeric value in {data:?}"));
            continue;
        };
        let path = build_path(naming, &prefix, &postfix, &hostname, &servicedesc, &label);
        if !is_valid_path(&path) {
            out.bad_items
                .push(format!("{label:?} gives the unusable path {path:?}"));
            continue;
        }
        out.metrics.push(Metric { path, value, ts });
    }
    Ok(out)
}

/// Graphios's path: `[BASE.][PREFIX.]HOST[.SERVICEDESC][.POSTFIX].LABEL`,
/// trailing dot removed, `..` → `.`, invalid characters replaced.
fn build_path(
    naming: &Naming,
    prefix: &str,
    postfix: &str,
    host: &str,
    servicedesc: &str,
    label: &str,
) -> String {
    let mut pre = String::new();
    if let Some(base) = &naming.base_path {
        pre.push_str(base);
        pre.push('.');
    }
    if !prefix.is_empty() {
        pre.push_str(prefix);
        pre.push('.');
    }
    let post = if postfix.is_empty() {
        String::new()
    } else {
        format!(".{postfix}")
    };
    let mut path = if naming.use_service_desc {
        let desc = fix_string(servicedesc, naming.replacement);
        format!("{pre}{host}.{desc}{post}.{label}")
    } else {
        format!("{pre}{host}{post}.{label}")
    };
    if path.ends_with('.') {
        path.pop();
    }
    fix_string(&path.replace("..", "."), naming.replacement)
}

/// Replaces whitespace and Graphios's invalid characters.
fn fix_string(s: &str, replacement: char) -> String {
    s.chars()
        .map(|c| {
            if c.is_whitespace() || INVALID_CHARS.contains(c) {
                replacement
            } else {
                c
            }
        })
        .collect()
}

/// The number of a perfdata value (`12.5ms;10;20;0;` → 12.5): the part
/// before the first `;`, with its unit (letters, `%`, `/`) cut from the
/// end.
fn parse_value(data: &str) -> Option<f64> {
    let v = data.split(';').next().unwrap_or("");
    let v = v.trim_end_matches(|c: char| c.is_alphabetic() || c == '%' || c == '/');
    let value: f64 = v.parse().ok()?;
    value.is_finite().then_some(value)
}

/// Splits perfdata into `(label, data)` items; an item without `=` (or
/// with a second one) comes back as `Err(raw item)`. Labels may be quoted
/// in single quotes, with `''` for a quote inside.
fn split_perfdata(perfdata: &str) -> Vec<Result<(String, String), String>> {
    let mut items = Vec::new();
    let mut chars = perfdata.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            break;
        };
        let mut label = String::new();
        let mut raw = String::new();
        if first == '\'' {
            chars.next();
            raw.push('\'');
            loop {
                match chars.next() {
                    Some('\'') if chars.peek() == Some(&'\'') => {
                        chars.next();
                        label.push('\'');
                        raw.push_str("''");
                    }
                    Some('\'') => {
                        raw.push('\'');
                        break;
                    }
                    Some(c) => {
                        label.push(c);
                        raw.push(c);
                    }
                    None => break,
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
                label.push(c);
                raw.push(c);
            }
        }
        let mut data = String::new();
        let has_eq = chars.next_if_eq(&'=').is_some();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
            data.push(c);
        }
        if has_eq && !data.contains('=') {
            items.push(Ok((label, data)));
        } else {
            raw.push_str(if has_eq { "=" } else { "" });
            raw.push_str(&data);
            items.push(Err(raw));
        }
    }
    items
}

/// The perfdata spool files to process now, oldest first: everything but
/// the files Nagios appends to, names starting with `_`, directories and
/// empty files (which are deleted, as Graphios does).
pub fn spool_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "failed to read the perfdata spool directory {}",
            dir.display()
        )
    })?;
    for entry in entries {
        let entry = entry.with_context(|| format!("failed to read {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if ACTIVE_FILES.contains(&name.as_str()) || name.starts_with('_') {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        if meta.len() == 0 {
            let _ = std::fs::remove_file(entry.path());
            continue;
        }
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        files.push((mtime, name, entry.path()));
    }
    files.sort();
    Ok(files.into_iter().map(|(_, _, p)| p).collect())
}

/// What reading one spool file gave.
#[derive(Debug, Default)]
pub struct FileResult {
    /// All its points.
    pub metrics: Vec<Metric>,
    /// Malformed lines and perfdata items (logged already).
    pub malformed: usize,
}

/// Reads one spool file, logging what is malformed with file and line.
pub fn read_file(path: &Path, naming: &Naming) -> Result<FileResult> {
    let bytes =
        std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let mut out = FileResult::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line, naming) {
            Ok(parsed) => {
                for item in &parsed.bad_items {
                    warn!(
                        message = "Skipped a perfdata item.",
                        file = %path.display(),
                        line = i + 1,
                        error = %item,
                    );
                }
                out.malformed += parsed.bad_items.len();
                if parsed.not_for_graphite {
                    debug!(message = "Line is not for Graphite (no prefix/postfix or no perfdata).", file = %path.display(), line = i + 1);
                }
                out.metrics.extend(parsed.metrics);
            }
            Err(e) => {
                warn!(
                    message = "Skipped a malformed perfdata line.",
                    file = %path.display(),
                    line = i + 1,
                    error = %e,
                );
                out.malformed += 1;
            }
        }
    }
    Ok(out)
}

/// Runs the forwarder until SIGINT/SIGTERM (or, with `--once`, until the
/// files present are done).
pub async fn run(config: &Config, args: &Args) -> Result<()> {
    let mut carbon = config.carbon.clone();
    if let Some(address) = &args.carbon {
        carbon.address = Some(address.clone());
    }
    if carbon.address.is_none() {
        bail!("no Carbon address\ngive --carbon HOST:PORT or set carbon.address in the config");
    }
    // The Nagios spool files are the durable copy: no second spool here.
    carbon.spool_dir = None;
    let settings = Settings::from_config(&carbon, "graphios")?.expect("address is set");
    let naming = Naming::from(args);
    let sink = CarbonSink::new(settings)?;
    let files_path = sink.agent_path("graphios.files");
    let malformed_path = sink.agent_path("graphios.malformed");
    let (tx, rx) = mpsc::channel::<Submission>(MAX_INFLIGHT_FILES + 2);
    let sink_task = tokio::spawn(sink.run(None, Some(rx)));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A line as Nagios writes it with the Graphios template.
    fn line(host: &str, desc: &str, perfdata: &str, prefix: &str, postfix: &str) -> String {
        format!(
            "DATATYPE::SERVICEPERFDATA\tTIMET::1764100001\tHOSTNAME::{host}\tSERVICEDESC::{desc}\tSERVICEPERFDATA::{perfdata}\tSERVICECHECKCOMMAND::check_x!a\tHOSTSTATE::UP\tHOSTSTATETYPE::HARD\tSERVICESTATE::OK\tSERVICESTATETYPE::HARD\tGRAPHITEPREFIX::{prefix}\tGRAPHITEPOSTFIX::{postfix}\tMETRICTYPE::$_SERVICEMETRICTYPE$"
        )
    }

    fn paths(l: &str, naming: &Naming) -> Vec<(String, f64)> {
        parse_line(l, naming)
            .unwrap()
            .metrics
            .into_iter()
            .map(|m| {
                assert_eq!(m.ts, 1764100001);
                (m.path, m.value)
            })
            .collect()
    }

    /// The README examples of Graphios, and more, table-driven.
    #[test]
    fn graphios_naming_rules() {
        let plain = Naming::default();
        /// A spool line, the naming options, and the (path, value) pairs.
        type Case = (String, Naming, Vec<(&'static str, f64)>);
        let cases: Vec<Case> = vec![
            // README: check_icmp with a host prefix.
            (
                line(
                    "myhost",
                    "PING",
                    "rta=4.029ms;10.000;30.000;0; pl=0%;5;10;; rtmax=4.996ms;;;; rtmin=3.066ms;;;;",
                    "ops.nagios01.pingto",
                    "",
                ),
                plain.clone(),
                vec![
                    ("ops.nagios01.pingto.myhost.rta", 4.029),
                    ("ops.nagios01.pingto.myhost.pl", 0.0),
                    ("ops.nagios01.pingto.myhost.rtmax", 4.996),
                    ("ops.nagios01.pingto.myhost.rtmin", 3.066),
                ],
            ),
            // README: check_load with prefix and postfix.
            (
                line(
                    "myhost",
                    "Load",
                    "load1=8.41;20;22;; load5=6.06;18;20;; load15=5.58;16;18",
                    "datacenter01.webservers",
                    "nrdp.load",
                ),
                plain.clone(),
                vec![
                    ("datacenter01.webservers.myhost.nrdp.load.load1", 8.41),
                    ("datacenter01.webservers.myhost.nrdp.load.load5", 6.06),
                    ("datacenter01.webservers.myhost.nrdp.load.load15", 5.58),
                ],
            ),
            // Dots in host names replaced; base path; postfix only.
            (
                line(
                    "web1.example.com",
                    "Disk",
                    "/=35%;80;90 /var=12B/s",
                    "",
                    "disk",
                ),
                Naming {
                    base_path: Some("mycorp.nagios".into()),
                    ..plain.clone()
                },
                vec![
                    ("mycorp.nagios.web1_example_com.disk._", 35.0),
                    ("mycorp.nagios.web1_example_com.disk._var", 12.0),
                ],
            ),
            // Reversed, dots kept.
            (
                line("web1.example.com", "Disk", "x=1", "p", ""),
                Naming {
                    reverse_hostname: true,
                    replace_hostname: false,
                    ..plain.clone()
                },
                vec![("p.com.example.web1.x", 1.0)],
            ),
            // Service descriptions; their whitespace removed; quoted labels.
            (
                line(
                    "h",
                    "Disk Usage",
                    "'used space'=5GB;; 'it''s'=1 c:\\=2",
                    "",
                    "",
                ),
                Naming {
                    use_service_desc: true,
                    ..plain.clone()
                },
                vec![
                    ("h.DiskUsage.used_space", 5.0),
                    ("h.DiskUsage.it's", 1.0),
                    ("h.DiskUsage.c__", 2.0),
                ],
            ),
            // Double dots collapse, trailing dot goes, invalid chars replaced.
            (
                line("h", "S", "a=1 b(x)=-2.5e-3s", "pre.", ".post"),
                plain.clone(),
                vec![("pre.h.post.a", 1.0), ("pre.h.post.b_x_", -0.0025)],
            ),
            // Another replacement character.
            (
                line("a.b", "S", "'x y'=1", "p", ""),
                Naming {
                    replacement: '-',
                    ..plain.clone()
                },
                vec![("p.a-b.x-y", 1.0)],
            ),
        ];
        for (l, naming, want) in cases {
            let got = paths(&l, &naming);
            let want: Vec<(String, f64)> = want.into_iter().map(|(p, v)| (p.into(), v)).collect();
            assert_eq!(got, want, "line {l:?}");
        }
    }

    #[test]
    fn lines_graphios_leaves_out_are_not_errors() {
        let plain = Naming::default();
        // No prefix and no postfix (unexpanded macros count as empty).
        let l = line("h", "S", "a=1", "$_SERVICEGRAPHITEPREFIX$", "");
        assert!(parse_line(&l, &plain).unwrap().not_for_graphite);
        // No perfdata.
        let l = line("h", "S", "", "p", "");
        assert!(parse_line(&l, &plain).unwrap().not_for_graphite);
        // With service descriptions, host perfdata counts too.
        let host = "DATATYPE::HOSTPERFDATA\tTIMET::1764100001\tHOSTNAME::h\tHOSTPERFDATA::rta=1ms\tGRAPHITEPREFIX::\tGRAPHITEPOSTFIX::";
        let naming = Naming {
            use_service_desc: true,
            ..plain
        };
        assert_eq!(paths(host, &naming), vec![("h.rta".to_owned(), 1.0)]);
    }

    #[test]
    fn malformed_lines_and_items_are_reported() {
        let plain = Naming::default();
        let bad_lines = [
            ("garbage", "does not start with DATATYPE::"),
            (
                "DATATYPE::SERVICEPERFDATA\tTIMET",
                "field \"TIMET\" has no `::`",
            ),
            (
                "DATATYPE::SERVICEPERFDATA\tTIMET::x\tHOSTNAME::h\tSERVICEPERFDATA::a=1\tGRAPHITEPREFIX::p",
                "TIMET \"x\" is not a unix time",
            ),
            (
                "DATATYPE::SERVICEPERFDATA\tHOSTNAME::h\tSERVICEPERFDATA::a=1\tGRAPHITEPREFIX::p",
                "has no TIMET",
            ),
            (
                "DATATYPE::SERVICEPERFDATA\tTIMET::1\tSERVICEPERFDATA::a=1\tGRAPHITEPREFIX::p",
                "has no HOSTNAME",
            ),
        ];
        for (l, want) in bad_lines {
            let err = parse_line(l, &plain).unwrap_err();
            assert!(err.contains(want), "{l:?}: {err}");
        }
        let l = line("h", "S", "a=1 b=U c d=1=2 e=;1 'open=3", "p", "");
        let parsed = parse_line(&l, &plain).unwrap();
        assert_eq!(parsed.metrics.len(), 1);
        assert_eq!(parsed.bad_items.len(), 5, "{:?}", parsed.bad_items);
        assert!(parsed.bad_items[0].contains("\"b\" has no numeric value in \"U\""));
        assert!(parsed.bad_items[1].contains("\"c\" is not label=value"));
    }

    #[test]
    fn spool_files_skip_active_hidden_dirs_and_delete_empty() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in [
            "service-perfdata",
            "host-perfdata",
            "_hidden",
            "service-perfdata.2",
        ] {
            std::fs::write(d.join(name), "x\n").unwrap();
        }
        std::fs::write(d.join("service-perfdata.1"), "x\n").unwrap();
        std::fs::write(d.join("empty"), "").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        // Oldest first: by modification time, then name.
        let old = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(d.join("service-perfdata.2"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let files = spool_files(d).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["service-perfdata.2", "service-perfdata.1"]);
        assert!(!d.join("empty").exists());
    }
}
