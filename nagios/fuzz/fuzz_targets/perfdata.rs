//! Any label parts, value and ranges: the perfdata item printed is one
//! ASCII token without spaces that the shared parser
//! (`hyper_stats_query::perfdata`) reads back to the same label, value (to
//! the printed precision) and ranges; and parsing any string never panics.
#![no_main]

use hyper_stats_nagios::perfdata::{self, Perf};
use hyper_stats_nagios::range::Range;
use hyper_stats_query::perfdata::{Item, ItemError, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: (Vec<&str>, Option<f64>, &str, &str, &str)| {
    let (parts, value, warn, crit, junk) = data;
    for item in parse(junk) {
        let _ = item.and_then(|i| i.number());
    }
    if parts.is_empty() {
        return;
    }
    let warn = Range::parse(warn).ok();
    let crit = Range::parse(crit).ok();
    let p = Perf {
        label: perfdata::label(parts[0], &parts[1..]),
        value,
        uom: "us",
        warn,
        crit,
        min: Some(0.0),
        max: None,
    };
    let text = p.to_string();
    assert!(text.is_ascii() && !text.contains(' '), "{text:?}");
    let back: Result<Vec<Item>, ItemError> = parse(&text).collect();
    let back = back.unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert_eq!(back.len(), 1, "{text:?}");
    assert_eq!(back[0].label, p.label);
    match value.filter(|v| v.is_finite()) {
        None => assert_eq!(back[0].value, None, "{text:?}"),
        Some(v) => {
            let got = back[0].value.unwrap();
            assert!(
                (got - v).abs() <= 0.0005 + v.abs() * 1e-12,
                "{text:?} for {v}"
            );
        }
    }
    let field = |i: usize| {
        back[0]
            .fields
            .get(i)
            .filter(|f| !f.is_empty())
            .map(|f| Range::parse(f).unwrap_or_else(|e| panic!("{text:?}: {e}")))
    };
    assert_eq!(field(0), warn, "{text:?}");
    assert_eq!(field(1), crit, "{text:?}");
});
