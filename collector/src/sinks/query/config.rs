//! The `[query]` section: the local socket `check_hyper_stats` asks.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::Deserialize;

/// The largest group id accepted for `query.group`: `(gid_t)-1`
/// (4294967295) tells chown(2) to leave the group unchanged, so it would
/// silently mean root's group.
pub(crate) const MAX_GID: u32 = u32::MAX - 1;

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
    /// Checks the socket path (absolute, short enough for `sun_path`) and
    /// the group: a non-empty name, or a number up to [`MAX_GID`]. Whether
    /// a named group exists is checked when the socket is created.
    pub(crate) fn validate(&self) -> Result<()> {
        if let Some(group) = &self.group {
            if group.is_empty() {
                bail!(
                    "query.group must not be empty (a group name or number; leave it out for \"nagios\" if that group exists)"
                );
            }
            if group.bytes().all(|b| b.is_ascii_digit()) {
                match group.parse::<u32>() {
                    Ok(gid) if gid <= MAX_GID => {}
                    _ => bail!("query.group = {group:?} is above the largest group id, {MAX_GID}"),
                }
            }
        }
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
