//! The `[carbon]` config section: where Carbon is, which protocol it
//! speaks, which series it gets, how they are named and how much may wait
//! for it.
//!
//! Every key has a default; the sink is off until `address` is set (in the
//! file or with `hyper-stats run --carbon HOST:PORT`). Validation names the
//! key, the value and what would be accepted, like the rest of the config.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::Deserialize;

use super::filter::{ALWAYS_SENT, Family, Filter};
use super::path::Template;

/// Carbon's plaintext (line) receiver port, used when `address` has none.
pub(crate) const DEFAULT_PLAINTEXT_PORT: u16 = 2003;

/// Carbon's pickle receiver port, used when `address` has none.
pub(crate) const DEFAULT_PICKLE_PORT: u16 = 2004;

/// The default path template: `hyperstats.<host>.<domain>.<metric>`.
pub const DEFAULT_PATH: &str = "<prefix>.<host>.<domain>.<metric>";

/// Points kept in memory while Carbon is unreachable, unless the config
/// says otherwise: a point costs 32 bytes here (its path is shared), so
/// this is about 32 MB, 16 minutes of a node producing 1,000 points/s.
pub(crate) const DEFAULT_QUEUE_POINTS: usize = 1_000_000;

/// The disk spool's size limit unless the config says otherwise: about 14
/// million points (75 bytes a line), 4 hours at 1,000 points/s.
pub(crate) const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;

/// The smallest spool limit accepted: below this a single spool segment
/// would not fit.
pub(crate) const MIN_SPOOL_MAX_BYTES: u64 = 1 << 20;

/// The largest spool limit accepted, 1 TiB: about 14 billion points, 160
/// days of a node producing 1,000 points/s, more than any Carbon would be
/// sent back; a larger value is a typo (`16000000TiB` used to pass).
pub(crate) const MAX_SPOOL_MAX_BYTES: u64 = 1 << 40;

/// The most points the in-memory queue may hold, 100 million: about 3.2 GB
/// at 32 bytes a point, memory a compute node's guests need more; a longer
/// outage belongs in the disk spool (`spool_dir`).
pub(crate) const MAX_QUEUE_POINTS: usize = 100_000_000;

/// The wire protocol spoken to Carbon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `path value timestamp\n` lines (Carbon's port 2003).
    #[default]
    Plaintext,
    /// Length-prefixed pickled lists of `(path, (timestamp, value))`
    /// (Carbon's port 2004): less parsing work for Carbon at high volume.
    Pickle,
}

impl Protocol {
    /// The port Carbon listens on for this protocol by default.
    pub(crate) fn default_port(self) -> u16 {
        match self {
            Protocol::Plaintext => DEFAULT_PLAINTEXT_PORT,
            Protocol::Pickle => DEFAULT_PICKLE_PORT,
        }
    }

    /// The protocol's name as the config spells it.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Plaintext => "plaintext",
            Protocol::Pickle => "pickle",
        }
    }
}

/// The `[carbon]` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CarbonConfig {
    /// `HOST:PORT` of Carbon (a carbon-cache or a relay in front of
    /// several); the port defaults to the protocol's (2003 or 2004). No
    /// address: no Carbon sink.
    pub(crate) address: Option<String>,
    /// `plaintext` (default) or `pickle`.
    pub(crate) protocol: Protocol,
    /// First component(s) of every path, dotted (`<prefix>` in `path`).
    pub(crate) prefix: String,
    /// Path template of a domain's series. Placeholders: `<prefix>`,
    /// `<host>`, `<domain>` (the domain's name), `<uuid>` and `<metric>`
    /// (dotted). Every substituted component is sanitized.
    pub(crate) path: String,
    /// This node's name in paths (`<host>`); default: the kernel's
    /// hostname with dots replaced by `_`.
    pub(crate) host: Option<String>,
    /// Points that may wait in memory for Carbon; beyond this the oldest
    /// go to the spool, or are dropped when there is none.
    pub(crate) queue_points: usize,
    /// Directory of the disk spool (created if missing); no spool if unset.
    pub(crate) spool_dir: Option<PathBuf>,
    /// Size limit of the disk spool, e.g. `"512MiB"`, `"2GiB"` or bytes;
    /// beyond it the oldest spooled points are dropped.
    pub(crate) spool_max_size: ByteSize,
    /// The metric families sent to Carbon, by first name component
    /// ([`Family`]); default: all. The merged histograms and the agent's
    /// series go whatever this says (see [`super::filter`]).
    pub(crate) families: Vec<String>,
    /// Whether the `vcpu.N.*` series go to Carbon. Off by default: they
    /// are two thirds of a 4-vCPU guest's series, the merged histograms
    /// carry the guest's distribution, and JSON and the query socket keep
    /// them (see the README's Graphite section for the sizing).
    pub(crate) per_vcpu: bool,
    /// Whether each histogram's heatmap buckets (`<histogram>.buckets.N`,
    /// the dashboard's heatmaps) go to Carbon, where the histogram's
    /// summaries go. Off by default: on a dense host they double the
    /// points of the defaults and the memory the sink keeps for them (see
    /// the README's sizing table).
    pub(crate) heatmap: bool,
}

impl Default for CarbonConfig {
    fn default() -> Self {
        CarbonConfig {
            address: None,
            protocol: Protocol::Plaintext,
            prefix: "hyperstats".into(),
            path: DEFAULT_PATH.into(),
            host: None,
            queue_points: DEFAULT_QUEUE_POINTS,
            spool_dir: None,
            spool_max_size: ByteSize(DEFAULT_SPOOL_MAX_BYTES),
            families: Family::ALL.map(|f| f.name().to_owned()).to_vec(),
            per_vcpu: false,
            heatmap: false,
        }
    }
}

impl CarbonConfig {
    /// Checks what serde cannot: the address, the prefix, the path
    /// template, the families and the limits.
    pub(crate) fn validate(&self) -> Result<()> {
        if let Some(address) = &self.address {
            split_address(address, self.protocol)
                .map_err(|e| anyhow::anyhow!("carbon.address = {address:?}: {e}"))?;
        }
        if let Err(e) = validate_dotted(&self.prefix) {
            bail!(
                "carbon.prefix = {:?}: {e}\nuse dotted components of [A-Za-z0-9_-], e.g. \"hyperstats\" or \"dc1.hyperstats\"",
                self.prefix
            );
        }
        if let Err(e) = Template::parse(&self.path) {
            bail!("carbon.path = {:?}: {e}", self.path);
        }
        if let Some(host) = &self.host
            && host.is_empty()
        {
            bail!("carbon.host must not be empty (leave it out to use the hostname)");
        }
        if self.queue_points == 0 {
            bail!("carbon.queue_points must be greater than zero");
        }
        if self.queue_points > MAX_QUEUE_POINTS {
            bail!(
                "carbon.queue_points = {} is above the maximum of {MAX_QUEUE_POINTS} (about 3.2 GB of memory)\n\
                 for longer Carbon outages set carbon.spool_dir (a disk spool)",
                self.queue_points
            );
        }
        if self.spool_max_size.0 < MIN_SPOOL_MAX_BYTES {
            bail!(
                "carbon.spool_max_size = {} bytes is below the minimum of {MIN_SPOOL_MAX_BYTES} bytes (1MiB)",
                self.spool_max_size.0
            );
        }
        if self.spool_max_size.0 > MAX_SPOOL_MAX_BYTES {
            bail!(
                "carbon.spool_max_size = {} bytes is above the maximum of {MAX_SPOOL_MAX_BYTES} bytes (1TiB)",
                self.spool_max_size.0
            );
        }
        self.filter()?;
        Ok(())
    }

    /// The filter `families` and `per_vcpu` ask for; an error names the
    /// first name that is not a family.
    pub(crate) fn filter(&self) -> Result<Filter> {
        let mut families = Vec::with_capacity(self.families.len());
        for name in &self.families {
            match Family::from_name(name) {
                Some(f) => families.push(f),
                None if ALWAYS_SENT.contains(&name.as_str()) => bail!(
                    "carbon.families: {name:?} always goes to Carbon and cannot be chosen\n\
                     leave it out; the families to choose from are {}",
                    Family::names()
                ),
                None => bail!(
                    "carbon.families: unknown family {name:?}\n\
                     the families to choose from are {}",
                    Family::names()
                ),
            }
        }
        Ok(Filter::new(&families, self.per_vcpu, self.heatmap))
    }

    /// What goes to Carbon, as `check-config` shows it: two lines.
    pub(crate) fn describe_sent(&self) -> String {
        let always = ALWAYS_SENT.map(|n| format!("{n}.*")).join(", ");
        let vcpu = if !self.families.iter().any(|f| f == Family::Vcpu.name()) {
            "no vcpu family: no vcpu.* sent"
        } else if self.per_vcpu {
            "vcpu.N.* sent"
        } else {
            "vcpu.N.* not sent; JSON and the query socket keep them"
        };
        let heatmap = match self.heatmap {
            true => "<histogram>.buckets.N sent",
            false => "no heatmap buckets sent; JSON keeps them",
        };
        format!(
            "carbon.families = {:?} (always sent: {always})\ncarbon.per_vcpu = {} ({vcpu})\n\
             carbon.heatmap = {} ({heatmap})\n",
            self.families, self.per_vcpu, self.heatmap
        )
    }
}

/// Splits `HOST:PORT` (or `HOST`, `[V6]:PORT`, `[V6]`) into host and port,
/// the port defaulting to the protocol's.
pub(crate) fn split_address(address: &str, protocol: Protocol) -> Result<(String, u16), String> {
    let address = address.trim();
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err("missing `]` after an IPv6 address".into());
        };
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("unexpected {after:?} after `]`")),
        }
    } else {
        match address.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err("an IPv6 address needs brackets, e.g. [::1]:2003".into());
            }
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        }
    };
    if host.is_empty() {
        return Err("missing host (expected HOST:PORT, e.g. graphite.example.net:2003)".into());
    }
    let port = match port {
        None => protocol.default_port(),
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(format!("invalid port {p:?}")),
        },
    };
    Ok((host.to_owned(), port))
}

/// Checks that `s` is one or more non-empty dot-separated components of
/// `[A-Za-z0-9_-]`.
pub(crate) fn validate_dotted(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    for component in s.split('.') {
        if component.is_empty() {
            return Err("has an empty component (a leading, trailing or double dot)".into());
        }
        if let Some(c) = component
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(format!("has the character {c:?}"));
        }
    }
    Ok(())
}

/// A size in bytes, written in the config as a number of bytes or a string
/// with a unit: `B`, `KiB`, `MiB`, `GiB`, `TiB` (or `K`, `M`, `G`, `T`; all
/// powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let bad = || format!("invalid size {s:?} (expected e.g. \"512MiB\", \"2GiB\" or bytes)");
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let shift = match unit.trim() {
            "" | "B" => 0,
            "K" | "KiB" => 10,
            "M" | "MiB" => 20,
            "G" | "GiB" => 30,
            "T" | "TiB" => 40,
            _ => return Err(bad()),
        };
        n.checked_mul(1 << shift).map(ByteSize).ok_or_else(bad)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(ByteSize(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_with_protocol_default_ports() {
        let ok = [
            ("carbon:2003", Protocol::Plaintext, ("carbon", 2003)),
            ("carbon", Protocol::Plaintext, ("carbon", 2003)),
            ("carbon", Protocol::Pickle, ("carbon", 2004)),
            ("127.0.0.1:12003", Protocol::Pickle, ("127.0.0.1", 12003)),
            ("[::1]:2003", Protocol::Plaintext, ("::1", 2003)),
            ("[::1]", Protocol::Pickle, ("::1", 2004)),
        ];
        for (input, proto, (host, port)) in ok {
            assert_eq!(
                split_address(input, proto).unwrap(),
                (host.to_owned(), port),
                "{input}"
            );
        }
        let bad = [
            (":2003", "missing host"),
            ("h:x", "invalid port \"x\""),
            ("h:0", "invalid port \"0\""),
            ("h:70000", "invalid port"),
            ("::1:2003", "needs brackets"),
            ("[::1", "missing `]`"),
        ];
        for (input, want) in bad {
            let err = split_address(input, Protocol::Plaintext).unwrap_err();
            assert!(err.contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        let cases = [
            ("1048576", 1 << 20),
            ("512MiB", 512 << 20),
            ("2GiB", 2 << 30),
            ("2G", 2 << 30),
            ("64 KiB", 64 << 10),
            ("10B", 10),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<ByteSize>().unwrap(), ByteSize(want), "{s}");
        }
        for s in ["", "MiB", "1.5GiB", "1GB", "-1"] {
            assert!(s.parse::<ByteSize>().is_err(), "{s:?} parsed");
        }
    }

    #[test]
    fn validation_names_the_key() {
        let base = CarbonConfig::default();
        assert!(base.validate().is_ok());
        let cases: Vec<(CarbonConfig, &str)> = vec![
            (
                CarbonConfig {
                    address: Some("x:y".into()),
                    ..base.clone()
                },
                "carbon.address = \"x:y\": invalid port",
            ),
            (
                CarbonConfig {
                    prefix: "a..b".into(),
                    ..base.clone()
                },
                "carbon.prefix = \"a..b\": has an empty component",
            ),
            (
                CarbonConfig {
                    prefix: "hyper stats".into(),
                    ..base.clone()
                },
                "has the character ' '",
            ),
            (
                CarbonConfig {
                    path: "<prefix>.<host>.<metric>".into(),
                    ..base.clone()
                },
                "carbon.path = \"<prefix>.<host>.<metric>\": needs <domain> or <uuid>",
            ),
            (
                CarbonConfig {
                    queue_points: 0,
                    ..base.clone()
                },
                "carbon.queue_points must be greater than zero",
            ),
            (
                CarbonConfig {
                    spool_max_size: ByteSize(1000),
                    ..base.clone()
                },
                "carbon.spool_max_size = 1000 bytes is below the minimum",
            ),
            (
                CarbonConfig {
                    spool_max_size: ByteSize(MAX_SPOOL_MAX_BYTES + 1),
                    ..base.clone()
                },
                "carbon.spool_max_size = 1099511627777 bytes is above the maximum",
            ),
            (
                CarbonConfig {
                    queue_points: MAX_QUEUE_POINTS + 1,
                    ..base.clone()
                },
                "carbon.queue_points = 100000001 is above the maximum of 100000000",
            ),
            (
                CarbonConfig {
                    families: vec!["cpu".into(), "disk".into()],
                    ..base.clone()
                },
                "carbon.families: unknown family \"disk\"\n\
                 the families to choose from are state, cpu, vcpu, balloon, block, net, perf",
            ),
            (
                CarbonConfig {
                    families: vec!["CPU".into()],
                    ..base.clone()
                },
                "carbon.families: unknown family \"CPU\"",
            ),
            (
                CarbonConfig {
                    families: vec!["runq_latency_us".into()],
                    ..base.clone()
                },
                "carbon.families: \"runq_latency_us\" always goes to Carbon and cannot be chosen\n\
                 leave it out; the families to choose from are state, cpu, vcpu, balloon, block, net, perf",
            ),
            (
                CarbonConfig {
                    families: vec!["agent".into()],
                    ..base.clone()
                },
                "carbon.families: \"agent\" always goes",
            ),
            (
                CarbonConfig {
                    families: vec!["oncpu_us".into()],
                    ..base.clone()
                },
                "carbon.families: \"oncpu_us\" always goes",
            ),
        ];
        for (config, want) in cases {
            let err = format!("{:#}", config.validate().unwrap_err());
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
    }

    #[test]
    fn check_config_shows_what_goes() {
        let c = CarbonConfig::default();
        assert_eq!(
            c.describe_sent(),
            "carbon.families = [\"state\", \"cpu\", \"vcpu\", \"balloon\", \"block\", \"net\", \"perf\"] \
             (always sent: runq_latency_us.*, oncpu_us.*, agent.*)\n\
             carbon.per_vcpu = false (vcpu.N.* not sent; JSON and the query socket keep them)\n\
             carbon.heatmap = false (no heatmap buckets sent; JSON keeps them)\n"
        );
        let on = CarbonConfig {
            heatmap: true,
            ..CarbonConfig::default()
        };
        assert!(
            on.describe_sent()
                .ends_with("carbon.heatmap = true (<histogram>.buckets.N sent)\n")
        );
        let c = CarbonConfig {
            families: vec!["cpu".into()],
            per_vcpu: true,
            ..c
        };
        assert!(
            c.describe_sent()
                .contains("carbon.per_vcpu = true (no vcpu family: no vcpu.* sent)\n"),
            "{}",
            c.describe_sent()
        );
    }

    #[test]
    fn toml_section_parses() {
        let c: CarbonConfig = toml::from_str(
            r#"
            address = "127.0.0.1:12004"
            protocol = "pickle"
            prefix = "dc1.hyperstats"
            path = "<prefix>.<host>.<uuid>.<metric>"
            host = "node-7"
            queue_points = 5000
            spool_dir = "/var/spool/hyper-stats"
            spool_max_size = "64MiB"
            "#,
        )
        .unwrap();
        assert_eq!(c.protocol, Protocol::Pickle);
        assert_eq!(c.spool_max_size, ByteSize(64 << 20));
        assert_eq!(c.queue_points, 5000);
        c.validate().unwrap();
        // Families and per-vCPU detail, default and chosen.
        assert_eq!(c.filter().unwrap(), Filter::new(&Family::ALL, false, false));
        let c: CarbonConfig = toml::from_str(
            r#"
            families = ["cpu", "vcpu", "net"]
            per_vcpu = true
            heatmap = true
            "#,
        )
        .unwrap();
        let want = Filter::new(&[Family::Cpu, Family::Vcpu, Family::Net], true, true);
        assert_eq!(c.filter().unwrap(), want);
        let c: CarbonConfig = toml::from_str("families = []").unwrap();
        assert_eq!(c.filter().unwrap(), Filter::new(&[], false, false));
        let err = toml::from_str::<CarbonConfig>("per_vcpu = \"yes\"").unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
        let err = toml::from_str::<CarbonConfig>("server = \"x\"").unwrap_err();
        assert!(err.to_string().contains("unknown field `server`"), "{err}");
    }
}
