//! The disk spool: points that waited too long for Carbon, in files that
//! survive an agent restart.
//!
//! # Layout
//! One directory (`carbon.spool_dir`), one file per segment, named
//! `<id>-<points>.carbon` with a 20-digit, ever-increasing id, so the names
//! sort oldest first and say how many points each holds without reading
//! it. A segment is Carbon plaintext (`path value timestamp` lines),
//! readable and even sendable by hand (`nc carbon 2003 < file`). It is
//! written to `<id>.tmp`, synced, renamed and the directory synced, so a
//! crash never leaves a half segment under a segment's name, nor loses a
//! rename; leftover `.tmp` files are removed at start.
//!
//! # The directory
//! The agent writes here as root, so the directory must be one only its
//! user can change (see [`crate::trusted_dir`]): owned by it, not writable
//! by group or others, not a symlink; anything else is refused at start
//! with an error naming the path, owner and mode. It is created mode 0700
//! if missing. Files are created with `O_EXCL|O_NOFOLLOW` (mode 0600) and
//! read only if they are regular files. Files that are not segments
//! (other names, a segment name on a FIFO or a directory, or one claiming
//! more than [`SEGMENT_MAX_POINTS`] points) are logged once at start and
//! left alone.
//!
//! # Order and limits
//! Segments are sent oldest first, each whole, and deleted only once the
//! sink knows the points are safe (confirmed, or past the replay window).
//! After a broken connection the spool rewinds and sends every remaining
//! segment again. Beyond `spool_max_size` the oldest segments are deleted
//! and their points counted as dropped. When the disk is full, the oldest
//! segments are deleted until the new one fits (their points counted as
//! dropped); only if the spool holds nothing older are the new points
//! themselves dropped (and counted).
//!
//! All I/O here is synchronous and small (a segment is at most
//! [`SEGMENT_MAX_POINTS`] lines, a few MB), done from the sink's task.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use tracing::warn;

use super::encoder::{CarbonPoint, parse_line, write_line};
use crate::trusted_dir::{Dir, is_regular};

/// Points per segment file at most: about 3.5 MB of lines, read and sent
/// in one go.
pub(crate) const SEGMENT_MAX_POINTS: usize = 50_000;

/// Bytes read from one segment at most: [`SEGMENT_MAX_POINTS`] lines of
/// paths far longer than any the agent writes. A larger file is damaged
/// (or not ours) and is not read into memory.
pub(crate) const SEGMENT_MAX_BYTES: u64 = 64 << 20;

/// Mode of a spool directory the agent creates: its own user only.
pub(crate) const DIR_MODE: u32 = 0o700;

/// Foreign files named in the start-up warning at most (the count is
/// always given).
const FOREIGN_NAMES_LOGGED: usize = 10;

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

/// A [`Spool::write`] that could not put every point on disk.
#[derive(Debug)]
pub(crate) struct WriteError {
    /// Older segments deleted before it gave up (to make room on a full
    /// disk).
    pub(crate) dropped: Dropped,
    /// Points of this write that are not on disk.
    pub(crate) lost: u64,
    /// Why: a full disk that cannot hold one segment even with the spool
    /// emptied, or another failure.
    pub(crate) error: io::Error,
}

impl WriteError {
    /// Points this write cost: the old ones deleted and its own lost.
    pub(crate) fn dropped_points(&self) -> u64 {
        self.dropped.points + self.lost
    }
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} points not spooled: {}", self.lost, self.error)
    }
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
    dir: Dir,
    max_bytes: u64,
    /// Segments on disk, oldest first.
    segments: VecDeque<Segment>,
    /// Index in `segments` of the next one to send on this connection.
    cursor: usize,
    /// The id the next segment gets.
    next_id: u64,
    /// The spool's bytes after making room when a write last found the
    /// disk full: the disk counts as full until sending has halved them.
    full_at: Option<u64>,
}

impl Spool {
    /// Opens (creating it if needed) the spool in `dir`, refusing a
    /// directory others could change, and finds the segments a previous
    /// run left.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> Result<Spool> {
        let (dir, _) = Dir::create_trusted(dir, "Carbon spool", DIR_MODE)?;
        let mut segments = Vec::new();
        let mut foreign: Vec<OsString> = Vec::new();
        let mut max_id = None;
        for name in dir.names()? {
            let Some(text) = name.to_str() else {
                foreign.push(name);
                continue;
            };
            if text.ends_with(&format!(".{TMP_EXT}")) {
                // A segment whose writing was interrupted (unlinking never
                // follows a link).
                let _ = dir.remove(&name);
                continue;
            }
            let Some((id, points)) = parse_name(text) else {
                foreign.push(name);
                continue;
            };
            max_id = max_id.max(Some(id));
            let st = match dir.stat(&name) {
                Ok(st) => st,
                Err(_) => continue,
            };
            if !is_regular(&st) || points > SEGMENT_MAX_POINTS as u64 || id == u64::MAX {
                foreign.push(name);
                continue;
            }
            segments.push(Segment {
                id,
                points,
                bytes: crate::trusted_dir::file_id(&st).size,
            });
        }
        if !foreign.is_empty() {
            foreign.sort();
            let names: Vec<_> = foreign
                .iter()
                .take(FOREIGN_NAMES_LOGGED)
                .map(|n| n.to_string_lossy().into_owned())
                .collect();
            warn!(
                message = "The Carbon spool directory holds files that are not spool segments; leaving them alone.",
                dir = %dir.path().display(),
                count = foreign.len(),
                files = %names.join(", "),
            );
        }
        segments.sort_by_key(|s| s.id);
        let next_id = max_id.map_or(0, |id: u64| id.saturating_add(1));
        let spool = Spool {
            dir,
            max_bytes,
            segments: segments.into(),
            cursor: 0,
            next_id,
            full_at: None,
        };
        // Test that segments can be written now, not at the first outage.
        let probe = format!("probe.{TMP_EXT}");
        spool.dir.create_new(&probe).with_context(|| {
            format!(
                "cannot write to the Carbon spool directory {}",
                spool.dir.path().display()
            )
        })?;
        let _ = spool.dir.remove(&probe);
        Ok(spool)
    }

    /// The spool's directory.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
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

    /// Whether the disk (or the quota) is full: a write found it so, and
    /// sending has not since taken away half of what the spool held then.
    /// Deleting old segments to make room does not end it: the next
    /// writes will need the same.
    pub(crate) fn disk_full(&self) -> bool {
        self.full_at.is_some_and(|bytes| self.bytes() > bytes / 2)
    }

    /// Writes `points` (oldest first) as new segments after all others,
    /// then deletes the oldest segments while the spool is over its limit.
    /// A full disk deletes the oldest segments, one at a time, until the
    /// new one fits. A segment that fails never stays on disk; segments
    /// written before it do. Every point deleted or not written is counted
    /// in the answer.
    pub(crate) fn write(&mut self, points: &[CarbonPoint]) -> Result<Dropped, WriteError> {
        if !self.disk_full() {
            self.full_at = None;
        }
        let mut full = false;
        let mut dropped = Dropped::default();
        let mut chunks = points.chunks(SEGMENT_MAX_POINTS);
        while let Some(chunk) = chunks.next() {
            let result = loop {
                match self.write_segment(chunk) {
                    Err(e) if is_disk_full(&e) => {
                        full = true;
                        // Make room with the oldest segment, then retry.
                        match self.drop_oldest() {
                            Some(points) => {
                                dropped.points += points;
                                dropped.segments += 1;
                            }
                            None => break Err(e),
                        }
                    }
                    other => break other,
                }
            };
            if full {
                self.full_at = Some(self.bytes());
            }
            if let Err(error) = result {
                // This chunk and the rest are lost: the disk cannot hold
                // one segment with the spool empty, or writing fails.
                let lost = chunk.len() as u64 + chunks.map(|c| c.len() as u64).sum::<u64>();
                return Err(WriteError {
                    dropped,
                    lost,
                    error,
                });
            }
        }
        let limit = self.enforce_limit();
        dropped.points += limit.points;
        dropped.segments += limit.segments;
        Ok(dropped)
    }

    /// Writes one segment after all others.
    fn write_segment(&mut self, chunk: &[CarbonPoint]) -> io::Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let tmp = format!("{id:020}.{TMP_EXT}");
        let result = (|| {
            let file = self.dir.create_new(&tmp)?;
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
            self.dir
                .rename_new(&tmp, segment_name(id, chunk.len() as u64))?;
            Ok(bytes)
        })();
        match result {
            Ok(bytes) => {
                self.segments.push_back(Segment {
                    id,
                    points: chunk.len() as u64,
                    bytes,
                });
                Ok(())
            }
            Err(e) => {
                let _ = self.dir.remove(&tmp);
                Err(e)
            }
        }
    }

    /// Deletes the oldest segment; its points, or `None` if there is none.
    fn drop_oldest(&mut self) -> Option<u64> {
        let s = self.segments.pop_front()?;
        let _ = self.dir.remove(segment_name(s.id, s.points));
        self.cursor = self.cursor.saturating_sub(1);
        Some(s.points)
    }

    /// Deletes the oldest segments while over the size limit (always
    /// keeping the newest).
    fn enforce_limit(&mut self) -> Dropped {
        let mut dropped = Dropped::default();
        while self.segments.len() > 1 && self.bytes() > self.max_bytes {
            let points = self.drop_oldest().expect("len > 1");
            dropped.points += points;
            dropped.segments += 1;
        }
        dropped
    }

    /// Reads the next unsent segment and moves past it. A segment that
    /// cannot be read is deleted from the spool (the error says which);
    /// its points are lost. One that is no longer a regular file is left
    /// on disk.
    pub(crate) fn next_unsent(&mut self) -> Option<Result<ReadSegment, (u64, anyhow::Error)>> {
        let s = self.segments.get(self.cursor)?.clone();
        self.cursor += 1;
        let name = segment_name(s.id, s.points);
        match self.read_segment(&name, s.points) {
            Ok((points, bad_lines)) => Some(Ok(ReadSegment {
                id: s.id,
                points,
                bad_lines,
            })),
            Err(e) => {
                self.delete(s.id);
                Some(Err((
                    s.points,
                    e.context(format!(
                        "failed to read spool segment {}",
                        self.dir.display(&name)
                    )),
                )))
            }
        }
    }

    /// The points and bad lines of segment file `name`.
    fn read_segment(&self, name: &str, expected: u64) -> Result<(Vec<CarbonPoint>, usize)> {
        let Some((file, _)) = self.dir.open_regular(name)? else {
            anyhow::bail!("it is no longer a regular file");
        };
        let mut bytes = Vec::new();
        file.take(SEGMENT_MAX_BYTES + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > SEGMENT_MAX_BYTES {
            anyhow::bail!("it is larger than a segment can be ({SEGMENT_MAX_BYTES} bytes)");
        }
        let text = String::from_utf8(bytes).context("it is not text")?;
        let mut points = Vec::with_capacity(expected.min(SEGMENT_MAX_POINTS as u64) as usize);
        let mut bad_lines = 0;
        for line in text.lines() {
            match parse_line(line) {
                Some(p) => points.push(p),
                None => bad_lines += 1,
            }
        }
        Ok((points, bad_lines))
    }

    /// Deletes segment `id` (sent and safe). Unknown ids are ignored (the
    /// limit may have deleted it already).
    pub(crate) fn delete(&mut self, id: u64) {
        if let Some(i) = self.segments.iter().position(|s| s.id == id) {
            let s = self.segments.remove(i).expect("index exists");
            let _ = self.dir.remove(segment_name(s.id, s.points));
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

/// Whether `e` says the disk (or the user's quota) is full.
fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
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
    use std::fs;

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

    #[test]
    fn foreign_files_are_left_alone_and_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A name claiming more points than a segment holds (it would ask
        // for an allocation of that size), a FIFO and a directory with
        // segment names, and names that are no segment's.
        fs::write(
            d.join("00000000000000000007-18446744073709551615.carbon"),
            "a.b 1 1\n",
        )
        .unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            d.join("00000000000000000008-5.carbon").as_path(),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        fs::create_dir(d.join("00000000000000000009-5.carbon")).unwrap();
        fs::create_dir(d.join("lost+found")).unwrap();
        fs::write(d.join("notes"), "x").unwrap();
        fs::write(
            d.join("00000000000000000003-2.carbon"),
            "a.b 1 1\na.b 2 2\n",
        )
        .unwrap();
        let mut s = Spool::open(d, 1 << 30).unwrap();
        assert_eq!((s.segments(), s.points()), (1, 2));
        assert_eq!(read_all(&mut s), vec![1, 2]);
        // New segments get ids after every name seen, foreign or not.
        s.write(&pts(0..1)).unwrap();
        assert!(d.join("00000000000000000010-1.carbon").exists());
        for name in [
            "00000000000000000007-18446744073709551615.carbon",
            "00000000000000000008-5.carbon",
            "lost+found",
            "notes",
        ] {
            assert!(d.join(name).exists(), "{name} was removed");
        }
    }

    #[test]
    fn a_planted_link_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let d = dir.path().join("spool");
        let mut s = Spool::open(&d, 1 << 30).unwrap();
        std::os::unix::fs::symlink(&victim, d.join("00000000000000000000.tmp")).unwrap();
        let err = s.write(&pts(0..3)).unwrap_err();
        assert_eq!(err.dropped_points(), 3);
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        // The link went with the failed segment; the next write works.
        s.write(&pts(3..5)).unwrap();
        assert_eq!(read_all(&mut s), vec![3, 4]);
    }
}
