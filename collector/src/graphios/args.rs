//! `hyper-stats graphios` options and the Graphios naming rules they
//! select.

use std::path::PathBuf;
use std::time::Duration;

/// `hyper-stats graphios` options (Graphios's own, renamed to this CLI's
/// style).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The Nagios perfdata spool directory (Graphios's spool_directory).
    #[arg(long, value_name = "DIR")]
    pub(crate) spool: PathBuf,
    /// Carbon at HOST:PORT (overrides carbon.address).
    #[arg(long, value_name = "HOST:PORT")]
    pub carbon: Option<String>,
    /// Prepended to every path (Graphios's metric_base_path).
    #[arg(long, value_name = "PATH")]
    pub(crate) base_path: Option<String>,
    /// Name series HOST.SERVICEDESC.LABEL, sending every service
    /// (Graphios's use_service_desc).
    #[arg(long)]
    pub(crate) use_service_desc: bool,
    /// Keep the dots of Nagios host names (by default they become the
    /// replacement character).
    #[arg(long)]
    pub(crate) no_replace_hostname: bool,
    /// Reverse the components of Nagios host names (a.b.c → c.b.a).
    #[arg(long)]
    pub(crate) reverse_hostname: bool,
    /// Replaces characters Carbon paths cannot hold.
    #[arg(long, value_name = "CHAR", default_value = "_")]
    pub(crate) replacement_character: char,
    /// How long to wait between scans of the spool directory.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub(crate) interval: Duration,
    /// Process the files there now, then exit (nonzero if some could not
    /// be confirmed by Carbon within --timeout).
    #[arg(long)]
    pub(crate) once: bool,
    /// With --once: how long to wait for Carbon.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
}

/// Graphios's naming options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Naming {
    /// `metric_base_path`, prepended to every path.
    pub(crate) base_path: Option<String>,
    /// `use_service_desc`.
    pub(crate) use_service_desc: bool,
    /// `replace_hostname`: dots in host names become `replacement`.
    pub(crate) replace_hostname: bool,
    /// `reverse_hostname`.
    pub(crate) reverse_hostname: bool,
    /// `replacement_character`.
    pub(crate) replacement: char,
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
