//! Any string: parsing a range never panics, and a parsed range prints
//! back to a string that parses to the same range, whose alert decision
//! is the exact opposite of the same range with `@` flipped.
#![no_main]

use hyper_stats_nagios::range::Range;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: (&str, f64)| {
    let (text, value) = data;
    let Ok(r) = Range::parse(text) else { return };
    assert!(r.start <= r.end, "{text:?} gave {r:?}");
    assert!(!r.start.is_nan() && !r.end.is_nan());
    let printed = r.to_string();
    assert_eq!(Range::parse(&printed), Ok(r), "{text:?} printed as {printed:?}");
    if !value.is_nan() {
        let flipped = Range { inside: !r.inside, ..r };
        assert_ne!(r.alerts(value), flipped.alerts(value));
    }
});
