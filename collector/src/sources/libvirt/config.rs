//! The `[libvirt]` section: how to reach libvirt and how often to poll
//! each stats group.
//!
//! Every key has a default; [`LibvirtConfig::validate`] checks what serde
//! cannot (group names, the range of every interval and of the call
//! timeout) and names the key, the value and what would be accepted, so
//! that `hyper-stats check-config` refuses every value the agent could not
//! start with.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::Deserialize;

use super::conn::STUCK_CALL_ABANDON_AFTER;
use super::groups::Group;

/// The fastest any stats group may be polled: below this the bulk call
/// itself (0.2-0.3 ms per domain for the cheapest groups) becomes a
/// noticeable share of libvirtd's time.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The fastest a group that libvirt answers by asking QEMU over its monitor
/// may be polled: each such group costs libvirtd 3-6 ms per domain.
pub(crate) const MIN_QEMU_INTERVAL: Duration = Duration::from_secs(1);

/// The slowest any stats group may be polled: 15 minutes, the longest
/// window the rollup keeps and the query socket answers
/// (`hyper_stats_query::MAX_WINDOW_S`); polled less often, a group would
/// have no value in most windows a check asks for. It also keeps the
/// arithmetic on intervals (a domain is gone after 3 of the longest) far
/// from `Duration`'s limits, where a value such as `"10000000000000000000s"`
/// used to panic at start.
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// The longest `call_timeout`: a call stuck this long has its worker
/// abandoned for a fresh connection anyway (the connection layer's
/// [`STUCK_CALL_ABANDON_AFTER`]), so a longer deadline would only keep the
/// poll waiting; libvirt's keepalive already fails calls to a dead daemon
/// within about 8 s.
pub(crate) const MAX_CALL_TIMEOUT: Duration = STUCK_CALL_ABANDON_AFTER;

/// The `[libvirt]` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LibvirtConfig {
    /// Connection URI, `qemu:///system` on a compute node.
    pub(crate) uri: String,
    /// How long one bulk-stats call may take before the poll is abandoned,
    /// so a hung libvirtd or QEMU monitor never stalls the agent.
    #[serde(with = "humantime_serde")]
    pub(crate) call_timeout: Duration,
    /// Poll interval per stats group (`state`, `cpu`, `balloon`, `vcpu`,
    /// `net`, `block`, `perf`); groups not named use 1 s. A group set to
    /// `"off"` is not polled.
    pub(crate) intervals: BTreeMap<String, IntervalSetting>,
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
pub(crate) enum IntervalSetting {
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

impl LibvirtConfig {
    /// Checks the values serde cannot: group names, interval bounds, the
    /// timeout and the URI.
    pub(crate) fn validate(&self) -> Result<()> {
        for (name, setting) in &self.intervals {
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
                if *every > MAX_INTERVAL {
                    bail!(
                        "libvirt.intervals.{name} = {every:?} is above the maximum of {MAX_INTERVAL:?} (15 minutes)\n\
                         the longest window a check can ask for is 15 minutes; use \"off\" not to poll this group"
                    );
                }
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
        if self.call_timeout.is_zero() {
            bail!("libvirt.call_timeout must be greater than zero");
        }
        if self.call_timeout > MAX_CALL_TIMEOUT {
            bail!(
                "libvirt.call_timeout = {:?} is above the maximum of {MAX_CALL_TIMEOUT:?}\n\
                 a call stuck that long is abandoned for a fresh connection anyway",
                self.call_timeout
            );
        }
        if self.uri.trim().is_empty() {
            bail!("libvirt.uri must not be empty (e.g. \"qemu:///system\")");
        }
        Ok(())
    }

    /// The effective interval of every polled group.
    pub(crate) fn group_intervals(&self) -> BTreeMap<Group, Duration> {
        Group::ALL
            .into_iter()
            .filter_map(|g| match self.intervals.get(g.name()) {
                None => Some((g, Duration::from_secs(1))),
                Some(IntervalSetting::Every(d)) => Some((g, *d)),
                Some(IntervalSetting::Off) => None,
            })
            .collect()
    }
}
