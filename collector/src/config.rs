//! The agent's configuration: a TOML file whose every key has a default,
//! overridden by command-line flags.
//!
//! The file is optional at its default path and required when named with
//! `--config`. Unknown keys are errors (a typo must not silently fall back
//! to a default), and every validation error names the key, the value and
//! what would be accepted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::sources::libvirt::groups::Group;

/// Where the config file is read from when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/hyper-stats/hyper-stats.toml";

/// The fastest any stats group may be polled: below this the bulk call
/// itself (0.2-0.3 ms per domain for the cheapest groups) becomes a
/// noticeable share of libvirtd's time.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The fastest a group that libvirt answers by asking QEMU over its monitor
/// may be polled: each such group costs libvirtd 3-6 ms per domain.
pub const MIN_QEMU_INTERVAL: Duration = Duration::from_secs(1);

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How to reach libvirt and how often to ask it.
    pub libvirt: LibvirtConfig,
    /// The query socket for `check_hyper_stats`.
    pub query: QueryConfig,
    /// Pushing datapoints to Graphite (off without `carbon.address`).
    pub carbon: crate::sinks::carbon::CarbonConfig,
}

/// The `[query]` section: the local socket `check_hyper_stats` asks.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Serve the socket at all.
    pub enabled: bool,
    /// Where the socket is created (its directory too, if missing).
    pub socket: PathBuf,
    /// The socket's group (name or number); default `nagios` if that group
    /// exists, since NRPE and Nagios run checks as it.
    pub group: Option<String>,
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

/// The `[libvirt]` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LibvirtConfig {
    /// Connection URI, `qemu:///system` on a compute node.
    pub uri: String,
    /// How long one bulk-stats call may take before the poll is abandoned,
    /// so a hung libvirtd or QEMU monitor never stalls the agent.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Poll interval per stats group (`state`, `cpu`, `balloon`, `vcpu`,
    /// `net`, `block`, `perf`); groups not named use 1 s. A group set to
    /// `"off"` is not polled.
    pub intervals: BTreeMap<String, IntervalSetting>,
}

impl Default for LibvirtConfig {
    fn default() -> Self {
        LibvirtConfig {
            uri: "qemu:///system".into(),
            call_timeout: Duration::from_secs(5),
            intervals: BTreeMap::new(),
        }
    }
}

/// One group's interval: a duration such as `"1s"` or `"200ms"`, or `"off"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum IntervalSetting {
    /// Poll every this long.
    Every(Duration),
    /// Do not poll this group.
    Off,
}

impl<'de> Deserialize<'de> for IntervalSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for IntervalSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "off" {
            return Ok(IntervalSetting::Off);
        }
        humantime::parse_duration(s)
            .map(IntervalSetting::Every)
            .map_err(|e| {
                format!("invalid interval {s:?}: {e} (expected e.g. \"1s\", \"200ms\" or \"off\")")
            })
    }
}

impl Config {
    /// Reads the config from `path`, or the defaults when `path` is `None`
    /// and the default file does not exist.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config::default());
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("failed to read config file {}", path.display()));
            }
        };
        let config = Config::parse(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        Ok(config)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config> {
        let config: Config =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values serde cannot: group names and interval bounds.
    pub fn validate(&self) -> Result<()> {
        for (name, setting) in &self.libvirt.intervals {
            let Some(group) = Group::from_name(name) else {
                let known: Vec<&str> = Group::ALL.iter().map(|g| g.name()).collect();
                bail!(
                    "libvirt.intervals.{name}: unknown stats group {name:?}\nknown groups: {}",
                    known.join(", ")
                );
            };
            if let IntervalSetting::Every(every) = setting {
                let min = if group.is_cheap() {
                    MIN_INTERVAL
                } else {
                    MIN_QEMU_INTERVAL
                };
                if *every < min {
                    bail!(
                        "libvirt.intervals.{name} = {:?} is below the minimum of {:?} for this group{}",
                        every,
                        min,
                        if group.is_cheap() {
                            ""
                        } else {
                            "\nlibvirt asks QEMU over its monitor for this group, which costs milliseconds per domain"
                        }
                    );
                }
            }
        }
        if self.libvirt.call_timeout.is_zero() {
            bail!("libvirt.call_timeout must be greater than zero");
        }
        if self.libvirt.uri.trim().is_empty() {
            bail!("libvirt.uri must not be empty (e.g. \"qemu:///system\")");
        }
        // sun_path holds 108 bytes including the terminating NUL.
        let socket = &self.query.socket;
        if !socket.is_absolute() || socket.as_os_str().len() > 107 {
            bail!(
                "query.socket = {:?} must be an absolute path of at most 107 bytes",
                socket.display()
            );
        }
        self.carbon.validate()?;
        Ok(())
    }

    /// The effective interval of every polled group.
    pub fn group_intervals(&self) -> BTreeMap<Group, Duration> {
        Group::ALL
            .into_iter()
            .filter_map(|g| match self.libvirt.intervals.get(g.name()) {
                None => Some((g, Duration::from_secs(1))),
                Some(IntervalSetting::Every(d)) => Some((g, *d)),
                Some(IntervalSetting::Off) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        let iv = c.group_intervals();
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
        let iv = c.group_intervals();
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

    #[test]
    fn missing_default_file_is_fine_but_missing_named_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let err = format!("{:#}", Config::load(Some(&missing)).unwrap_err());
        assert!(err.contains("failed to read config file"), "{err}");
    }
}
