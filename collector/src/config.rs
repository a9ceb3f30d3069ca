//! The agent's configuration: a TOML file whose every key has a default,
//! overridden by command-line flags.
//!
//! Each component owns its section and its checks
//! (`sources::libvirt::config`, `sources::ebpf::config`,
//! `sinks::query::config`, `sinks::carbon::config`); this module gathers them, reads the file and
//! applies the command line, once, for every command ([`Overrides`]). The
//! file is optional at its default path and required when named with
//! `--config`. Unknown keys are errors (a typo must not silently fall back
//! to a default), and every validation error names the key, the value and
//! what would be accepted.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::sinks::carbon::CarbonConfig;
use crate::sinks::query::config::QueryConfig;
use crate::sources::ebpf::config::EbpfConfig;
use crate::sources::libvirt::config::LibvirtConfig;
use crate::sources::libvirt::groups::Group;

/// `writeln!` into a `String`, which cannot fail.
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

/// Where the config file is read from when `--config` is not given.
pub(crate) const DEFAULT_CONFIG_PATH: &str = "/etc/hyper-stats/hyper-stats.toml";

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How to reach libvirt and how often to ask it.
    pub(crate) libvirt: LibvirtConfig,
    /// The query socket for `check_hyper_stats`.
    pub(crate) query: QueryConfig,
    /// Pushing datapoints to Graphite (off without `carbon.address`).
    pub(crate) carbon: CarbonConfig,
    /// The eBPF probes' kernel maps.
    pub(crate) ebpf: EbpfConfig,
}

/// What the command line says over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--connect URI`: `libvirt.uri`.
    pub connect: Option<String>,
    /// `--carbon HOST:PORT`: `carbon.address`.
    pub carbon: Option<String>,
}

impl Config {
    /// Reads the config from `path` (or the defaults when `path` is `None`
    /// and the default file does not exist), applies `overrides` and
    /// checks the result.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Config> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let mut config = match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&text)
                .with_context(|| format!("invalid config file {}", path.display()))?,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("failed to read config file {}", path.display()));
            }
        };
        if let Some(uri) = overrides.connect {
            config.libvirt.uri = uri;
        }
        if let Some(address) = overrides.carbon {
            config.carbon.address = Some(address);
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates config text (what [`Config::load`] does with
    /// a file's contents; public for the config loader's fuzz target).
    pub fn parse(text: &str) -> Result<Config> {
        let config: Config =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every section.
    pub(crate) fn validate(&self) -> Result<()> {
        self.libvirt.validate()?;
        self.query.validate()?;
        self.carbon.validate()?;
        self.ebpf.validate()?;
        Ok(())
    }

    /// The effective settings, one `key = value` line each (`hyper-stats
    /// check-config`).
    pub fn describe(&self) -> String {
        let config = self;
        let mut out = String::new();
        outln!(out, "config OK");
        outln!(out, "libvirt.uri = {:?}", config.libvirt.uri);
        outln!(
            out,
            "libvirt.call_timeout = {:?}",
            config.libvirt.call_timeout
        );
        let intervals = config.libvirt.group_intervals();
        for group in Group::ALL {
            match intervals.get(&group) {
                Some(every) => outln!(out, "libvirt.intervals.{group} = {every:?}"),
                None => outln!(out, "libvirt.intervals.{group} = off"),
            }
        }
        match &config.carbon.address {
            Some(address) => outln!(
                out,
                "carbon.address = {address:?} ({})",
                config.carbon.protocol.name()
            ),
            None => outln!(out, "carbon.address = none (Carbon sink off)"),
        }
        out.push_str(&config.carbon.describe_sent());
        if config.query.enabled {
            outln!(out, "query.socket = {:?}", config.query.socket);
            match &config.query.group {
                Some(group) => outln!(out, "query.group = {group:?}"),
                None => outln!(
                    out,
                    "query.group = \"nagios\" if that group exists, else root's"
                ),
            }
        } else {
            outln!(out, "query.enabled = false (no query socket)");
        }
        match config.ebpf.max_watched {
            Some(n) => outln!(out, "ebpf.max_watched = {n}"),
            None => outln!(
                out,
                "ebpf.max_watched = auto (the host's vCPU threads at start, and room for half as many again, at least 256)"
            ),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sources::libvirt::groups::Group;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        let iv = c.libvirt.group_intervals();
        assert_eq!(iv.len(), 7);
        assert!(iv.values().all(|d| *d == Duration::from_secs(1)));
    }

    #[test]
    fn full_file_parses() {
        let c = Config::parse(
            r#"
            [libvirt]
            uri = "qemu+ssh://h/system"
            call_timeout = "2s"
            [libvirt.intervals]
            net = "100ms"
            block = "5s"
            perf = "off"
            "#,
        )
        .unwrap();
        assert_eq!(c.libvirt.uri, "qemu+ssh://h/system");
        assert_eq!(c.libvirt.call_timeout, Duration::from_secs(2));
        let iv = c.libvirt.group_intervals();
        assert_eq!(iv[&Group::Net], Duration::from_millis(100));
        assert_eq!(iv[&Group::Block], Duration::from_secs(5));
        assert!(!iv.contains_key(&Group::Perf));
    }

    #[test]
    fn errors_name_the_key_and_the_problem() {
        let cases = [
            ("[libvirt]\nurl = \"x\"", "unknown field `url`"),
            (
                "[libvirt.intervals]\ndisk = \"1s\"",
                "libvirt.intervals.disk: unknown stats group",
            ),
            (
                "[libvirt.intervals]\ncpu = \"200ms\"",
                "libvirt.intervals.cpu = 200ms is below the minimum of 1s",
            ),
            (
                "[libvirt.intervals]\nnet = \"10ms\"",
                "libvirt.intervals.net = 10ms is below the minimum of 100ms",
            ),
            (
                "[libvirt.intervals]\nnet = \"fast\"",
                "invalid interval \"fast\"",
            ),
            (
                "[libvirt]\ncall_timeout = \"0s\"",
                "libvirt.call_timeout must be greater than zero",
            ),
            // Every number and duration has a maximum too: these used to
            // pass check-config (the interval then panicked at start).
            (
                "[libvirt]\ncall_timeout = \"10000000000000000000s\"",
                "libvirt.call_timeout = 10000000000000000000s is above the maximum of 60s",
            ),
            (
                "[libvirt]\ncall_timeout = \"61s\"",
                "libvirt.call_timeout = 61s is above the maximum of 60s",
            ),
            (
                "[libvirt.intervals]\nstate = \"10000000000000000000s\"",
                "libvirt.intervals.state = 10000000000000000000s is above the maximum of 900s (15 minutes)",
            ),
            (
                "[libvirt.intervals]\nblock = \"901s\"",
                "libvirt.intervals.block = 901s is above the maximum of 900s",
            ),
            (
                "[libvirt.intervals]\nnet = \"99999999999999999999999s\"",
                "invalid interval \"99999999999999999999999s\"",
            ),
            (
                "[carbon]\nqueue_points = 100000001",
                "carbon.queue_points = 100000001 is above the maximum of 100000000",
            ),
            (
                "[carbon]\nqueue_points = 0",
                "carbon.queue_points must be greater than zero",
            ),
            (
                "[carbon]\nqueue_points = 18446744073709551615",
                "queue_points",
            ),
            (
                "[carbon]\nspool_max_size = \"16000000TiB\"",
                "carbon.spool_max_size = 17592186044416000000 bytes is above the maximum of 1099511627776 bytes (1TiB)",
            ),
            (
                "[carbon]\nspool_max_size = \"1KiB\"",
                "carbon.spool_max_size = 1024 bytes is below the minimum",
            ),
            ("[carbon]\nspool_max_size = \"99999999TiB\"", "invalid size"),
            (
                "[carbon]\naddress = \"h:65536\"",
                "carbon.address = \"h:65536\": invalid port \"65536\"",
            ),
            (
                "[carbon]\naddress = \"h:0\"",
                "carbon.address = \"h:0\": invalid port \"0\"",
            ),
            (
                "[query]\ngroup = \"4294967295\"",
                "query.group = \"4294967295\" is above the largest group id, 4294967294",
            ),
            (
                "[query]\ngroup = \"99999999999\"",
                "query.group = \"99999999999\" is above the largest group id",
            ),
            ("[query]\ngroup = \"\"", "query.group must not be empty"),
            ("[sinks]\n", "unknown field `sinks`"),
            (
                "[query]\nsocket = \"q.sock\"",
                "query.socket = \"q.sock\" must be",
            ),
            ("[query]\nport = 1", "unknown field `port`"),
            ("[carbon]\nprotocol = \"udp\"", "unknown variant `udp`"),
            (
                "[carbon]\naddress = \":2003\"",
                "carbon.address = \":2003\": missing host",
            ),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", Config::parse(text).unwrap_err());
            assert!(
                err.contains(want),
                "config {text:?}: error {err:?} lacks {want:?}"
            );
        }
    }

    /// The limits themselves are accepted: each range is inclusive.
    #[test]
    fn the_limits_are_inclusive() {
        let c = Config::parse(
            r#"
            [libvirt]
            call_timeout = "60s"
            [libvirt.intervals]
            state = "100ms"
            cpu = "15m"
            [carbon]
            queue_points = 100000000
            spool_max_size = "1TiB"
            [query]
            group = "4294967294"
            "#,
        )
        .unwrap();
        assert_eq!(c.libvirt.call_timeout, Duration::from_secs(60));
        assert_eq!(
            c.libvirt.group_intervals()[&Group::Cpu],
            Duration::from_secs(900)
        );
    }

    #[test]
    fn missing_default_file_is_fine_but_missing_named_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let err = format!(
            "{:#}",
            Config::load(Some(&missing), Overrides::default()).unwrap_err()
        );
        assert!(err.contains("failed to read config file"), "{err}");
    }
}
