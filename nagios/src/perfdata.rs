//! Performance data: `'label'=value[UOM];[warn];[crit];[min];[max]`, one
//! value per label, in the form the plugin guidelines define and Graphios
//! and PNP parse.
//!
//! Labels are built from the domain name and the metric (the same dotted
//! names the agent's JSON and Carbon outputs use), each component made
//! safe by the one sanitizer every output uses
//! ([`hyper_stats_query::metric::sanitize_component`]), so a label is a
//! stable, Graphite-friendly path that no domain name (`|`, `=`, quotes,
//! dots) can break, and never needs quoting (it is quoted anyway).
//! Values are plain decimals (never exponents, which the guidelines do not
//! allow); a value that does not exist is `U`.
//!
//! This module only writes perfdata; reading it back is
//! [`hyper_stats_query::perfdata::parse`], the parser Graphios forwarding
//! uses too.

use std::fmt;

use hyper_stats_query::metric::{sanitize_component, sanitize_dotted};

use crate::range::Range;

/// One perfdata item.
#[derive(Debug, Clone, PartialEq)]
pub struct Perf {
    /// The label, already sanitized (see [`label`]).
    pub label: String,
    /// The value; `None` prints as `U` (undetermined).
    pub value: Option<f64>,
    /// Unit of measure: `us`, `ms`, `s`, `%`, `B`, `c` or empty.
    pub uom: &'static str,
    /// The warning range.
    pub warn: Option<Range>,
    /// The critical range.
    pub crit: Option<Range>,
    /// Smallest possible value.
    pub min: Option<f64>,
    /// Largest possible value.
    pub max: Option<f64>,
}

/// A perfdata label: the domain as one component, then the dotted parts
/// (metric, summary), each component made safe the way every output makes
/// it ([`sanitize_component`]), so a label equals the Carbon path of the
/// same series after the host.
pub fn label(domain: &str, parts: &[&str]) -> String {
    let mut out = sanitize_component(domain);
    for part in parts {
        out.push('.');
        out.push_str(&sanitize_dotted(part));
    }
    out
}

/// A number as perfdata wants it: plain decimal, at most 3 decimals,
/// trailing zeros dropped.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return "U".to_owned();
    }
    let mut s = format!("{v:.3}");
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    if s == "-0" {
        s = "0".to_owned();
    }
    s
}

impl fmt::Display for Perf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}'=", self.label)?;
        match self.value.filter(|v| v.is_finite()) {
            Some(v) => write!(f, "{}{}", number(v), self.uom)?,
            None => f.write_str("U")?,
        }
        let opt_range = |r: &Option<Range>| r.map(|r| r.to_string()).unwrap_or_default();
        let opt_num = |n: &Option<f64>| n.map(number).unwrap_or_default();
        let mut tail = [
            opt_range(&self.warn),
            opt_range(&self.crit),
            opt_num(&self.min),
            opt_num(&self.max),
        ]
        .to_vec();
        while tail.last().is_some_and(String::is_empty) {
            tail.pop();
        }
        for field in tail {
            write!(f, ";{field}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_stats_query::perfdata::{Item, ItemError};
    use proptest::prelude::*;

    /// The printed text read back by the shared parser: all items, or the
    /// first error.
    fn parse(text: &str) -> Result<Vec<Item>, ItemError> {
        hyper_stats_query::perfdata::parse(text).collect()
    }

    #[test]
    fn exact_strings() {
        let r = |s| Some(Range::parse(s).unwrap());
        let cases = [
            (
                Perf {
                    label: label("hs-lab-1", &["runq_latency_us", "p99"]),
                    value: Some(812.3456),
                    uom: "us",
                    warn: r("5000"),
                    crit: r("10000"),
                    min: Some(0.0),
                    max: None,
                },
                "'hs-lab-1.runq_latency_us.p99'=812.346us;5000;10000;0",
            ),
            (
                Perf {
                    label: label("web 1/a", &["vcpu.0.delay_percent", "avg"]),
                    value: Some(0.5),
                    uom: "%",
                    warn: None,
                    crit: r("@10:20"),
                    min: None,
                    max: None,
                },
                "'web_1_a.vcpu.0.delay_percent.avg'=0.5%;;@10:20",
            ),
            (
                Perf {
                    label: label("db", &["runq_latency_us", "p99"]),
                    value: None,
                    uom: "us",
                    warn: None,
                    crit: None,
                    min: Some(0.0),
                    max: None,
                },
                "'db.runq_latency_us.p99'=U;;;0",
            ),
            (
                Perf {
                    label: label("", &["x"]),
                    value: Some(-0.0001),
                    uom: "",
                    warn: r("~:"),
                    crit: None,
                    min: None,
                    max: Some(1e15),
                },
                "'_.x'=0;~:;;;1000000000000000",
            ),
        ];
        for (perf, want) in cases {
            assert_eq!(perf.to_string(), want);
        }
    }

    /// A domain name is one label component whatever it holds: dots,
    /// spaces, quotes, `|`, `=` and non-ASCII letters cannot split it,
    /// end the perfdata or add a Carbon path component. Same rule as
    /// the agent's Carbon paths (`hyper_stats_query::metric`).
    #[test]
    fn any_domain_name_is_one_well_formed_component() {
        let l = label("we|b 'x'=é.1", &["vcpu.0.delay_percent", "avg"]);
        assert_eq!(l, "we_b__x____1.vcpu.0.delay_percent.avg");
        let perf = Perf {
            label: l,
            value: Some(1.0),
            uom: "%",
            warn: None,
            crit: None,
            min: None,
            max: None,
        };
        let text = format!("OK | {perf}");
        let items = parse(text.split_once('|').unwrap().1).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].label, "we_b__x____1.vcpu.0.delay_percent.avg");
    }

    fn range() -> impl Strategy<Value = Option<Range>> {
        proptest::option::of((-1e6f64..1e6, 0f64..1e6, any::<bool>()).prop_map(
            |(start, len, inside)| {
                let start = number(start).parse().unwrap();
                let end: f64 = number(start + len).parse().unwrap();
                Range {
                    start,
                    end: end.max(start),
                    inside,
                }
            },
        ))
    }

    proptest! {
        #[test]
        fn what_we_print_parses_back(
            parts in proptest::collection::vec("\\PC{0,12}", 1..4),
            value in proptest::option::of(-1e12f64..1e12),
            uom in prop_oneof![Just(""), Just("us"), Just("%"), Just("ms"), Just("B")],
            warn in range(), crit in range(),
            min in proptest::option::of(-1e6f64..1e6),
        ) {
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            let p = Perf { label: label(parts[0], &parts[1..]), value, uom, warn, crit, min, max: None };
            let text = p.to_string();
            prop_assert!(text.is_ascii(), "{}", text);
            prop_assert!(!text.contains(' '), "{}", text);
            let back = parse(&text).unwrap();
            prop_assert_eq!(back.len(), 1);
            let b = &back[0];
            prop_assert_eq!(&b.label, &p.label);
            match value {
                None => prop_assert_eq!(b.value, None),
                Some(v) => {
                    prop_assert!((b.value.unwrap() - v).abs() <= 0.0005 + v.abs() * 1e-15, "{}", text);
                    prop_assert_eq!(b.uom.as_str(), uom);
                }
            }
            let fields: Vec<Option<Range>> = [0, 1].iter().map(|i| {
                b.fields.get(*i).filter(|f| !f.is_empty()).map(|f| Range::parse(f).unwrap())
            }).collect();
            prop_assert_eq!(fields, vec![warn, crit]);
        }
    }
}
