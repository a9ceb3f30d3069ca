//! Carbon paths: from a datapoint's (domain, UUID, metric) to
//! `hyperstats.<host>.<domain>.<metric>`, through the configured template.
//!
//! Every substituted value is sanitized component by component with
//! [`sanitize_component`], so no domain name, UUID or device can add, remove
//! or merge path components: a VM called `web.1` becomes `web_1` and can
//! never create a `web` subtree next to another VM's. Metric names are
//! already dotted: their dots are kept and each of their components is
//! sanitized. Two names that differ only in replaced characters (`web.1`,
//! `web_1`) do share a path; the `<uuid>` template avoids that.
//!
//! Paths are built once per series and shared (`Arc<str>`) by every queued
//! point of that series; series not seen for [`PATH_CACHE_TTL`] are
//! forgotten.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_stats_query::metric::sanitize_component;

use crate::sample::Datapoint;
use crate::self_stats::AGENT_PREFIX;

/// How long a series' path stays cached after its last datapoint: longer
/// than any poll interval, short enough that retired domains are forgotten.
pub(crate) const PATH_CACHE_TTL: Duration = Duration::from_secs(600);

/// The path component under `<prefix>.<host>` that holds the agent's own
/// metrics.
pub(crate) const AGENT_COMPONENT: &str = "agent";

/// One piece of a parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Text copied as is (validated at parse time).
    Literal(String),
    /// `<prefix>`: the configured prefix, dots kept.
    Prefix,
    /// `<host>`: the node's name, one component.
    Host,
    /// `<domain>`: the domain's name, one component.
    Domain,
    /// `<uuid>`: the domain's UUID, one component.
    Uuid,
    /// `<metric>`: the dotted metric name, each component sanitized.
    Metric,
}

/// A parsed path template such as `<prefix>.<host>.<domain>.<metric>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses a template; literal text may use `[A-Za-z0-9_-.]`, the
    /// template needs `<metric>` and `<domain>` or `<uuid>`, and no
    /// component may be empty.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('<') {
                let Some((name, tail)) = after.split_once('>') else {
                    return Err("has a `<` without a closing `>`".into());
                };
                parts.push(match name {
                    "prefix" => Part::Prefix,
                    "host" => Part::Host,
                    "domain" => Part::Domain,
                    "uuid" => Part::Uuid,
                    "metric" => Part::Metric,
                    other => {
                        return Err(format!(
                            "unknown placeholder <{other}> (known: <prefix>, <host>, <domain>, <uuid>, <metric>)"
                        ));
                    }
                });
                rest = tail;
            } else {
                let end = rest.find('<').unwrap_or(rest.len());
                let (lit, tail) = rest.split_at(end);
                if let Some(c) = lit
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
                {
                    return Err(format!("has the character {c:?} outside a placeholder"));
                }
                parts.push(Part::Literal(lit.to_owned()));
                rest = tail;
            }
        }
        if !parts.contains(&Part::Metric) {
            return Err("needs <metric>".into());
        }
        if !parts.contains(&Part::Domain) && !parts.contains(&Part::Uuid) {
            return Err("needs <domain> or <uuid>, or the domains' series would mix".into());
        }
        // Every placeholder expands to at least one character, so a
        // template whose literal dots never sit next to each other or at
        // an end cannot produce an empty component.
        let mut shape = String::new();
        for part in &parts {
            match part {
                Part::Literal(l) => shape.push_str(l),
                _ => shape.push('x'),
            }
        }
        if shape.starts_with('.') || shape.ends_with('.') || shape.contains("..") {
            return Err("has an empty component (a leading, trailing or double dot)".into());
        }
        Ok(Template { parts })
    }
}

/// Appends the sanitized components of the dotted `name` to `out`.
pub(crate) fn push_dotted(out: &mut String, name: &str) {
    for (i, component) in name.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(&sanitize_component(component));
    }
}

/// The node's name for paths: `/proc/sys/kernel/hostname` with every
/// character a component may not hold (dots included) replaced by `_`.
pub(crate) fn default_host() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    if raw.is_empty() {
        "localhost".to_owned()
    } else {
        sanitize_component(&raw)
    }
}

/// The paths of one series family (one domain), cached.
struct DomainPaths {
    /// The domain name the paths were built with; a rename rebuilds them.
    domain: Arc<str>,
    /// Path per metric name.
    by_metric: HashMap<Arc<str>, Arc<str>>,
    /// Last time a datapoint of this domain was seen.
    seen: Instant,
}

/// Builds and caches the Carbon path of every series.
pub(crate) struct PathBuilder {
    template: Template,
    /// The prefix, dots kept.
    prefix: String,
    /// The host component, sanitized.
    host: String,
    /// Cached paths, keyed by domain UUID.
    cache: HashMap<Arc<str>, DomainPaths>,
    /// When the cache was last swept of stale domains.
    swept: Instant,
}

impl PathBuilder {
    /// A builder for `template` (validated by the config) with this prefix
    /// and host.
    pub(crate) fn new(template: Template, prefix: &str, host: &str) -> PathBuilder {
        let mut p = String::new();
        push_dotted(&mut p, prefix);
        PathBuilder {
            template,
            prefix: p,
            host: sanitize_component(host),
            cache: HashMap::new(),
            swept: Instant::now(),
        }
    }

    /// The path of an agent metric: `<prefix>.<host>.agent.<metric>`.
    pub(crate) fn agent_path(&self, metric: &str) -> Arc<str> {
        agent_path(&self.prefix, &self.host, metric).into()
    }

    /// The path of `point`'s series, built on first use.
    pub(crate) fn path(&mut self, point: &Datapoint, now: Instant) -> Arc<str> {
        let entry = self
            .cache
            .entry(Arc::clone(&point.uuid))
            .or_insert_with(|| DomainPaths {
                domain: Arc::clone(&point.domain),
                by_metric: HashMap::new(),
                seen: now,
            });
        entry.seen = now;
        if entry.domain != point.domain {
            entry.domain = Arc::clone(&point.domain);
            entry.by_metric.clear();
        }
        if let Some(p) = entry.by_metric.get(&*point.metric) {
            return Arc::clone(p);
        }
        let path: Arc<str> = match point.metric.strip_prefix(AGENT_PREFIX) {
            Some(metric) if point.is_agent() => agent_path(&self.prefix, &self.host, metric).into(),
            _ => build(
                &self.template,
                &self.prefix,
                &self.host,
                &point.domain,
                &point.uuid,
                &point.metric,
            )
            .into(),
        };
        entry
            .by_metric
            .insert(Arc::clone(&point.metric), Arc::clone(&path));
        path
    }

    /// Forgets domains not seen for [`PATH_CACHE_TTL`]; cheap to call
    /// often (it sweeps at most once a minute).
    pub(crate) fn sweep(&mut self, now: Instant) {
        if now.duration_since(self.swept) < Duration::from_secs(60) {
            return;
        }
        self.swept = now;
        self.cache
            .retain(|_, d| now.duration_since(d.seen) < PATH_CACHE_TTL);
    }

    /// Domains with cached paths (for tests).
    #[cfg(test)]
    pub(crate) fn cached_domains(&self) -> usize {
        self.cache.len()
    }
}

/// `<prefix>.<host>.agent.<metric>`.
fn agent_path(prefix: &str, host: &str, metric: &str) -> String {
    let mut out = format!("{prefix}.{host}.{AGENT_COMPONENT}.");
    push_dotted(&mut out, metric);
    out
}

/// Expands the template for one series.
fn build(
    template: &Template,
    prefix: &str,
    host: &str,
    domain: &str,
    uuid: &str,
    metric: &str,
) -> String {
    let mut out = String::with_capacity(64);
    for part in &template.parts {
        match part {
            Part::Literal(l) => out.push_str(l),
            Part::Prefix => out.push_str(prefix),
            Part::Host => out.push_str(host),
            Part::Domain => out.push_str(&sanitize_component(domain)),
            Part::Uuid => out.push_str(&sanitize_component(uuid)),
            Part::Metric => push_dotted(&mut out, metric),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::carbon::config::DEFAULT_PATH;

    fn point(uuid: &str, domain: &str, metric: &str) -> Datapoint {
        Datapoint {
            ts: 1764100001.004,
            uuid: uuid.into(),
            domain: domain.into(),
            metric: metric.into(),
            value: 1.0,
        }
    }

    fn builder(template: &str) -> PathBuilder {
        PathBuilder::new(Template::parse(template).unwrap(), "hyperstats", "node1")
    }

    #[test]
    fn default_template_gives_the_documented_shape() {
        let mut b = builder(DEFAULT_PATH);
        let p = point("6f1c", "web-1", "vcpu.0.delay_percent");
        assert_eq!(
            &*b.path(&p, Instant::now()),
            "hyperstats.node1.web-1.vcpu.0.delay_percent"
        );
        assert_eq!(
            &*b.agent_path("carbon.sent_points"),
            "hyperstats.node1.agent.carbon.sent_points"
        );
    }

    #[test]
    fn uuid_template() {
        let mut b = builder("<prefix>.<host>.<uuid>.<metric>");
        let p = point(
            "6f1c2f4e-9c1a-4d43-9d7e-1a2b3c4d5e6f",
            "web.1",
            "cpu.time_percent",
        );
        assert_eq!(
            &*b.path(&p, Instant::now()),
            "hyperstats.node1.6f1c2f4e-9c1a-4d43-9d7e-1a2b3c4d5e6f.cpu.time_percent"
        );
    }

    #[test]
    fn every_component_is_sanitized_and_dots_of_metrics_kept() {
        let mut b = PathBuilder::new(
            Template::parse(DEFAULT_PATH).unwrap(),
            "dc1.hyperstats",
            "node1.example.com",
        );
        let cases = [
            (
                "web.1",
                "cpu.time_percent",
                "dc1.hyperstats.node1_example_com.web_1.cpu.time_percent",
            ),
            (
                "a b/c",
                "cpu.time_percent",
                "dc1.hyperstats.node1_example_com.a_b_c.cpu.time_percent",
            ),
            (
                "vm-é",
                "cpu.time_percent",
                "dc1.hyperstats.node1_example_com.vm-_.cpu.time_percent",
            ),
            (
                "",
                "cpu.time_percent",
                "dc1.hyperstats.node1_example_com._.cpu.time_percent",
            ),
            (
                "db",
                "block.my disk.rd.reqs_per_s",
                "dc1.hyperstats.node1_example_com.db.block.my_disk.rd.reqs_per_s",
            ),
            ("db", "x..y", "dc1.hyperstats.node1_example_com.db.x._.y"),
        ];
        for (i, (domain, metric, want)) in cases.into_iter().enumerate() {
            let p = point(&format!("u{i}"), domain, metric);
            let got = b.path(&p, Instant::now());
            assert_eq!(&*got, want, "{domain:?} {metric:?}");
            // A VM name can never add or remove components.
            let prefix_components = 3;
            let metric_components = metric.split('.').count();
            assert_eq!(
                got.split('.').count(),
                prefix_components + 1 + metric_components,
                "{got}"
            );
        }
    }

    /// The domain component is the one the plugin's perfdata label starts
    /// with (`nagios/src/perfdata.rs` tests the same name), so a guest has
    /// one name in Carbon whether its points come from the agent or
    /// through Nagios and Graphios.
    #[test]
    fn a_hostile_domain_name_is_one_component_as_in_perfdata() {
        let mut b = builder(DEFAULT_PATH);
        let p = point("u", "we|b 'x'=é.1", "vcpu.0.delay_percent");
        assert_eq!(
            &*b.path(&p, Instant::now()),
            "hyperstats.node1.we_b__x____1.vcpu.0.delay_percent"
        );
    }

    #[test]
    fn paths_are_shared_and_rebuilt_on_rename() {
        let mut b = builder(DEFAULT_PATH);
        let now = Instant::now();
        let a1 = b.path(&point("u", "old", "cpu.time_percent"), now);
        let a2 = b.path(&point("u", "old", "cpu.time_percent"), now);
        assert!(Arc::ptr_eq(&a1, &a2));
        let renamed = b.path(&point("u", "new", "cpu.time_percent"), now);
        assert_eq!(&*renamed, "hyperstats.node1.new.cpu.time_percent");
    }

    /// The agent's own series keep their place whatever the template.
    #[test]
    fn agent_series_go_under_agent() {
        let mut b = builder("<prefix>.<host>.vms.<uuid>.<metric>");
        let p = Datapoint::agent(1.0, "agent.carbon.sent_points".into(), 3.0);
        assert_eq!(
            &*b.path(&p, Instant::now()),
            "hyperstats.node1.agent.carbon.sent_points"
        );
    }

    #[test]
    fn stale_domains_are_forgotten() {
        let mut b = builder(DEFAULT_PATH);
        let t0 = Instant::now();
        b.path(&point("gone", "g", "m"), t0);
        b.path(&point("stays", "s", "m"), t0 + PATH_CACHE_TTL);
        b.sweep(t0 + PATH_CACHE_TTL + Duration::from_secs(61));
        assert_eq!(b.cached_domains(), 1);
    }

    #[test]
    fn templates_are_validated() {
        let bad = [
            ("<prefix>.<host>.<metric>", "needs <domain> or <uuid>"),
            ("<prefix>.<host>.<domain>", "needs <metric>"),
            ("<prefix>.<host>.<vm>.<metric>", "unknown placeholder <vm>"),
            ("<prefix>.<host.<domain>.<metric>", "unknown placeholder"),
            ("<prefix>.<domain>.<metric", "without a closing"),
            ("<prefix>..<domain>.<metric>", "empty component"),
            (".<domain>.<metric>", "empty component"),
            ("<domain>.<metric>.", "empty component"),
            ("vms/<domain>.<metric>", "the character '/'"),
        ];
        for (t, want) in bad {
            let err = Template::parse(t).unwrap_err();
            assert!(err.contains(want), "{t}: {err}");
        }
        for t in [
            DEFAULT_PATH,
            "<prefix>.<host>.<uuid>.<metric>",
            "<prefix>.<host>.vms.<domain>_<uuid>.<metric>",
            "<domain>.<metric>",
        ] {
            Template::parse(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        }
    }
}
