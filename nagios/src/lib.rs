//! `check_hyper_stats`: the Nagios plugin over the hyper-stats agent's
//! query socket, as a library so that its tests, benchmark and fuzz targets
//! reach the same code the binary runs.
//!
//! - [`range`]: Nagios threshold ranges (`-w`/`-c`).
//! - [`perfdata`]: perfdata items and labels.
//! - [`glob`]: `--domain`/`--exclude` patterns.
//! - [`client`]: one request and one answer over the Unix socket.
//! - [`check`]: judging an answer into a report.
//! - [`output`]: the status line, perfdata and long output within a byte
//!   budget.
//! - [`cli`]: the options and the one place that picks the exit code.

pub mod check;
pub mod cli;
pub mod client;
pub mod glob;
pub mod output;
pub mod perfdata;
pub mod range;
