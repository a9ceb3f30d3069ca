//! The query socket protocol: the one definition of what the agent's query
//! socket (`hyper-stats`, `sinks::query`) and `check_hyper_stats` say to
//! each other.
//!
//! # Framing
//! One connection carries one exchange: the client writes one request as a
//! single line of JSON ending in `\n`, the agent answers with one line of
//! JSON ending in `\n` and closes the connection. A request longer than
//! [`MAX_REQUEST_BYTES`] (newline included) is refused with
//! [`ErrorCode::TooLarge`] without being read further; a request that is
//! not valid JSON, names an unknown `op` or carries bad values gets
//! [`ErrorCode::BadRequest`]. Every answer carries the protocol version
//! `v`; a request with another `v` than [`VERSION`] gets
//! [`ErrorCode::UnsupportedVersion`] (so a newer plugin against an older
//! agent fails with a clear message instead of misreading fields).
//!
//! # Requests
//! ```json
//! {"v":1,"op":"list"}
//! {"v":1,"op":"histogram","metric":"runq_latency_us","window_s":300,"percentiles":[99.0],"per_vcpu":true}
//! {"v":1,"op":"gauge","metric":"vcpu.*.delay_percent","window_s":300}
//! ```
//! - `list`: every domain the agent sees, its series, and the histogram
//!   metrics it can answer.
//! - `histogram`: for a latency metric of the eBPF probes (named as in the
//!   datapoint stream without the summary suffix, e.g. `runq_latency_us`),
//!   the given percentiles of the histogram of the last `window_s` seconds,
//!   merged over all of a domain's vCPUs (merged, never averaged
//!   percentiles), and per vCPU when `per_vcpu` is set. Values are in µs.
//! - `gauge`: for libvirt metrics (`cpu.time_percent`,
//!   `vcpu.*.delay_percent`, `block.*.wr.latency_mean_ms`, ...), the
//!   average, maximum, minimum and last value of each matching series over
//!   the last `window_s` seconds. `*` in `metric` matches exactly one
//!   dotted component (see [`metric_matches`]).
//!
//! # Ages
//! Every answer carries `newest_age_s`: seconds since the newest datapoint
//! the agent received from any source (`null` before the first one). A
//! growing value means the agent is up but its sources are not delivering:
//! the plugin treats data older than its `--max-age` as UNKNOWN. Each
//! domain and series carries its own `age_s` too.

use serde::{Deserialize, Serialize};

/// One exchange with the agent over its socket, for every client.
pub mod client;
pub mod metric;
/// Nagios perfdata read into items, for the plugin and `hyper-stats graphios`.
pub mod perfdata;

/// The protocol version this crate speaks. Bump it when a field changes
/// meaning or a required field is added.
pub const VERSION: u32 = 1;

/// Where the agent listens unless configured otherwise.
pub const DEFAULT_SOCKET_PATH: &str = "/run/hyper-stats/hyper-stats.sock";

/// The longest request line accepted, newline included: real requests are
/// under 300 bytes, so 16 KiB leaves room for long metric patterns and
/// percentile lists while bounding what a misbehaving client can make the
/// agent buffer.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// The longest window that can be asked for: 15 minutes, what the agent's
/// histogram windows and gauge rings keep.
pub const MAX_WINDOW_S: u32 = 15 * 60;

/// The most percentiles one request may ask for.
pub const MAX_PERCENTILES: usize = 16;

/// One request line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The protocol version the client speaks; must be [`VERSION`].
    pub v: u32,
    /// What is asked.
    #[serde(flatten)]
    pub query: Query,
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Query {
    /// The domains and series the agent knows.
    List,
    /// Percentiles of a latency histogram metric over a window.
    Histogram(HistogramQuery),
    /// Average, maximum, minimum and last value of libvirt series over a
    /// window.
    Gauge(GaugeQuery),
}

/// A `histogram` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramQuery {
    /// The histogram metric, e.g. `runq_latency_us`.
    pub metric: String,
    /// The window in seconds, 1 to [`MAX_WINDOW_S`].
    pub window_s: u32,
    /// Percentiles to compute, each in (0, 100], e.g. `[99.0, 99.9]`.
    pub percentiles: Vec<f64>,
    /// Also answer per vCPU.
    #[serde(default)]
    pub per_vcpu: bool,
}

/// A `gauge` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GaugeQuery {
    /// The metric or pattern, `*` matching one dotted component, e.g.
    /// `vcpu.*.delay_percent`.
    pub metric: String,
    /// The window in seconds, 1 to [`MAX_WINDOW_S`].
    pub window_s: u32,
}

/// One response line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The protocol version of the agent; always [`VERSION`] from this
    /// crate's agent.
    pub v: u32,
    /// The answer or the error.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The body of a response: exactly one of these keys is present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The answer to `list`.
    List(ListAnswer),
    /// The answer to `histogram`.
    Histogram(HistogramAnswer),
    /// The answer to `gauge`.
    Gauge(GaugeAnswer),
    /// The request could not be answered.
    Error(ErrorReply),
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, an unknown `op`, a missing field or a value out of range.
    BadRequest,
    /// The request line is longer than [`MAX_REQUEST_BYTES`].
    TooLarge,
    /// `v` is not [`VERSION`].
    UnsupportedVersion,
    /// No series of that name exists (for `gauge`: no domain has a
    /// matching series; for `histogram`: not a histogram metric the agent
    /// knows).
    UnknownMetric,
    /// The agent failed on its side.
    Internal,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The kind of error, for programs.
    pub code: ErrorCode,
    /// What went wrong, for people: names the value that was refused.
    pub message: String,
}

/// The answer to `list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListAnswer {
    /// Seconds since the newest datapoint the agent received, if any.
    pub newest_age_s: Option<f64>,
    /// Histogram metrics that can be asked for with `histogram`, e.g.
    /// `runq_latency_us`.
    pub histograms: Vec<String>,
    /// Every domain with recent data, sorted by name.
    pub domains: Vec<DomainSeries>,
    /// The agent's own series (`agent.*`), sorted; they belong to no
    /// domain and are asked for with `gauge` like domain series.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent: Vec<String>,
}

/// One domain in a `list` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainSeries {
    /// The domain's UUID.
    pub uuid: String,
    /// The domain's current name.
    pub domain: String,
    /// Seconds since the domain's newest datapoint.
    pub age_s: f64,
    /// Every series of the domain in the datapoint stream, sorted.
    pub metrics: Vec<String>,
}

/// The answer to `histogram`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramAnswer {
    /// The metric asked for.
    pub metric: String,
    /// The window asked for, in seconds.
    pub window_s: u32,
    /// The percentiles asked for, in the order of every `values` list.
    pub percentiles: Vec<f64>,
    /// Seconds since the newest datapoint the agent received, if any.
    pub newest_age_s: Option<f64>,
    /// How many domains the agent sees at all (with or without this
    /// metric), so that "no data" and "no domains" can be told apart.
    pub domains_total: usize,
    /// Every domain with this metric, sorted by name.
    pub domains: Vec<HistogramDomain>,
}

/// One domain's values in a `histogram` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramDomain {
    /// The domain's UUID.
    pub uuid: String,
    /// The domain's current name.
    pub domain: String,
    /// Seconds since the newest summary of this metric for this domain
    /// (`null` if the stream never carried one).
    pub age_s: Option<f64>,
    /// The merged values of all vCPUs.
    #[serde(flatten)]
    pub all: HistogramValues,
    /// Per vCPU, sorted by vCPU id; empty unless `per_vcpu` was asked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vcpus: Vec<VcpuValues>,
}

/// The values of one histogram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramValues {
    /// Samples in the window.
    pub count: u64,
    /// One value per requested percentile, in µs; `null` when `count` is 0.
    pub values: Vec<Option<f64>>,
    /// The largest sample in the window, in µs; `null` when `count` is 0.
    pub max: Option<f64>,
}

/// One vCPU's values in a `histogram` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VcpuValues {
    /// The vCPU id.
    pub vcpu: u32,
    /// Its values.
    #[serde(flatten)]
    pub values: HistogramValues,
}

/// The answer to `gauge`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GaugeAnswer {
    /// The metric or pattern asked for.
    pub metric: String,
    /// The window asked for, in seconds.
    pub window_s: u32,
    /// Seconds since the newest datapoint the agent received, if any.
    pub newest_age_s: Option<f64>,
    /// How many domains the agent sees at all.
    pub domains_total: usize,
    /// Every domain with at least one matching series, sorted by name.
    pub domains: Vec<GaugeDomain>,
    /// The agent's own series (`agent.*`) matching the pattern.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent: Vec<GaugeSeries>,
}

/// One domain's series in a `gauge` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GaugeDomain {
    /// The domain's UUID.
    pub uuid: String,
    /// The domain's current name.
    pub domain: String,
    /// Every matching series of the domain, sorted by metric name.
    pub series: Vec<GaugeSeries>,
}

/// One series' summary over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GaugeSeries {
    /// The full metric name, e.g. `vcpu.1.delay_percent`.
    pub metric: String,
    /// Samples in the window; 0 when the series exists but had no value
    /// in the window (then `avg`, `max`, `min` are `null`).
    pub samples: u64,
    /// The mean of the samples in the window.
    pub avg: Option<f64>,
    /// The largest sample in the window.
    pub max: Option<f64>,
    /// The smallest sample in the window.
    pub min: Option<f64>,
    /// The newest value, whenever it was taken.
    pub last: f64,
    /// Seconds since the newest value.
    pub age_s: f64,
}

impl Request {
    /// A request of this crate's [`VERSION`].
    pub fn new(query: Query) -> Request {
        Request { v: VERSION, query }
    }

    /// The request as one line, newline included.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("requests always serialize");
        line.push('\n');
        line
    }
}

impl Response {
    /// A response of this crate's [`VERSION`].
    pub fn new(outcome: Outcome) -> Response {
        Response {
            v: VERSION,
            outcome,
        }
    }

    /// An error response.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
        Response::new(Outcome::Error(ErrorReply {
            code,
            message: message.into(),
        }))
    }

    /// The response as one line, newline included.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("responses always serialize");
        line.push('\n');
        line
    }
}

/// Parses and validates one request line (without or with its newline).
/// The error is the reply to send.
pub fn parse_request(line: &[u8]) -> Result<Request, ErrorReply> {
    let bad = |message: String| ErrorReply {
        code: ErrorCode::BadRequest,
        message,
    };
    if line.len() > MAX_REQUEST_BYTES {
        return Err(ErrorReply {
            code: ErrorCode::TooLarge,
            message: format!(
                "request of {} bytes is longer than the limit of {MAX_REQUEST_BYTES}",
                line.len()
            ),
        });
    }
    // The version is checked before the rest so that a request of another
    // version with fields this version does not know is named as such.
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| bad(format!("request is not valid JSON: {e}")))?;
    match value.get("v").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(VERSION) => {}
        Some(v) => {
            return Err(ErrorReply {
                code: ErrorCode::UnsupportedVersion,
                message: format!(
                    "protocol version {v} is not supported; this agent speaks {VERSION}"
                ),
            });
        }
        None => return Err(bad("request has no protocol version field `v`".into())),
    }
    let request: Request =
        serde_json::from_value(value).map_err(|e| bad(format!("invalid request: {e}")))?;
    request.validate().map_err(bad)?;
    Ok(request)
}

impl Request {
    /// Checks the values serde cannot: window and percentile bounds.
    pub fn validate(&self) -> Result<(), String> {
        let window = |w: u32| {
            if w == 0 || w > MAX_WINDOW_S {
                Err(format!(
                    "window_s {w} is out of range: expected 1 to {MAX_WINDOW_S}"
                ))
            } else {
                Ok(())
            }
        };
        let metric = |m: &str| {
            if m.is_empty() || m.len() > 256 {
                Err(format!(
                    "metric name of {} bytes: expected 1 to 256",
                    m.len()
                ))
            } else {
                Ok(())
            }
        };
        match &self.query {
            Query::List => Ok(()),
            Query::Gauge(q) => {
                metric(&q.metric)?;
                window(q.window_s)
            }
            Query::Histogram(q) => {
                metric(&q.metric)?;
                window(q.window_s)?;
                if q.percentiles.is_empty() || q.percentiles.len() > MAX_PERCENTILES {
                    return Err(format!(
                        "{} percentiles asked: expected 1 to {MAX_PERCENTILES}",
                        q.percentiles.len()
                    ));
                }
                for p in &q.percentiles {
                    if !(*p > 0.0 && *p <= 100.0) {
                        return Err(format!(
                            "percentile {p} is out of range: expected more than 0 and at most 100"
                        ));
                    }
                }
                Ok(())
            }
        }
    }
}

/// Whether `metric` (a full dotted name) matches `pattern`, in which a
/// component `*` matches exactly one component: `vcpu.*.delay_percent`
/// matches `vcpu.0.delay_percent` but not `vcpu.delay_percent` or
/// `vcpu.0.1.delay_percent`.
pub fn metric_matches(pattern: &str, metric: &str) -> bool {
    let mut p = pattern.split('.');
    let mut m = metric.split('.');
    loop {
        match (p.next(), m.next()) {
            (None, None) => return true,
            (Some(pc), Some(mc)) if pc == "*" || pc == mc => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_the_documented_shape() {
        let cases = [
            (Request::new(Query::List), r#"{"v":1,"op":"list"}"#),
            (
                Request::new(Query::Histogram(HistogramQuery {
                    metric: "runq_latency_us".into(),
                    window_s: 300,
                    percentiles: vec![99.0],
                    per_vcpu: true,
                })),
                r#"{"v":1,"op":"histogram","metric":"runq_latency_us","window_s":300,"percentiles":[99.0],"per_vcpu":true}"#,
            ),
            (
                Request::new(Query::Gauge(GaugeQuery {
                    metric: "vcpu.*.delay_percent".into(),
                    window_s: 60,
                })),
                r#"{"v":1,"op":"gauge","metric":"vcpu.*.delay_percent","window_s":60}"#,
            ),
        ];
        for (request, want) in cases {
            let line = request.to_line();
            assert_eq!(line.trim_end(), want);
            assert_eq!(parse_request(line.as_bytes()).unwrap(), request);
        }
    }

    #[test]
    fn bad_requests_are_refused_with_the_reason() {
        let long = format!(
            r#"{{"v":1,"op":"gauge","metric":"{}","window_s":1}}"#,
            "x".repeat(MAX_REQUEST_BYTES)
        );
        let cases: &[(&str, ErrorCode, &str)] = &[
            ("", ErrorCode::BadRequest, "not valid JSON"),
            ("{", ErrorCode::BadRequest, "not valid JSON"),
            ("[1,2]", ErrorCode::BadRequest, "no protocol version"),
            (
                r#"{"op":"list"}"#,
                ErrorCode::BadRequest,
                "no protocol version",
            ),
            (
                r#"{"v":2,"op":"list"}"#,
                ErrorCode::UnsupportedVersion,
                "version 2",
            ),
            (
                r#"{"v":1,"op":"drop_tables"}"#,
                ErrorCode::BadRequest,
                "unknown variant",
            ),
            (
                r#"{"v":1,"op":"gauge","metric":"x"}"#,
                ErrorCode::BadRequest,
                "window_s",
            ),
            (
                r#"{"v":1,"op":"gauge","metric":"x","window_s":0}"#,
                ErrorCode::BadRequest,
                "window_s 0",
            ),
            (
                r#"{"v":1,"op":"gauge","metric":"x","window_s":901}"#,
                ErrorCode::BadRequest,
                "window_s 901",
            ),
            (
                r#"{"v":1,"op":"gauge","metric":"","window_s":9}"#,
                ErrorCode::BadRequest,
                "metric name",
            ),
            (
                r#"{"v":1,"op":"histogram","metric":"r","window_s":9,"percentiles":[]}"#,
                ErrorCode::BadRequest,
                "0 percentiles",
            ),
            (
                r#"{"v":1,"op":"histogram","metric":"r","window_s":9,"percentiles":[101]}"#,
                ErrorCode::BadRequest,
                "percentile 101",
            ),
            (
                r#"{"v":1,"op":"histogram","metric":"r","window_s":9,"percentiles":[0]}"#,
                ErrorCode::BadRequest,
                "percentile 0",
            ),
            (&long, ErrorCode::TooLarge, "longer than the limit"),
        ];
        for (line, code, text) in cases {
            let err = parse_request(line.as_bytes()).unwrap_err();
            assert_eq!(err.code, *code, "{line:.80}: {}", err.message);
            assert!(err.message.contains(text), "{line:.80}: {}", err.message);
        }
    }

    #[test]
    fn responses_round_trip() {
        let r = Response::new(Outcome::Histogram(HistogramAnswer {
            metric: "runq_latency_us".into(),
            window_s: 60,
            percentiles: vec![99.0],
            newest_age_s: Some(0.4),
            domains_total: 1,
            domains: vec![HistogramDomain {
                uuid: "u".into(),
                domain: "web".into(),
                age_s: Some(0.4),
                all: HistogramValues {
                    count: 10,
                    values: vec![Some(12.5)],
                    max: Some(20.0),
                },
                vcpus: vec![VcpuValues {
                    vcpu: 0,
                    values: HistogramValues {
                        count: 0,
                        values: vec![None],
                        max: None,
                    },
                }],
            }],
        }));
        let line = r.to_line();
        assert!(line.starts_with(r#"{"v":1,"histogram":{"#), "{line}");
        let back: Response = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r);
        let e = Response::error(ErrorCode::UnknownMetric, "no series cpu.nope");
        assert_eq!(
            e.to_line().trim_end(),
            r#"{"v":1,"error":{"code":"unknown_metric","message":"no series cpu.nope"}}"#
        );
    }

    #[test]
    fn patterns_match_one_component_per_star() {
        let cases = [
            ("cpu.time_percent", "cpu.time_percent", true),
            ("cpu.time_percent", "cpu.user_percent", false),
            ("vcpu.*.delay_percent", "vcpu.0.delay_percent", true),
            ("vcpu.*.delay_percent", "vcpu.12.delay_percent", true),
            ("vcpu.*.delay_percent", "vcpu.delay_percent", false),
            ("vcpu.*.delay_percent", "vcpu.0.1.delay_percent", false),
            (
                "block.*.wr.latency_mean_ms",
                "block.vda.wr.latency_mean_ms",
                true,
            ),
            (
                "block.*.*.latency_mean_ms",
                "block.vda.rd.latency_mean_ms",
                true,
            ),
            ("balloon.*", "balloon.rss_bytes", true),
            ("balloon.*", "balloon", false),
            ("*", "cpu", true),
        ];
        for (pattern, metric, want) in cases {
            assert_eq!(
                metric_matches(pattern, metric),
                want,
                "{pattern} vs {metric}"
            );
        }
    }
}
