//! Nagios threshold ranges (`-w`/`-c`), as the plugin development
//! guidelines define them.
//!
//! | range    | alert when the value is        |
//! |----------|--------------------------------|
//! | `10`     | < 0 or > 10                    |
//! | `10:`    | < 10                           |
//! | `~:10`   | > 10                           |
//! | `10:20`  | < 10 or > 20                   |
//! | `@10:20` | ≥ 10 and ≤ 20 (inside)         |
//!
//! # Why not the `nagios-range` crate
//! It was the candidate (0.2.5, last released 2022) but accepts what the
//! guidelines do not: `nan`, `inf` and exponents (`@nan` never alerts),
//! `~` only as a start, and its errors do not name the input. This parser
//! takes plain decimal numbers only, rejects anything non-finite, and
//! prints ranges back in a form it parses to the same range (a property
//! test and a fuzz target check that).

use std::fmt;

/// A parsed threshold range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    /// Lower bound, inclusive; `-inf` for `~`.
    pub start: f64,
    /// Upper bound, inclusive; `+inf` when omitted after `:`.
    pub end: f64,
    /// `@`: alert when the value is inside the range instead of outside.
    pub inside: bool,
}

/// Why a range string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeError {
    /// Nothing (or only `@`) was given.
    Empty,
    /// A bound is not a plain decimal number.
    BadNumber(String),
    /// The start is greater than the end.
    StartAfterEnd,
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeError::Empty => f.write_str("the range is empty"),
            RangeError::BadNumber(n) => write!(
                f,
                "{n:?} is not a number (expected a plain decimal such as 10, -2.5 or ~ for minus infinity as a start)"
            ),
            RangeError::StartAfterEnd => f.write_str("start is greater than end"),
        }
    }
}

impl std::error::Error for RangeError {}

/// Parses a plain decimal: optional sign, digits, optional fraction. No
/// exponent, no `inf`/`nan`, nothing that overflows to infinity.
fn number(s: &str) -> Result<f64, RangeError> {
    let bad = || RangeError::BadNumber(s.to_owned());
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
        return Err(bad());
    }
    let v: f64 = s.parse().map_err(|_| bad())?;
    if v.is_finite() { Ok(v) } else { Err(bad()) }
}

impl Range {
    /// Parses a range string.
    pub fn parse(text: &str) -> Result<Range, RangeError> {
        let (inside, body) = match text.strip_prefix('@') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if body.is_empty() {
            return Err(RangeError::Empty);
        }
        let (start, end) = match body.split_once(':') {
            None => (0.0, number(body)?),
            Some((s, e)) => {
                if s.is_empty() && e.is_empty() {
                    return Err(RangeError::Empty);
                }
                let start = match s {
                    "~" => f64::NEG_INFINITY,
                    "" => 0.0,
                    s => number(s)?,
                };
                let end = if e.is_empty() {
                    f64::INFINITY
                } else {
                    number(e)?
                };
                (start, end)
            }
        };
        if start > end {
            return Err(RangeError::StartAfterEnd);
        }
        // -0.0 and 0.0 are the same bound; keep one so equality is exact.
        let clean = |v: f64| if v == 0.0 { 0.0 } else { v };
        Ok(Range {
            start: clean(start),
            end: clean(end),
            inside,
        })
    }

    /// Whether `value` raises an alert for this range. NaN (no value)
    /// never does.
    pub fn alerts(&self, value: f64) -> bool {
        if value.is_nan() {
            return false;
        }
        let within = value >= self.start && value <= self.end;
        within == self.inside
    }
}

impl fmt::Display for Range {
    /// The canonical form: `@` if inside, then `~:` or `start:` when the
    /// start is not 0, then the end (nothing when infinite).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.inside {
            f.write_str("@")?;
        }
        if self.start == f64::NEG_INFINITY {
            f.write_str("~:")?;
        } else if self.start != 0.0 || self.end == f64::INFINITY {
            write!(f, "{}:", self.start)?;
        }
        if self.end != f64::INFINITY {
            write!(f, "{}", self.end)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const INF: f64 = f64::INFINITY;

    #[test]
    fn parses_the_guideline_examples() {
        // (text, start, end, inside, canonical form)
        let cases = [
            ("10", 0.0, 10.0, false, "10"),
            ("10:", 10.0, INF, false, "10:"),
            ("~:10", -INF, 10.0, false, "~:10"),
            ("10:20", 10.0, 20.0, false, "10:20"),
            ("@10:20", 10.0, 20.0, true, "@10:20"),
            ("@10", 0.0, 10.0, true, "@10"),
            (":10", 0.0, 10.0, false, "10"),
            ("0:", 0.0, INF, false, "0:"),
            ("~:", -INF, INF, false, "~:"),
            ("-5:-1", -5.0, -1.0, false, "-5:-1"),
            ("2.5:7.25", 2.5, 7.25, false, "2.5:7.25"),
            ("+3", 0.0, 3.0, false, "3"),
            (".5", 0.0, 0.5, false, "0.5"),
            ("5.", 0.0, 5.0, false, "5"),
            ("-0:0", 0.0, 0.0, false, "0"),
            ("10:10", 10.0, 10.0, false, "10:10"),
        ];
        for (text, start, end, inside, canon) in cases {
            let r = Range::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((r.start, r.end, r.inside), (start, end, inside), "{text}");
            assert_eq!(r.to_string(), canon, "{text}");
        }
    }

    #[test]
    fn refuses_what_the_guidelines_do_not_allow() {
        let cases = [
            ("", RangeError::Empty),
            ("@", RangeError::Empty),
            (":", RangeError::Empty),
            ("10:5", RangeError::StartAfterEnd),
            ("@0:-1", RangeError::StartAfterEnd),
            ("abc", RangeError::BadNumber("abc".into())),
            ("nan", RangeError::BadNumber("nan".into())),
            ("inf", RangeError::BadNumber("inf".into())),
            ("1e3", RangeError::BadNumber("1e3".into())),
            ("5:~", RangeError::BadNumber("~".into())),
            ("~", RangeError::BadNumber("~".into())),
            ("1:2:3", RangeError::BadNumber("2:3".into())),
            ("@@1", RangeError::BadNumber("@1".into())),
            (" 1", RangeError::BadNumber(" 1".into())),
            ("-", RangeError::BadNumber("-".into())),
            (".", RangeError::BadNumber(".".into())),
            ("--1", RangeError::BadNumber("--1".into())),
        ];
        for (text, want) in cases {
            assert_eq!(Range::parse(text), Err(want), "{text:?}");
        }
        let huge = "9".repeat(400);
        assert!(matches!(Range::parse(&huge), Err(RangeError::BadNumber(_))));
    }

    #[test]
    fn alerts_follow_the_guideline_table() {
        // (range, value, alerts)
        let cases = [
            ("10", -1.0, true),
            ("10", 0.0, false),
            ("10", 10.0, false),
            ("10", 10.1, true),
            ("10:", 9.9, true),
            ("10:", 10.0, false),
            ("10:", 1e12, false),
            ("~:10", -1e12, false),
            ("~:10", 11.0, true),
            ("10:20", 9.0, true),
            ("10:20", 15.0, false),
            ("10:20", 21.0, true),
            ("@10:20", 10.0, true),
            ("@10:20", 20.0, true),
            ("@10:20", 9.99, false),
            ("@10:20", 20.01, false),
            ("10", f64::NAN, false),
            ("@10", f64::NAN, false),
        ];
        for (text, value, want) in cases {
            assert_eq!(
                Range::parse(text).unwrap().alerts(value),
                want,
                "{text} {value}"
            );
        }
    }

    fn bound() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(0.0),
            (-1_000_000i64..1_000_000).prop_map(|v| v as f64),
            (-1e9f64..1e9),
        ]
    }

    proptest! {
        #[test]
        fn display_parses_back_to_the_same_range(
            a in bound(), b in bound(), inside: bool, open_start: bool, open_end: bool,
        ) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let r = Range {
                start: if open_start { f64::NEG_INFINITY } else if lo == 0.0 { 0.0 } else { lo },
                end: if open_end { f64::INFINITY } else if hi == 0.0 { 0.0 } else { hi },
                inside,
            };
            let text = r.to_string();
            prop_assert_eq!(Range::parse(&text), Ok(r), "{}", text);
        }

        #[test]
        fn inside_is_the_negation_of_outside(text in "@?(~|-?[0-9]{1,4}(\\.[0-9]{1,3})?)?:?(-?[0-9]{1,4})?", v in -1e5f64..1e5) {
            if let Ok(r) = Range::parse(&text) {
                let flipped = Range { inside: !r.inside, ..r };
                prop_assert_ne!(r.alerts(v), flipped.alerts(v));
            }
        }

        #[test]
        fn never_panics(text in "\\PC{0,40}") {
            let _ = Range::parse(&text);
        }
    }
}
