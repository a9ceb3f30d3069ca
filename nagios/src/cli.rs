//! The command line: options, their checks, and the one place that turns
//! any outcome into output text and an exit code.
//!
//! Every option is documented where it is defined (the `--help` text is
//! pinned by a golden file). Nothing here exits the process: [`run`]
//! returns the text and the code, and `main.rs` prints and exits.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use clap::Parser;
use hyper_stats_query::{
    DEFAULT_SOCKET_PATH, GaugeQuery, HistogramQuery, MAX_WINDOW_S, Outcome, Query, Request,
};

use hyper_stats_query::metric::{is_histogram, sanitize_component, sanitize_dotted};

use crate::check::{Aggregate, Check, Failure, Kind, State};
use crate::client;
use crate::output;
use crate::range::Range;

/// NRPE v2/v3 packets carry this many bytes of output.
pub const NRPE_V3_MAX_BYTES: usize = 1023;

/// Nagios core keeps this many bytes of a plugin's output.
pub const NAGIOS_MAX_BYTES: usize = 8192;

/// The clap command of `check_hyper_stats`, for generating its man page
/// (`cargo xtask package` runs `nagios/examples/manpage.rs`).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

#[derive(Debug, Parser)]
#[command(
    name = "check_hyper_stats",
    version,
    about = "Nagios plugin: thresholds on per-VM statistics from the hyper-stats agent",
    long_about = "Nagios plugin: thresholds on per-VM statistics from the hyper-stats agent.\n\n\
        Asks the agent's local query socket for one metric over a window and judges every \
        domain (VM) against -w/-c. Histogram metrics of the eBPF probes (one name ending in \
        _us, e.g. runq_latency_us) are judged by a percentile of the merged histogram of the \
        window; libvirt metrics (cpu.time_percent, vcpu.*.delay_percent, \
        block.*.wr.latency_mean_ms, net.*.rx.drops_per_s, balloon.*) by their average (or \
        maximum, --aggregate max) over the window, each matching series on its own.\n\n\
        Exit codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (any failure on the plugin's side: \
        agent not running, socket permission, timeout, stale data, unknown metric, bad option).",
    after_help = "Examples:\n  \
        check_hyper_stats -m runq_latency_us -p 99 --window 5m -w 5000 -c 10000\n  \
        check_hyper_stats -m runq_latency_us --per-vcpu -w 5000 -c 10000 --domain 'web-*'\n  \
        check_hyper_stats -m 'vcpu.*.delay_percent' --window 5m -w 10 -c 25\n  \
        check_hyper_stats -m 'block.*.wr.latency_mean_ms' --aggregate max -w 50 -c 200\n  \
        check_hyper_stats --list"
)]
struct Cli {
    /// Metric to check: a histogram (runq_latency_us) or a libvirt metric,
    /// `*` matching one dotted component (vcpu.*.delay_percent).
    #[arg(short, long, value_name = "NAME", required_unless_present = "list")]
    metric: Option<String>,

    /// Percentile of a histogram metric, in (0, 100] [default: 99].
    #[arg(short, long, value_name = "P")]
    percentile: Option<f64>,

    /// Judge each vCPU of a histogram metric instead of each domain.
    #[arg(long)]
    per_vcpu: bool,

    /// For libvirt metrics: judge the average or the maximum over the
    /// window [default: avg].
    #[arg(short, long, value_name = "avg|max")]
    aggregate: Option<String>,

    /// Window to judge, up to 15m: e.g. 60s, 5m.
    #[arg(short = 'W', long, value_name = "DURATION", default_value = "5m")]
    window: String,

    /// Warning range (Nagios format: 10, 10:, ~:10, 10:20, @10:20), in the
    /// metric's unit (µs for *_us, % for *_percent, ms for *_ms).
    #[arg(short, long, value_name = "RANGE", allow_hyphen_values = true)]
    warning: Option<String>,

    /// Critical range, same format as --warning.
    #[arg(short, long, value_name = "RANGE", allow_hyphen_values = true)]
    critical: Option<String>,

    /// Only domains whose name matches this glob (repeatable).
    #[arg(short, long, value_name = "GLOB")]
    domain: Vec<String>,

    /// Skip domains whose name matches this glob (repeatable).
    #[arg(short = 'x', long, value_name = "GLOB")]
    exclude: Vec<String>,

    /// Data older than this is stale: e.g. 30s, 2m. Judged per series
    /// (per domain for histograms): a stale one is UNKNOWN, named on the
    /// first line, its perfdata U.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    max_age: String,

    /// Seconds to wait for the agent before giving up (UNKNOWN).
    #[arg(short, long, value_name = "SECONDS", default_value_t = 10.0)]
    timeout: f64,

    /// Most bytes of output: 8192 for Nagios, 1023 through NRPE v2/v3.
    /// When cut, the worst domains stay.
    #[arg(long, value_name = "BYTES", default_value_t = NAGIOS_MAX_BYTES)]
    max_bytes: usize,

    /// The agent's query socket.
    #[arg(short = 'S', long, value_name = "PATH", default_value = DEFAULT_SOCKET_PATH)]
    socket: PathBuf,

    /// List the domains and series the agent has, then exit.
    #[arg(short, long)]
    list: bool,
}

/// Parses a duration: a number with an optional unit `s`, `m` or `h`
/// (seconds when bare).
pub fn parse_duration(text: &str) -> Option<f64> {
    let (num, mult) = match text.as_bytes().last()? {
        b's' => (&text[..text.len() - 1], 1.0),
        b'm' => (&text[..text.len() - 1], 60.0),
        b'h' => (&text[..text.len() - 1], 3600.0),
        _ => (text, 1.0),
    };
    let v: f64 = num.parse().ok()?;
    (v.is_finite() && v >= 0.0 && num.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
        .then_some(v * mult)
}

fn range(text: &Option<String>, flag: &str) -> Result<Option<Range>, Failure> {
    text.as_deref()
        .map(|t| {
            Range::parse(t).map_err(|e| Failure(format!("invalid range {t:?} for {flag}: {e}")))
        })
        .transpose()
}

/// The check the options describe, or why they are wrong.
fn build_check(cli: &Cli, metric: &str) -> Result<Check, Failure> {
    let bad = |m: String| Err(Failure(m));
    let window = parse_duration(&cli.window).ok_or_else(|| {
        Failure(format!(
            "invalid --window {:?}: expected a duration such as 60s or 5m",
            cli.window
        ))
    })?;
    if window < 1.0 || window > f64::from(MAX_WINDOW_S) || window.fract() != 0.0 {
        return bad(format!(
            "invalid --window {:?}: must be whole seconds from 1s to {}m",
            cli.window,
            MAX_WINDOW_S / 60
        ));
    }
    let max_age = parse_duration(&cli.max_age).ok_or_else(|| {
        Failure(format!(
            "invalid --max-age {:?}: expected a duration such as 30s or 2m",
            cli.max_age
        ))
    })?;
    let kind = if is_histogram(metric) {
        if cli.aggregate.is_some() {
            return bad(format!(
                "--aggregate applies to libvirt metrics; {metric} is a histogram: use --percentile"
            ));
        }
        let percentile = cli.percentile.unwrap_or(99.0);
        if !(percentile > 0.0 && percentile <= 100.0) {
            return bad(format!(
                "invalid --percentile {percentile}: expected more than 0 and at most 100"
            ));
        }
        Kind::Histogram {
            percentile,
            per_vcpu: cli.per_vcpu,
        }
    } else {
        if cli.percentile.is_some() || cli.per_vcpu {
            return bad(format!(
                "--percentile and --per-vcpu apply to histogram metrics (e.g. runq_latency_us); \
                 {metric} is a libvirt metric: use --aggregate avg or max, and vcpu.* to judge each vCPU"
            ));
        }
        let aggregate = match cli.aggregate.as_deref() {
            None | Some("avg") => Aggregate::Avg,
            Some("max") => Aggregate::Max,
            Some(other) => {
                return bad(format!(
                    "invalid --aggregate {other:?}: expected avg or max"
                ));
            }
        };
        Kind::Gauge { aggregate }
    };
    Ok(Check {
        metric: metric.to_owned(),
        kind,
        window_s: window as u32,
        warn: range(&cli.warning, "--warning")?,
        crit: range(&cli.critical, "--critical")?,
        domains: cli.domain.clone(),
        exclude: cli.exclude.clone(),
        max_age_s: max_age,
    })
}

/// Runs the query on a worker thread so that `timeout` holds even if a
/// system call blocks longer than its own deadline.
fn query_within(cli: &Cli, request: Request, timeout: Duration) -> Result<Outcome, Failure> {
    let (tx, rx) = mpsc::channel();
    let socket = cli.socket.clone();
    std::thread::spawn(move || {
        let _ = tx.send(client::query(&socket, &request, timeout));
    });
    let response = rx.recv_timeout(timeout).map_err(|_| {
        Failure(format!(
            "no answer from the agent on {} within {:.0?}",
            cli.socket.display(),
            timeout
        ))
    })??;
    match response.outcome {
        Outcome::Error(e) => Err(Failure(format!(
            "the agent refused the query: {}",
            e.message
        ))),
        other => Ok(other),
    }
}

/// `, name "RAW"` for `--list` when a domain's name as libvirt has it
/// differs from its sanitized one (`--domain` globs match the former),
/// escaped, `|` too, so that no name ends a line or starts perfdata.
fn raw_name_note(raw: &str) -> String {
    if sanitize_component(raw) == raw {
        return String::new();
    }
    format!(", name {}", format!("{raw:?}").replace('|', "\\u{7c}"))
}

fn list_text(outcome: Outcome) -> Result<String, Failure> {
    let Outcome::List(l) = outcome else {
        return Err(Failure(
            "the agent answered `list` with something else".into(),
        ));
    };
    let histograms: Vec<String> = l.histograms.iter().map(|h| sanitize_dotted(h)).collect();
    let mut out = format!(
        "{} domains; histogram metrics: {}; newest data {}\n",
        l.domains.len(),
        if histograms.is_empty() {
            "none".to_owned()
        } else {
            histograms.join(", ")
        },
        l.newest_age_s
            .map_or("none".to_owned(), |a| format!("{a:.1}s old"))
    );
    for d in l.domains {
        let metrics: Vec<String> = d.metrics.iter().map(|m| sanitize_dotted(m)).collect();
        out.push_str(&format!(
            "{} ({}, data {:.1}s old{}): {}\n",
            sanitize_component(&d.domain),
            sanitize_component(&d.uuid),
            d.age_s,
            raw_name_note(&d.domain),
            metrics.join(" ")
        ));
    }
    Ok(out)
}

fn check(cli: &Cli) -> Result<(String, u8), Failure> {
    if !(cli.timeout > 0.0 && cli.timeout <= 3600.0) {
        return Err(Failure(format!(
            "invalid --timeout {}: expected seconds from 0 to 3600",
            cli.timeout
        )));
    }
    let timeout = Duration::from_secs_f64(cli.timeout);
    let Some(metric) = cli.metric.as_deref() else {
        let outcome = query_within(cli, Request::new(Query::List), timeout)?;
        return Ok((list_text(outcome)?, State::Ok.code()));
    };
    let check = build_check(cli, metric)?;
    let query = match check.kind {
        Kind::Histogram {
            percentile,
            per_vcpu,
        } => Query::Histogram(HistogramQuery {
            metric: metric.to_owned(),
            window_s: check.window_s,
            percentiles: vec![percentile],
            per_vcpu,
        }),
        Kind::Gauge { .. } => Query::Gauge(GaugeQuery {
            metric: metric.to_owned(),
            window_s: check.window_s,
        }),
    };
    let report = match query_within(cli, Request::new(query), timeout)? {
        Outcome::Histogram(a) => check.histogram(&a)?,
        Outcome::Gauge(a) => check.gauge(&a)?,
        _ => {
            return Err(Failure(
                "the agent answered with the wrong kind of answer".into(),
            ));
        }
    };
    Ok((output::render(&report, cli.max_bytes), report.state.code()))
}

/// Runs the plugin on `args` (program name first): the text to print on
/// stdout and the exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> (String, u8) {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    (e.render().to_string(), State::Ok.code())
                }
                _ => {
                    // clap's message up to its usage block, on one line.
                    let text = e.render().to_string();
                    let first = text
                        .lines()
                        .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
                        .map(str::trim)
                        .collect::<Vec<_>>()
                        .join(" ")
                        .trim_start_matches("error: ")
                        .to_owned();
                    let mut out = output::failure(&Failure(first), NAGIOS_MAX_BYTES);
                    out.push_str("usage: check_hyper_stats -m METRIC [-w RANGE] [-c RANGE] [options] (--help for all)\n");
                    (out, State::Unknown.code())
                }
            };
        }
    };
    let max_bytes = cli.max_bytes.max(64);
    match check(&cli) {
        Ok(done) => done,
        Err(f) => (output::failure(&f, max_bytes), State::Unknown.code()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--list` prints names sanitized, and as libvirt has them (escaped)
    /// when that differs: no name adds a line or a `|`.
    #[test]
    fn list_names_are_safe() {
        let domain = |name: &str| hyper_stats_query::DomainSeries {
            uuid: "0f|1".into(),
            domain: name.into(),
            age_s: 0.5,
            metrics: vec![
                "cpu.time_percent".into(),
                "net.t|p\n0.rx.drops_per_s".into(),
            ],
        };
        let text = list_text(Outcome::List(hyper_stats_query::ListAnswer {
            newest_age_s: Some(0.5),
            histograms: vec!["runq_latency_us".into()],
            domains: vec![domain("web-1"), domain("we|b\n'x'=é")],
            agent: Vec::new(),
        }))
        .unwrap();
        assert_eq!(
            text,
            "2 domains; histogram metrics: runq_latency_us; newest data 0.5s old\n\
             web-1 (0f_1, data 0.5s old): cpu.time_percent net.t_p_0.rx.drops_per_s\n\
             we_b__x___ (0f_1, data 0.5s old, name \"we\\u{7c}b\\n'x'=é\"): cpu.time_percent net.t_p_0.rx.drops_per_s\n"
        );
    }

    #[test]
    fn durations() {
        let cases = [
            ("5m", Some(300.0)),
            ("90s", Some(90.0)),
            ("90", Some(90.0)),
            ("1h", Some(3600.0)),
            ("0.5s", Some(0.5)),
            ("", None),
            ("m", None),
            ("-5s", None),
            ("5d", None),
            ("inf", None),
            ("1e3s", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), want, "{text:?}");
        }
    }
}
