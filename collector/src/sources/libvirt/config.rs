//! The `[libvirt]` section: how to reach libvirt and how often to poll
//! each stats group.
//!
//! Every key has a default; [`LibvirtConfig::validate`] checks what serde
//! cannot (group names, interval bounds) and names the key, the value and
//! what would be accepted.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::Deserialize;

use super::groups::Group;

/// The fastest any stats group may be polled: below this the bulk call
/// itself (0.2-0.3 ms per domain for the cheapest groups) becomes a
/// noticeable share of libvirtd's time.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The fastest a group that libvirt answers by asking QEMU over its monitor
/// may be polled: each such group costs libvirtd 3-6 ms per domain.
pub(crate) const MIN_QEMU_INTERVAL: Duration = Duration::from_secs(1);

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
