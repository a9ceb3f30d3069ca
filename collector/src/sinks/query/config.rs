//! The `[query]` section: the local socket `check_hyper_stats` asks.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::Deserialize;

/// The `[query]` section: the local socket `check_hyper_stats` asks.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct QueryConfig {
    /// Serve the socket at all.
    pub(crate) enabled: bool,
    /// Where the socket is created (its directory too, if missing).
    pub(crate) socket: PathBuf,
    /// The socket's group (name or number); default `nagios` if that group
    /// exists, since NRPE and Nagios run checks as it.
    pub(crate) group: Option<String>,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            enabled: true,
            socket: PathBuf::from(hyper_stats_query::DEFAULT_SOCKET_PATH),
            group: None,
        }
    }
}

impl QueryConfig {
    /// Checks the socket path: absolute, and short enough for `sun_path`.
    pub(crate) fn validate(&self) -> Result<()> {
        // sun_path holds 108 bytes including the terminating NUL.
        let socket = &self.socket;
        if !socket.is_absolute() || socket.as_os_str().len() > 107 {
            bail!(
                "query.socket = {:?} must be an absolute path of at most 107 bytes",
                socket.display()
            );
        }
        Ok(())
    }
}
