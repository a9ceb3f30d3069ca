//! One Nagios perfdata spool line into Carbon points, by Graphios's naming
//! rules (see the module doc of `graphios`): the line's `NAME::value`
//! fields, the perfdata items (read by [`hyper_stats_query::perfdata`]),
//! the path and the value of each.
//!
//! The library shows only [`parse_spool_line`] and what it returns, for
//! the parser's fuzz target (`collector/fuzz`); the command itself calls
//! [`parse_line`] with the naming options it already holds.

use hyper_stats_query::perfdata;

use super::Args;
use super::args::Naming;
use crate::sinks::carbon::encoder::is_valid_path;

/// Characters Graphios replaces in paths (besides whitespace).
const INVALID_CHARS: &str = "~!$:;%^*()+={}[]|\\/<>";

/// One Carbon point from perfdata.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// The full path: never empty, no whitespace or control character.
    pub path: String,
    /// The value, unit removed: always finite.
    pub value: f64,
    /// `TIMET`.
    pub ts: i64,
}

/// What one spool line gave.
#[derive(Debug, Default, PartialEq)]
pub struct Line {
    /// Its points.
    pub metrics: Vec<Metric>,
    /// Perfdata items that could not be turned into points, with why.
    pub bad_items: Vec<String>,
    /// Whether Graphios's rules leave the line out (no prefix or postfix,
    /// no perfdata): not an error.
    pub not_for_graphite: bool,
}

/// Parses one spool line with the naming that the command's `args`
/// select; `Err` for a malformed line.
pub fn parse_spool_line(line: &str, args: &Args) -> Result<Line, String> {
    parse_line(line, &Naming::from(args))
}

/// Parses one spool line; `Err` for a malformed line.
pub(crate) fn parse_line(line: &str, naming: &Naming) -> Result<Line, String> {
    if !line.starts_with("DATATYPE::") {
        return Err("does not start with DATATYPE::".into());
    }
    let mut datatype = String::new();
    let mut timet = String::new();
    let mut hostname = String::new();
    let mut servicedesc = String::new();
    let mut prefix = String::new();
    let mut postfix = String::new();
    let mut perfdata = String::new();
    for field in line.trim_end_matches(['\n', '\r']).split('\t') {
        let Some((name, value)) = field.split_once("::") else {
            return Err(format!("field {field:?} has no `::`"));
        };
        if name.contains("PERFDATA") {
            perfdata = value.to_owned();
            continue;
        }
        if value.starts_with("$_") {
            continue;
        }
        let value: String = value.chars().filter(|c| !c.is_whitespace()).collect();
        match name {
            "DATATYPE" => datatype = value,
            "TIMET" => timet = value,
            "HOSTNAME" => hostname = value,
            "SERVICEDESC" => servicedesc = value,
            "GRAPHITEPREFIX" => prefix = value,
            "GRAPHITEPOSTFIX" => postfix = value,
            _ => {}
        }
    }
    if timet.is_empty() {
        return Err("has no TIMET".into());
    }
    if hostname.is_empty() {
        return Err("has no HOSTNAME".into());
    }
    let ts: i64 = timet
        .parse()
        .map_err(|_| format!("TIMET {timet:?} is not a unix time"))?;
    let wanted = if naming.use_service_desc {
        !servicedesc.is_empty() || datatype == "HOSTPERFDATA"
    } else {
        !prefix.is_empty() || !postfix.is_empty()
    };
    if perfdata.trim().is_empty() || !wanted {
        return Ok(Line {
            not_for_graphite: true,
            ..Line::default()
        });
    }
    if naming.reverse_hostname {
        hostname = hostname.split('.').rev().collect::<Vec<_>>().join(".");
    }
    if naming.replace_hostname {
        hostname = hostname.replace('.', &naming.replacement.to_string());
    }
    let mut out = Line::default();
    for item in perfdata::parse(&perfdata) {
        let (label, value) = match item.and_then(|i| i.number().map(|v| (i.label, v))) {
            Ok(pair) => pair,
            Err(e) => {
                out.bad_items.push(e.to_string());
                continue;
            }
        };
        let path = build_path(naming, &prefix, &postfix, &hostname, &servicedesc, &label);
        if !is_valid_path(&path) {
            out.bad_items
                .push(format!("{label:?} gives the unusable path {path:?}"));
            continue;
        }
        out.metrics.push(Metric { path, value, ts });
    }
    Ok(out)
}

/// Graphios's path: `[BASE.][PREFIX.]HOST[.SERVICEDESC][.POSTFIX].LABEL`,
/// trailing dot removed, `..` → `.`, invalid characters replaced.
fn build_path(
    naming: &Naming,
    prefix: &str,
    postfix: &str,
    host: &str,
    servicedesc: &str,
    label: &str,
) -> String {
    let mut pre = String::new();
    if let Some(base) = &naming.base_path {
        pre.push_str(base);
        pre.push('.');
    }
    if !prefix.is_empty() {
        pre.push_str(prefix);
        pre.push('.');
    }
    let post = if postfix.is_empty() {
        String::new()
    } else {
        format!(".{postfix}")
    };
    let mut path = if naming.use_service_desc {
        let desc = fix_string(servicedesc, naming.replacement);
        format!("{pre}{host}.{desc}{post}.{label}")
    } else {
        format!("{pre}{host}{post}.{label}")
    };
    if path.ends_with('.') {
        path.pop();
    }
    fix_string(&path.replace("..", "."), naming.replacement)
}

/// Replaces whitespace and Graphios's invalid characters.
fn fix_string(s: &str, replacement: char) -> String {
    s.chars()
        .map(|c| {
            if c.is_whitespace() || INVALID_CHARS.contains(c) {
                replacement
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The public entry is the command's parser with the naming its
    /// options select.
    #[test]
    fn parse_spool_line_uses_the_options_naming() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let args = <Cli as clap::Parser>::parse_from([
            "graphios",
            "--spool",
            "/nonexistent",
            "--use-service-desc",
            "--base-path",
            "b",
            "--replacement-character",
            "-",
        ])
        .args;
        let l = line("h.x", "Disk Use", "'a b'=1", "", "");
        let naming = Naming {
            base_path: Some("b".into()),
            use_service_desc: true,
            replacement: '-',
            ..Naming::default()
        };
        assert_eq!(
            parse_spool_line(&l, &args).unwrap(),
            parse_line(&l, &naming).unwrap()
        );
        assert_eq!(
            paths(&l, &naming),
            vec![("b.h-x.DiskUse.a-b".to_owned(), 1.0)]
        );
    }

    /// A line as Nagios writes it with the Graphios template.
    fn line(host: &str, desc: &str, perfdata: &str, prefix: &str, postfix: &str) -> String {
        format!(
            "DATATYPE::SERVICEPERFDATA\tTIMET::1764100001\tHOSTNAME::{host}\tSERVICEDESC::{desc}\tSERVICEPERFDATA::{perfdata}\tSERVICECHECKCOMMAND::check_x!a\tHOSTSTATE::UP\tHOSTSTATETYPE::HARD\tSERVICESTATE::OK\tSERVICESTATETYPE::HARD\tGRAPHITEPREFIX::{prefix}\tGRAPHITEPOSTFIX::{postfix}\tMETRICTYPE::$_SERVICEMETRICTYPE$"
        )
    }

    fn paths(l: &str, naming: &Naming) -> Vec<(String, f64)> {
        parse_line(l, naming)
            .unwrap()
            .metrics
            .into_iter()
            .map(|m| {
                assert_eq!(m.ts, 1764100001);
                (m.path, m.value)
            })
            .collect()
    }

    /// The README examples of Graphios, and more, table-driven.
    #[test]
    fn graphios_naming_rules() {
        let plain = Naming::default();
        /// A spool line, the naming options, and the (path, value) pairs.
        type Case = (String, Naming, Vec<(&'static str, f64)>);
        let cases: Vec<Case> = vec![
            // README: check_icmp with a host prefix.
            (
                line(
                    "myhost",
                    "PING",
                    "rta=4.029ms;10.000;30.000;0; pl=0%;5;10;; rtmax=4.996ms;;;; rtmin=3.066ms;;;;",
                    "ops.nagios01.pingto",
                    "",
                ),
                plain.clone(),
                vec![
                    ("ops.nagios01.pingto.myhost.rta", 4.029),
                    ("ops.nagios01.pingto.myhost.pl", 0.0),
                    ("ops.nagios01.pingto.myhost.rtmax", 4.996),
                    ("ops.nagios01.pingto.myhost.rtmin", 3.066),
                ],
            ),
            // README: check_load with prefix and postfix.
            (
                line(
                    "myhost",
                    "Load",
                    "load1=8.41;20;22;; load5=6.06;18;20;; load15=5.58;16;18",
                    "datacenter01.webservers",
                    "nrdp.load",
                ),
                plain.clone(),
                vec![
                    ("datacenter01.webservers.myhost.nrdp.load.load1", 8.41),
                    ("datacenter01.webservers.myhost.nrdp.load.load5", 6.06),
                    ("datacenter01.webservers.myhost.nrdp.load.load15", 5.58),
                ],
            ),
            // Dots in host names replaced; base path; postfix only.
            (
                line(
                    "web1.example.com",
                    "Disk",
                    "/=35%;80;90 /var=12B/s",
                    "",
                    "disk",
                ),
                Naming {
                    base_path: Some("mycorp.nagios".into()),
                    ..plain.clone()
                },
                vec![
                    ("mycorp.nagios.web1_example_com.disk._", 35.0),
                    ("mycorp.nagios.web1_example_com.disk._var", 12.0),
                ],
            ),
            // Reversed, dots kept.
            (
                line("web1.example.com", "Disk", "x=1", "p", ""),
                Naming {
                    reverse_hostname: true,
                    replace_hostname: false,
                    ..plain.clone()
                },
                vec![("p.com.example.web1.x", 1.0)],
            ),
            // Service descriptions; their whitespace removed; quoted labels.
            (
                line(
                    "h",
                    "Disk Usage",
                    "'used space'=5GB;; 'it''s'=1 c:\\=2",
                    "",
                    "",
                ),
                Naming {
                    use_service_desc: true,
                    ..plain.clone()
                },
                vec![
                    ("h.DiskUsage.used_space", 5.0),
                    ("h.DiskUsage.it's", 1.0),
                    ("h.DiskUsage.c__", 2.0),
                ],
            ),
            // Double dots collapse, trailing dot goes, invalid chars replaced.
            (
                line("h", "S", "a=1 b(x)=-2.5e-3s", "pre.", ".post"),
                plain.clone(),
                vec![("pre.h.post.a", 1.0), ("pre.h.post.b_x_", -0.0025)],
            ),
            // Another replacement character.
            (
                line("a.b", "S", "'x y'=1", "p", ""),
                Naming {
                    replacement: '-',
                    ..plain.clone()
                },
                vec![("p.a-b.x-y", 1.0)],
            ),
        ];
        for (l, naming, want) in cases {
            let got = paths(&l, &naming);
            let want: Vec<(String, f64)> = want.into_iter().map(|(p, v)| (p.into(), v)).collect();
            assert_eq!(got, want, "line {l:?}");
        }
    }

    #[test]
    fn lines_graphios_leaves_out_are_not_errors() {
        let plain = Naming::default();
        // No prefix and no postfix (unexpanded macros count as empty).
        let l = line("h", "S", "a=1", "$_SERVICEGRAPHITEPREFIX$", "");
        assert!(parse_line(&l, &plain).unwrap().not_for_graphite);
        // No perfdata.
        let l = line("h", "S", "", "p", "");
        assert!(parse_line(&l, &plain).unwrap().not_for_graphite);
        // With service descriptions, host perfdata counts too.
        let host = "DATATYPE::HOSTPERFDATA\tTIMET::1764100001\tHOSTNAME::h\tHOSTPERFDATA::rta=1ms\tGRAPHITEPREFIX::\tGRAPHITEPOSTFIX::";
        let naming = Naming {
            use_service_desc: true,
            ..plain
        };
        assert_eq!(paths(host, &naming), vec![("h.rta".to_owned(), 1.0)]);
    }

    #[test]
    fn malformed_lines_and_items_are_reported() {
        let plain = Naming::default();
        let bad_lines = [
            ("garbage", "does not start with DATATYPE::"),
            (
                "DATATYPE::SERVICEPERFDATA\tTIMET",
                "field \"TIMET\" has no `::`",
            ),
            (
                "DATATYPE::SERVICEPERFDATA\tTIMET::x\tHOSTNAME::h\tSERVICEPERFDATA::a=1\tGRAPHITEPREFIX::p",
                "TIMET \"x\" is not a unix time",
            ),
            (
                "DATATYPE::SERVICEPERFDATA\tHOSTNAME::h\tSERVICEPERFDATA::a=1\tGRAPHITEPREFIX::p",
                "has no TIMET",
            ),
            (
                "DATATYPE::SERVICEPERFDATA\tTIMET::1\tSERVICEPERFDATA::a=1\tGRAPHITEPREFIX::p",
                "has no HOSTNAME",
            ),
        ];
        for (l, want) in bad_lines {
            let err = parse_line(l, &plain).unwrap_err();
            assert!(err.contains(want), "{l:?}: {err}");
        }
        let l = line("h", "S", "a=1 b=U c d=1=2 e=;1 'open=3", "p", "");
        let parsed = parse_line(&l, &plain).unwrap();
        assert_eq!(parsed.metrics.len(), 1);
        assert_eq!(parsed.bad_items.len(), 5, "{:?}", parsed.bad_items);
        assert!(parsed.bad_items[0].contains("\"b\" has no numeric value in \"U\""));
        assert!(parsed.bad_items[1].contains("\"c\" is not label=value"));
    }
}
