//! Carbon's two wire formats, and the point type both encode.
//!
//! - Plaintext: one `path value timestamp\n` line per point. Values are
//!   written in the shortest form that round-trips (`zmij`, as serde_json
//!   writes floats: `2.0`, `0.1`, `1e+21`), which Carbon's `float()` parses
//!   back to the very same `f64`.
//! - Pickle: frames of a 4-byte big-endian length followed by a pickle
//!   (protocol 2) of a list of `(path, (timestamp, value))` tuples, the
//!   format of Carbon's pickle receiver. Only five opcodes are needed, so
//!   they are written here directly: `str` paths (`BINUNICODE`, which
//!   Python 3's Carbon requires), integer timestamps (`BININT`, or `LONG1`
//!   beyond 2038) and `float` values (`BINFLOAT`, the exact bits). Frames
//!   stay far below Carbon's `PICKLE_RECEIVER_MAX_LENGTH` (1 MiB).
//!
//! Timestamps are whole seconds (Carbon's resolution): a datapoint's `ts`
//! floored. Non-finite values are not encodable in plaintext and mean
//! nothing to Graphite; they are never turned into points.

use std::sync::Arc;

use super::config::Protocol;
use crate::sample::Datapoint;

/// Points per pickle frame: Carbon's own relay sends 500 per message.
pub(crate) const PICKLE_MAX_POINTS: usize = 500;

/// A pickle frame is closed once its payload reaches this size, half of
/// Carbon's default `PICKLE_RECEIVER_MAX_LENGTH` (1 MiB): room for one
/// more point with a path of any sane length.
pub(crate) const PICKLE_MAX_PAYLOAD_BYTES: usize = 512 * 1024;

/// One value of one Carbon series at one second.
#[derive(Debug, Clone, PartialEq)]
pub struct CarbonPoint {
    /// The full dotted path (shared by all points of the series).
    pub path: Arc<str>,
    /// Unix time in whole seconds.
    pub ts: i64,
    /// The value (always finite).
    pub value: f64,
}

impl CarbonPoint {
    /// The point for `datapoint` at `path`: its timestamp floored to the
    /// second, `None` if its value is not finite.
    pub(crate) fn from_datapoint(path: Arc<str>, datapoint: &Datapoint) -> Option<CarbonPoint> {
        if !datapoint.value.is_finite() || !datapoint.ts.is_finite() {
            return None;
        }
        Some(CarbonPoint {
            path,
            ts: datapoint.ts.floor() as i64,
            value: datapoint.value,
        })
    }
}

/// Whether `path` can be sent as is: not empty, and no whitespace or
/// control character (which would split or end a plaintext line).
pub(crate) fn is_valid_path(path: &str) -> bool {
    !path.is_empty() && !path.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Appends one plaintext line for `p` to `out`.
pub(crate) fn write_line(out: &mut Vec<u8>, p: &CarbonPoint) {
    out.extend_from_slice(p.path.as_bytes());
    out.push(b' ');
    out.extend_from_slice(zmij::Buffer::new().format_finite(p.value).as_bytes());
    out.push(b' ');
    out.extend_from_slice(itoa::Buffer::new().format(p.ts).as_bytes());
    out.push(b'\n');
}

/// Parses one plaintext line (as written by [`write_line`]) back into a
/// point; `None` if it is not one. The spool is read back with this.
pub(crate) fn parse_line(line: &str) -> Option<CarbonPoint> {
    let mut fields = line.split(' ');
    let path = fields.next()?;
    let value: f64 = fields.next()?.parse().ok()?;
    let ts: i64 = fields.next()?.parse().ok()?;
    if fields.next().is_some() || !is_valid_path(path) || !value.is_finite() {
        return None;
    }
    Some(CarbonPoint {
        path: path.into(),
        ts,
        value,
    })
}

/// Encodes points in the configured protocol.
#[derive(Debug, Clone, Copy)]
pub struct Encoder {
    protocol: Protocol,
}

impl Encoder {
    /// An encoder for `protocol`.
    pub fn new(protocol: Protocol) -> Encoder {
        Encoder { protocol }
    }

    /// Appends the encoding of `points` to `out`: lines, or as many pickle
    /// frames as the limits need. Nothing for no points.
    pub fn encode<'a>(&self, points: impl IntoIterator<Item = &'a CarbonPoint>, out: &mut Vec<u8>) {
        match self.protocol {
            Protocol::Plaintext => {
                for p in points {
                    write_line(out, p);
                }
            }
            Protocol::Pickle => encode_pickle(points, out),
        }
    }
}

// Pickle opcodes (Python's Lib/pickle.py names).
const PROTO: u8 = 0x80;
const EMPTY_LIST: u8 = b']';
const MARK: u8 = b'(';
const APPENDS: u8 = b'e';
const STOP: u8 = b'.';
const BINUNICODE: u8 = b'X';
const BININT: u8 = b'J';
const LONG1: u8 = 0x8a;
const BINFLOAT: u8 = b'G';
const TUPLE2: u8 = 0x86;

/// Appends framed pickles of `points` to `out`.
fn encode_pickle<'a>(points: impl IntoIterator<Item = &'a CarbonPoint>, out: &mut Vec<u8>) {
    // Where the open frame's 4-byte length header sits, and its count.
    let mut frame: Option<(usize, usize)> = None;
    for p in points {
        let (header, count) = match frame {
            Some(f) => f,
            None => {
                let header = out.len();
                out.extend_from_slice(&[0; 4]);
                out.extend_from_slice(&[PROTO, 2, EMPTY_LIST, MARK]);
                (header, 0)
            }
        };
        out.push(BINUNICODE);
        out.extend_from_slice(&(p.path.len() as u32).to_le_bytes());
        out.extend_from_slice(p.path.as_bytes());
        match i32::try_from(p.ts) {
            Ok(ts) => {
                out.push(BININT);
                out.extend_from_slice(&ts.to_le_bytes());
            }
            Err(_) => {
                // Two's complement little-endian, 8 bytes.
                out.extend_from_slice(&[LONG1, 8]);
                out.extend_from_slice(&p.ts.to_le_bytes());
            }
        }
        out.push(BINFLOAT);
        out.extend_from_slice(&p.value.to_be_bytes());
        out.extend_from_slice(&[TUPLE2, TUPLE2]);
        let count = count + 1;
        let payload = out.len() - header - 4;
        if count >= PICKLE_MAX_POINTS || payload >= PICKLE_MAX_PAYLOAD_BYTES {
            close_frame(out, header);
            frame = None;
        } else {
            frame = Some((header, count));
        }
    }
    if let Some((header, _)) = frame {
        close_frame(out, header);
    }
}

fn close_frame(out: &mut Vec<u8>, header: usize) {
    out.extend_from_slice(&[APPENDS, STOP]);
    let len = (out.len() - header - 4) as u32;
    out[header..header + 4].copy_from_slice(&len.to_be_bytes());
}

/// Points of the series `path` at the seconds of `range`, each worth
/// `ts * scale`: what the queue and spool tests push around.
#[cfg(test)]
pub(crate) fn test_points(path: &str, range: std::ops::Range<i64>, scale: f64) -> Vec<CarbonPoint> {
    range
        .map(|ts| CarbonPoint {
            path: path.into(),
            ts,
            value: ts as f64 * scale,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(path: &str, ts: i64, value: f64) -> CarbonPoint {
        CarbonPoint {
            path: path.into(),
            ts,
            value,
        }
    }

    #[test]
    fn plaintext_lines_are_exact() {
        let points = [
            p("hyperstats.n1.web-1.cpu.time_percent", 1764100001, 12.5),
            p("hyperstats.n1.web-1.vcpu.current", 1764100001, 2.0),
            p("a.b", 1764100002, -0.000123),
            p("a.b", 1764100003, 1e21),
            p("a.b", 1764100004, 0.1 + 0.2),
        ];
        let mut out = Vec::new();
        Encoder::new(Protocol::Plaintext).encode(&points, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "hyperstats.n1.web-1.cpu.time_percent 12.5 1764100001\n\
             hyperstats.n1.web-1.vcpu.current 2.0 1764100001\n\
             a.b -0.000123 1764100002\n\
             a.b 1e+21 1764100003\n\
             a.b 0.30000000000000004 1764100004\n"
        );
    }

    #[test]
    fn plaintext_round_trips_through_parse_line() {
        let values = [
            0.0,
            -0.0,
            1.0 / 3.0,
            6.02214076e23,
            5e-324,
            f64::MAX,
            123456789.125,
        ];
        for v in values {
            let point = p("x.y_z", 1764100001, v);
            let mut out = Vec::new();
            write_line(&mut out, &point);
            let line = std::str::from_utf8(&out).unwrap().trim_end();
            let back = parse_line(line).unwrap();
            assert_eq!(back.value.to_bits(), v.to_bits(), "{line}");
            assert_eq!(back, point);
        }
        for bad in [
            "",
            "a.b",
            "a.b 1",
            "a.b x 1",
            "a.b 1 x",
            "a.b 1 2 3",
            "a.b NaN 1",
            "a b 1 2",
        ] {
            assert_eq!(parse_line(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn datapoints_are_floored_and_non_finite_values_skipped() {
        let d = Datapoint {
            ts: 1764100001.998,
            uuid: "u".into(),
            domain: "d".into(),
            metric: "m".into(),
            value: 3.5,
        };
        let point = CarbonPoint::from_datapoint("a.b".into(), &d).unwrap();
        assert_eq!((point.ts, point.value), (1764100001, 3.5));
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let d = Datapoint {
                value: bad,
                ..d.clone()
            };
            assert_eq!(CarbonPoint::from_datapoint("a.b".into(), &d), None);
        }
    }

    /// The bytes Python's `pickle.loads` reads as
    /// `[('a.b', (1764100001, 1.5)), ('cd', (1764100002, -2.0))]`
    /// (checked with Python 3.11 when this test was written).
    #[test]
    fn pickle_frame_is_exact() {
        let points = [p("a.b", 1764100001, 1.5), p("cd", 1764100002, -2.0)];
        let mut out = Vec::new();
        Encoder::new(Protocol::Pickle).encode(&points, &mut out);
        let mut want: Vec<u8> = vec![0, 0, 0, 0, 0x80, 2, b']', b'('];
        want.extend_from_slice(b"X\x03\x00\x00\x00a.b");
        want.push(b'J');
        want.extend_from_slice(&1764100001i32.to_le_bytes());
        want.extend_from_slice(b"G\x3f\xf8\x00\x00\x00\x00\x00\x00");
        want.extend_from_slice(&[0x86, 0x86]);
        want.extend_from_slice(b"X\x02\x00\x00\x00cd");
        want.push(b'J');
        want.extend_from_slice(&1764100002i32.to_le_bytes());
        want.extend_from_slice(b"G\xc0\x00\x00\x00\x00\x00\x00\x00");
        want.extend_from_slice(&[0x86, 0x86, b'e', b'.']);
        let len = (want.len() - 4) as u32;
        want[..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(out, want);
    }

    #[test]
    fn pickle_timestamps_beyond_2038_use_long1() {
        let mut out = Vec::new();
        Encoder::new(Protocol::Pickle).encode(&[p("a", 1 << 32, 0.0)], &mut out);
        let mut want = b"X\x01\x00\x00\x00a\x8a\x08".to_vec();
        want.extend_from_slice(&(1i64 << 32).to_le_bytes());
        let at = 8;
        assert_eq!(&out[at..at + want.len()], &want[..]);
    }

    #[test]
    fn pickle_frames_split_at_the_point_limit() {
        let points: Vec<CarbonPoint> = (0..PICKLE_MAX_POINTS * 2 + 1)
            .map(|i| p("hyperstats.n.d.m", 1764100000 + i as i64, i as f64))
            .collect();
        let mut out = Vec::new();
        Encoder::new(Protocol::Pickle).encode(&points, &mut out);
        let mut frames = Vec::new();
        let mut rest = &out[..];
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            let payload = &rest[4..4 + len];
            assert_eq!(&payload[..4], &[0x80, 2, b']', b'(']);
            assert_eq!(&payload[len - 2..], b"e.");
            frames.push(len);
            rest = &rest[4 + len..];
        }
        assert_eq!(frames.len(), 3);
        // Every point costs the same here: 1 + 4 + 16 + 5 + 9 + 2 bytes.
        let per_point = 37;
        assert_eq!(frames[0], 6 + PICKLE_MAX_POINTS * per_point);
        assert_eq!(frames[2], 6 + per_point);
        let mut none = Vec::new();
        Encoder::new(Protocol::Pickle).encode(&[], &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn valid_paths() {
        assert!(is_valid_path("a.b-c_d"));
        assert!(is_valid_path("ünïcode.ok"));
        for bad in ["", "a b", "a\nb", "a\tb", "a\u{0}b"] {
            assert!(!is_valid_path(bad), "{bad:?}");
        }
    }
}
