//! The disk spool: points that waited too long for Carbon, in files that
//! survive an agent restart.
//!
//! # Layout
//! One directory (`carbon.spool_dir`), one file per segment, named
//! `<id>-<points>.carbon` with a 20-digit, ever-increasing id, so the names
//! sort oldest first and say how many points each holds without reading
//! it. A segment is Carbon plaintext (`path value timestamp` lines),
//! readable and even sendable by hand (`nc carbon 2003 < file`). It is
//! written to `<id>.tmp`, synced and renamed, so a crash never leaves a
//! half segment under a segment's name; leftover `.tmp` files are removed
//! at start.
//!
//! # Order and limits
//! Segments are sent oldest first, each whole, and deleted only once the
//! sink knows the points are safe (confirmed, or past the replay window).
//! After a broken connection the spool rewinds and sends every remaining
//! segment again. Beyond `spool_max_size` the oldest segments are deleted
//! and their points counted as dropped.
//!
//! All I/O here is synchronous and small (a segment is at most
//! [`SEGMENT_MAX_POINTS`] lines, a few MB), done from the sink's task.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::encoder::{CarbonPoint, parse_line, write_line};

/// Points per segment file at most: about 3.5 MB of lines, read and sent
/// in one go.
pub(crate) const SEGMENT_MAX_POINTS: usize = 50_000;

/// The extension of a complete segment.
const SEGMENT_EXT: &str = "carbon";

/// The extension of a segment being written.
const TMP_EXT: &str = "tmp";

/// One segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    id: u64,
    points: u64,
    bytes: u64,
}

/// What a spill or a limit check removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Dropped {
    /// Points deleted with the oldest segments.
    pub(crate) points: u64,
    /// Segments deleted.
    pub(crate) segments: usize,
}

/// A segment read back for sending.
#[derive(Debug)]
pub(crate) struct ReadSegment {
    /// The segment's id, to delete it once safe.
    pub(crate) id: u64,
    /// Its points, oldest first.
    pub(crate) points: Vec<CarbonPoint>,
    /// Lines that were not points (a damaged file): skipped.
    pub(crate) bad_lines: usize,
}

/// The spool directory and what is in it.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    /// Segments on disk, oldest first.
    segments: VecDeque<Segment>,
    /// Index in `segments` of the next one to send on this connection.
    cursor: usize,
    /// The id the next segment gets.
    next_id: u64,
}

impl Spool {
    /// Opens (creating it if needed) the spool in `dir`, finding the
    /// segments a previous run left.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> Result<Spool> {
        fs::create_dir_all(dir).with_context(|| {
            format!(
                "failed to create the Carbon spool directory {}",
                dir.display()
            )
        })?;
        let mut segments = Vec::new();
        for entry in crate::dir::entries(dir, "Carbon spool")? {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(&format!(".{TMP_EXT}")) {
                // A segment whose writing was interrupted.
                let _ = fs::remove_file(&path);
                continue;
            }
            if let Some((id, points)) = parse_name(name) {
                let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
                segments.push(Segment { id, points, bytes });
            }
        }
        segments.sort_by_key(|s| s.id);
        let next_id = segments.last().map_or(0, |s| s.id + 1);
        let spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segments: segments.into(),
            cursor: 0,
            next_id,
        };
        // Test that segments can be written now, not at the first outage.
        let probe = spool.dir.join(format!("probe.{TMP_EXT}"));
        fs::write(&probe, b"").with_context(|| {
            format!(
                "cannot write to the Carbon spool directory {}",
                dir.display()
            )
        })?;
        let _ = fs::remove_file(probe);
        Ok(spool)
    }

    /// The spool's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Points on disk.
    pub(crate) fn points(&self) -> u64 {
        self.segments.iter().map(|s| s.points).sum()
    }

    /// Bytes on disk.
    pub(crate) fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Segments on disk.
    pub(crate) fn segments(&self) -> usize {
        self.segments.len()
    }

    /// Whether segments remain to be sent on this connection.
    pub(crate) fn has_unsent(&self) -> bool {
        self.cursor < self.segments.len()
    }

    /// Writes `points` (oldest first) as new segments after all others,
    /// then deletes the oldest segments while the spool is over its limit.
    /// On a write error nothing of the failed segment stays on disk.
    pub(crate) fn write(&mut self, points: &[CarbonPoint]) -> io::Result<Dropped> {
        for chunk in points.chunks(SEGMENT_MAX_POINTS) {
            let id = self.next_id;
            self.next_id += 1;
            let tmp = self.dir.join(format!("{id:020}.{TMP_EXT}"));
            let result = (|| {
                let file = fs::File::create(&tmp)?;
                let mut w = BufWriter::with_capacity(256 * 1024, file);
                let mut line = Vec::with_capacity(128);
                for p in chunk {
                    line.clear();
                    write_line(&mut line, p);
                    w.write_all(&line)?;
                }
                let file = w.into_inner().map_err(|e| e.into_error())?;
                file.sync_all()?;
                let bytes = file.metadata()?.len();
                fs::rename(&tmp, self.dir.join(segment_name(id, chunk.len() as u64)))?;
                Ok(bytes)
            })();
            match result {
                Ok(bytes) => self.segments.push_back(Segment {
                    id,
                    points: chunk.len() as u64,
                    bytes,
                }),
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    return Err(e);
                }
            }
        }
        Ok(self.enforce_limit())
    }

    /// Deletes the oldest segments while over the size limit (always
    /// keeping the newest).
    fn enforce_limit(&mut self) -> Dropped {
        let mut dropped = Dropped::default();
        while self.segments.len() > 1 && self.bytes() > self.max_bytes {
            let s = self.segments.pop_front().expect("len > 1");
            let _ = fs::remove_file(self.dir.join(segment_name(s.id, s.points)));
            self.cursor = self.cursor.saturating_sub(1);
            dropped.points += s.points;
            dropped.segments += 1;
        }
        dropped
    }

    /// Reads the next unsent segment and moves past it. A segment that
    /// cannot be read is deleted (the error says which); its points are
    /// lost.
    pub(crate) fn next_unsent(&mut self) -> Option<Result<ReadSegment, (u64, anyhow::Error)>> {
        let s = self.segments.get(self.cursor)?.clone();
        self.cursor += 1;
        let path = self.dir.join(segment_name(s.id, s.points));
        match fs::read_to_string(&path) {
            Ok(text) => {
                let mut points = Vec::with_capacity(s.points as usize);
                let mut bad_lines = 0;
                for line in text.lines() {
                    match parse_line(line) {
                        Some(p) => points.push(p),
                        None => bad_lines += 1,
                    }
                }
                Some(Ok(ReadSegment {
                    id: s.id,
                    points,
                    bad_lines,
                }))
            }
            Err(e) => {
                self.delete(s.id);
                Some(Err((
                    s.points,
                    anyhow::Error::new(e)
                        .context(format!("failed to read spool segment {}", path.display())),
                )))
            }
        }
    }

    /// Deletes segment `id` (sent and safe). Unknown ids are ignored (the
    /// limit may have deleted it already).
    pub(crate) fn delete(&mut self, id: u64) {
        if let Some(i) = self.segments.iter().position(|s| s.id == id) {
            let s = self.segments.remove(i).expect("index exists");
            let _ = fs::remove_file(self.dir.join(segment_name(s.id, s.points)));
            if i < self.cursor {
                self.cursor -= 1;
            }
        }
    }

    /// After a broken connection: every remaining segment is sent again,
    /// from the oldest.
    pub(crate) fn rewind(&mut self) {
        self.cursor = 0;
    }
}

fn segment_name(id: u64, points: u64) -> String {
    format!("{id:020}-{points}.{SEGMENT_EXT}")
}

/// `<id>-<points>.carbon` → (id, points).
fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(&format!(".{SEGMENT_EXT}"))?;
    let (id, points) = stem.split_once('-')?;
    if id.len() != 20 {
        return None;
    }
    Some((id.parse().ok()?, points.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(range: std::ops::Range<i64>) -> Vec<CarbonPoint> {
        super::super::encoder::test_points("hyperstats.n.d.m", range, 0.25)
    }

    fn read_all(spool: &mut Spool) -> Vec<i64> {
        let mut out = Vec::new();
        while let Some(seg) = spool.next_unsent() {
            out.extend(seg.unwrap().points.iter().map(|p| p.ts));
        }
        out
    }

    #[test]
    fn segments_survive_a_restart_and_are_read_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        s.write(&pts(0..3)).unwrap();
        s.write(&pts(3..5)).unwrap();
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                "00000000000000000000-3.carbon",
                "00000000000000000001-2.carbon"
            ]
        );
        assert_eq!(
            fs::read_to_string(dir.path().join(&names[1])).unwrap(),
            "hyperstats.n.d.m 0.75 3\nhyperstats.n.d.m 1.0 4\n"
        );
        // A leftover temporary file from a crash is removed at open.
        fs::write(dir.path().join("00000000000000000002.tmp"), "x").unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!((s.points(), s.segments()), (5, 2));
        assert!(!dir.path().join("00000000000000000002.tmp").exists());
        assert_eq!(read_all(&mut s), vec![0, 1, 2, 3, 4]);
        // New segments continue the numbering.
        s.write(&pts(5..6)).unwrap();
        assert!(dir.path().join("00000000000000000002-1.carbon").exists());
    }

    #[test]
    fn rewind_resends_what_is_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        s.write(&pts(0..2)).unwrap();
        s.write(&pts(2..4)).unwrap();
        let first = s.next_unsent().unwrap().unwrap();
        s.delete(first.id);
        let _second = s.next_unsent().unwrap().unwrap();
        assert!(!s.has_unsent());
        s.rewind();
        assert_eq!(read_all(&mut s), vec![2, 3]);
        assert_eq!(s.points(), 2);
    }

    #[test]
    fn large_writes_split_into_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        let n = SEGMENT_MAX_POINTS as i64 * 2 + 10;
        s.write(&pts(0..n)).unwrap();
        assert_eq!(s.segments(), 3);
        assert_eq!(s.points(), n as u64);
        assert_eq!(read_all(&mut s), (0..n).collect::<Vec<_>>());
    }

    #[test]
    fn over_the_limit_the_oldest_segments_go_and_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(s.write(&pts(0..100)).unwrap(), Dropped::default());
        // Room for two segments of this size, not three.
        let max = s.bytes() * 5 / 2;
        s.max_bytes = max;
        assert_eq!(s.write(&pts(100..200)).unwrap(), Dropped::default());
        let d = s.write(&pts(200..300)).unwrap();
        assert_eq!(
            d,
            Dropped {
                points: 100,
                segments: 1
            }
        );
        assert!(s.bytes() <= max);
        assert_eq!(read_all(&mut s), (100..300).collect::<Vec<_>>());
    }

    #[test]
    fn damaged_lines_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("00000000000000000009-3.carbon"),
            "a.b 1 10\ngarbage\na.b 2 1",
        )
        .unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        let seg = s.next_unsent().unwrap().unwrap();
        assert_eq!(seg.points.len(), 2);
        assert_eq!(seg.bad_lines, 1);
        assert_eq!(seg.id, 9);
    }

    #[test]
    fn unwritable_directory_is_an_error_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, "").unwrap();
        let err = format!(
            "{:#}",
            Spool::open(&file.join("spool"), 1 << 30).unwrap_err()
        );
        assert!(
            err.contains("failed to create the Carbon spool directory"),
            "{err}"
        );
    }
}
