//! Reads Nagios performance data, the text after a plugin output's `|`,
//! into its items: `'label'=value[UOM];[warn];[crit];[min];[max]`, items
//! separated by whitespace, as the plugin guidelines define it.
//!
//! This module owns the one perfdata parser: the plugin reads its own
//! output back with it (tests, fuzzing) and `hyper-stats graphios` reads
//! Nagios's spool lines with it. Labels may be quoted in single quotes
//! (then they may hold whitespace and `=`, and `''` stands for a quote);
//! an unquoted label ends at `=` or whitespace. A value is `U`
//! (undetermined) or a finite number, which may use an exponent and may
//! carry a unit of measure made of letters, `%` and `/` (`12.5ms`, `35%`,
//! `12B/s`). Warn, crit, min and max are returned as written.
//!
//! Bad input never stops the parse: each item comes back on its own as
//! `Ok` or as an [`ItemError`](crate::perfdata::ItemError) naming the
//! item, and the items after it are read as usual. An unterminated quoted
//! label takes the rest of the text and so is the last (bad) item.

use std::fmt;

/// One perfdata item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The label, unquoted, `''` read as `'`.
    pub label: String,
    /// The value; `None` for `U`.
    pub value: Option<f64>,
    /// The unit of measure after the number; empty for `U`.
    pub uom: String,
    /// The fields after the value, as written: warn, crit, min, max (and
    /// any further ones, which the guidelines do not define). Left out
    /// trailing fields are absent; empty ones are empty strings.
    pub fields: Vec<String>,
    /// Everything after the `=`, for error messages.
    data: String,
}

/// Why one perfdata item could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemError {
    /// No `=` after the label, or a second `=` after the first: the item
    /// as written.
    NotLabelValue(String),
    /// The value is no finite number (for [`Item::number`], `U` neither).
    NoNumber {
        /// The label, unquoted.
        label: String,
        /// Everything after the `=`.
        data: String,
    },
}

impl fmt::Display for ItemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ItemError::NotLabelValue(raw) => write!(f, "{raw:?} is not label=value"),
            ItemError::NoNumber { label, data } => {
                write!(f, "{label:?} has no numeric value in {data:?}")
            }
        }
    }
}

impl std::error::Error for ItemError {}

impl Item {
    /// The value as a number: `U` is an [`ItemError::NoNumber`], for
    /// readers that have no use for an undetermined value.
    pub fn number(&self) -> Result<f64, ItemError> {
        self.value.ok_or_else(|| ItemError::NoNumber {
            label: self.label.clone(),
            data: self.data.clone(),
        })
    }
}

/// The items of a perfdata string, in order, each read or refused on its
/// own.
pub fn parse(text: &str) -> impl Iterator<Item = Result<Item, ItemError>> + '_ {
    let mut rest = text;
    std::iter::from_fn(move || {
        rest = rest.trim_start();
        if rest.is_empty() {
            return None;
        }
        let (label, after_label) = match rest.strip_prefix('\'') {
            Some(quoted) => unquote(quoted),
            None => {
                let end = rest
                    .find(|c: char| c == '=' || c.is_whitespace())
                    .unwrap_or(rest.len());
                (rest[..end].to_owned(), &rest[end..])
            }
        };
        let data_len = after_label
            .find(char::is_whitespace)
            .unwrap_or(after_label.len());
        let (raw, next) = rest.split_at(rest.len() - after_label.len() + data_len);
        rest = next;
        Some(match after_label[..data_len].strip_prefix('=') {
            Some(data) if !data.contains('=') => item(label, data),
            _ => Err(ItemError::NotLabelValue(raw.to_owned())),
        })
    })
}

/// A quoted label (the text after its opening quote): the label and what
/// follows its closing quote (nothing when there is none).
fn unquote(quoted: &str) -> (String, &str) {
    let mut label = String::new();
    let mut chars = quoted.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '\'' {
            label.push(c);
        } else if chars.next_if(|&(_, c)| c == '\'').is_some() {
            label.push('\'');
        } else {
            return (label, &quoted[i + 1..]);
        }
    }
    (label, "")
}

/// One item from its label and what follows the `=`.
fn item(label: String, data: &str) -> Result<Item, ItemError> {
    let mut fields = data.split(';');
    let value_uom = fields.next().unwrap_or_default();
    let (value, uom) = if value_uom == "U" {
        (None, "")
    } else {
        let number =
            value_uom.trim_end_matches(|c: char| c.is_alphabetic() || c == '%' || c == '/');
        match number.parse::<f64>() {
            Ok(v) if v.is_finite() => (Some(v), &value_uom[number.len()..]),
            _ => {
                return Err(ItemError::NoNumber {
                    label,
                    data: data.to_owned(),
                });
            }
        }
    };
    Ok(Item {
        label,
        value,
        uom: uom.to_owned(),
        fields: fields.map(str::to_owned).collect(),
        data: data.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// All items, or the first error.
    fn parse(text: &str) -> Result<Vec<Item>, ItemError> {
        super::parse(text).collect()
    }

    #[test]
    fn parses_what_others_write() {
        let items = parse("'a b'=1.5ms;2;3;0; 'it''s'=U c=10%").unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].label, "a b");
        assert_eq!(items[0].value, Some(1.5));
        assert_eq!(items[0].uom, "ms");
        assert_eq!(items[0].fields, ["2", "3", "0", ""]);
        assert_eq!(items[1].label, "it's");
        assert_eq!(items[1].value, None);
        assert_eq!(items[2].value, Some(10.0));
        assert!(parse("'open=1").is_err());
        assert!(parse("x=abc").is_err());
    }

    /// Good items: the text, then label, value, UOM and fields of each.
    #[test]
    fn items_as_the_guidelines_define_them() {
        type Want = (
            &'static str,
            Option<f64>,
            &'static str,
            &'static [&'static str],
        );
        let cases: &[(&str, &[Want])] = &[
            ("", &[]),
            (" \t\n", &[]),
            ("a=1", &[("a", Some(1.0), "", &[])]),
            // Quoted labels: spaces, `''`, `=`, `;`, nothing.
            ("'a b'=1", &[("a b", Some(1.0), "", &[])]),
            ("'it''s'=2", &[("it's", Some(2.0), "", &[])]),
            ("'x'''=2", &[("x'", Some(2.0), "", &[])]),
            ("''''=2", &[("'", Some(2.0), "", &[])]),
            ("'a=b'=3", &[("a=b", Some(3.0), "", &[])]),
            ("'a;b c'=3", &[("a;b c", Some(3.0), "", &[])]),
            ("''=4", &[("", Some(4.0), "", &[])]),
            ("=4", &[("", Some(4.0), "", &[])]),
            ("'é µ'=4", &[("é µ", Some(4.0), "", &[])]),
            // Values: U, negative, decimal, exponent, with units.
            ("u=U", &[("u", None, "", &[])]),
            ("u=U;;;0", &[("u", None, "", &["", "", "0"])]),
            ("n=-2.5", &[("n", Some(-2.5), "", &[])]),
            ("d=.5", &[("d", Some(0.5), "", &[])]),
            ("d=0.001s", &[("d", Some(0.001), "s", &[])]),
            ("e=1e-05", &[("e", Some(1e-5), "", &[])]),
            ("e=-2.5e-3s", &[("e", Some(-0.0025), "s", &[])]),
            ("p=35%;80;90", &[("p", Some(35.0), "%", &["80", "90"])]),
            ("r=12B/s", &[("r", Some(12.0), "B/s", &[])]),
            ("t=5µs", &[("t", Some(5.0), "µs", &[])]),
            ("c=1234c", &[("c", Some(1234.0), "c", &[])]),
            // Trailing fields: any of them left out or empty.
            ("a=1;", &[("a", Some(1.0), "", &[""])]),
            ("a=1;2", &[("a", Some(1.0), "", &["2"])]),
            ("a=1;;3", &[("a", Some(1.0), "", &["", "3"])]),
            (
                "a=1;@1:2;~:3;0;100",
                &[("a", Some(1.0), "", &["@1:2", "~:3", "0", "100"])],
            ),
            ("a=1;;;;", &[("a", Some(1.0), "", &["", "", "", ""])]),
            // Any whitespace separates items.
            (
                "  a=1\tb=2ms;1 \n 'c d'=U  ",
                &[
                    ("a", Some(1.0), "", &[]),
                    ("b", Some(2.0), "ms", &["1"]),
                    ("c d", None, "", &[]),
                ],
            ),
        ];
        for (text, want) in cases {
            let got = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(got.len(), want.len(), "{text:?}");
            for (item, (label, value, uom, fields)) in got.iter().zip(*want) {
                let got_fields: Vec<&str> = item.fields.iter().map(String::as_str).collect();
                assert_eq!(
                    (
                        item.label.as_str(),
                        item.value,
                        item.uom.as_str(),
                        got_fields
                    ),
                    (*label, *value, *uom, fields.to_vec()),
                    "{text:?}"
                );
            }
        }
    }

    /// Junk: each bad item is refused on its own with the item or label
    /// and value named, and the good ones around it are still read.
    #[test]
    fn junk_is_refused_item_by_item() {
        let cases: &[(&str, &[Result<&str, &str>])] = &[
            ("c", &[Err("\"c\" is not label=value")]),
            ("a=1=2", &[Err("\"a=1=2\" is not label=value")]),
            ("'a'b=1", &[Err("\"'a'b=1\" is not label=value")]),
            ("'open=3 x=1", &[Err("\"'open=3 x=1\" is not label=value")]),
            ("x=abc", &[Err("\"x\" has no numeric value in \"abc\"")]),
            ("e=;1", &[Err("\"e\" has no numeric value in \";1\"")]),
            ("e=", &[Err("\"e\" has no numeric value in \"\"")]),
            ("u=Ums", &[Err("\"u\" has no numeric value in \"Ums\"")]),
            ("i=inf", &[Err("\"i\" has no numeric value in \"inf\"")]),
            ("i=NaN", &[Err("\"i\" has no numeric value in \"NaN\"")]),
            ("i=1e400", &[Err("\"i\" has no numeric value in \"1e400\"")]),
            ("m=ms5", &[Err("\"m\" has no numeric value in \"ms5\"")]),
            ("m=5°C", &[Err("\"m\" has no numeric value in \"5°C\"")]),
            (
                "a=1 b c=2 'd' =3",
                &[
                    Ok("a"),
                    Err("\"b\" is not label=value"),
                    Ok("c"),
                    Err("\"'d'\" is not label=value"),
                    Ok(""),
                ],
            ),
        ];
        for (text, want) in cases {
            let got: Vec<Result<String, String>> = super::parse(text)
                .map(|r| r.map(|i| i.label).map_err(|e| e.to_string()))
                .collect();
            let want: Vec<Result<String, String>> = want
                .iter()
                .map(|w| w.map(str::to_owned).map_err(str::to_owned))
                .collect();
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn undetermined_is_no_number() {
        let items = parse("b=U;;;0 c=2").unwrap();
        assert_eq!(
            items[0].number().unwrap_err().to_string(),
            "\"b\" has no numeric value in \"U;;;0\""
        );
        assert_eq!(items[1].number(), Ok(2.0));
    }
}
