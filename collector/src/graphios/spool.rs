//! The spool directory Nagios moves perfdata files into: which files to
//! process, reading one, and deleting it once it is forwarded.
//!
//! The directory is Nagios's (user `nagios` owns it), so it is not
//! checked like the agent's own directories, but it is opened once and
//! pinned ([`Dir::open`]): every file is listed, opened and deleted
//! through that descriptor, so re-pointing the path (or a symlink in it)
//! later redirects nothing. Only regular files are read, opened without
//! following a link and never blocking (a FIFO or device is never
//! opened). Whatever else is there (symlinks, FIFOs, devices, sockets,
//! files without a single Graphios perfdata line, empty files not named
//! as Nagios names its moved files) is left alone and logged once, not
//! again while it stays as it is.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use rustix::fs::Stat;
use tracing::{debug, warn};

use super::args::Naming;
use super::line::{Metric, parse_line};
use crate::trusted_dir::{Dir, FileId, file_id, is_regular};

/// The files Nagios is still appending to: never touched.
const ACTIVE_FILES: [&str; 2] = ["host-perfdata", "service-perfdata"];

/// What identifies a file's state: a file left alone is looked at again
/// only if this changes.
pub(crate) type Identity = FileId;

fn identity(st: &Stat) -> Identity {
    file_id(st)
}

/// A file to process, as it was when listed.
#[derive(Debug, Clone)]
pub(crate) struct SpoolFile {
    /// Its name in the spool directory.
    pub(crate) name: OsString,
}

/// The Nagios perfdata spool directory.
#[derive(Debug)]
pub(crate) struct Spool {
    /// The directory, pinned.
    dir: Dir,
    /// Files left alone, as they were when logged: logged once, then
    /// skipped while unchanged.
    left_alone: HashMap<OsString, Identity>,
}

impl Spool {
    /// Opens the spool directory `path`.
    pub(crate) fn open(path: &Path) -> Result<Spool> {
        Ok(Spool {
            dir: Dir::open(path, "perfdata spool")?,
            left_alone: HashMap::new(),
        })
    }

    /// `name` in the directory, for messages.
    pub(crate) fn display(&self, name: &OsStr) -> String {
        self.dir.display(name)
    }

    /// Logs (once while it stays as it is) that `name` is left alone.
    fn leave_alone(&mut self, name: &OsStr, st: &Stat, why: &str) {
        let id = identity(st);
        if self.left_alone.get(name) != Some(&id) {
            warn!(
                message = "Leaving a file in the perfdata spool alone.",
                file = %self.dir.display(name),
                reason = why,
            );
            self.left_alone.insert(name.to_owned(), id);
        }
    }

    /// The perfdata spool files to process now, oldest first (by
    /// modification time, then name): regular files but the ones Nagios
    /// appends to and names starting with `_`. Empty files Nagios moved
    /// here (`service-perfdata.*`, `host-perfdata.*`) are deleted, as
    /// Graphios does; other files that cannot be perfdata are left alone.
    pub(crate) fn files(&mut self) -> Result<Vec<SpoolFile>> {
        let mut files = Vec::new();
        let names = self.dir.names()?;
        self.left_alone.retain(|n, _| names.contains(n));
        for name in names {
            let text = name.to_string_lossy();
            if ACTIVE_FILES.contains(&text.as_ref()) || text.starts_with('_') {
                continue;
            }
            let Ok(st) = self.dir.stat(&name) else {
                continue;
            };
            if rustix::fs::FileType::from_raw_mode(st.st_mode as _)
                == rustix::fs::FileType::Directory
            {
                continue;
            }
            if self.left_alone.get(&name) == Some(&identity(&st)) {
                continue;
            }
            if !is_regular(&st) {
                self.leave_alone(
                    &name,
                    &st,
                    "not a regular file (a symlink, FIFO, device or socket)",
                );
                continue;
            }
            if file_id(&st).size == 0 {
                if is_nagios_name(&text) {
                    let _ = self.dir.remove(&name);
                } else {
                    self.leave_alone(
                        &name,
                        &st,
                        "empty, and not named as Nagios names perfdata files",
                    );
                }
                continue;
            }
            files.push((file_id(&st).mtime, name));
        }
        files.sort();
        Ok(files
            .into_iter()
            .map(|(_, name)| SpoolFile { name })
            .collect())
    }

    /// Reads one spool file, logging what is malformed with file and line;
    /// `None` if it is not perfdata (not a regular file any more, or not
    /// one Graphios perfdata line), which is logged and left alone.
    pub(crate) fn read(&mut self, file: &SpoolFile, naming: &Naming) -> Result<Option<FileResult>> {
        let path = self.dir.display(&file.name);
        let Some((mut f, st)) = self
            .dir
            .open_regular(&file.name)
            .with_context(|| format!("failed to open {path}"))?
        else {
            if let Ok(st) = self.dir.stat(&file.name) {
                self.leave_alone(
                    &file.name,
                    &st,
                    "not a regular file (a symlink, FIFO, device or socket)",
                );
            }
            return Ok(None);
        };
        if file_id(&st).size > FILE_MAX_BYTES {
            self.leave_alone(
                &file.name,
                &st,
                "larger than a Nagios perfdata file can be (64 MiB)",
            );
            return Ok(None);
        }
        let mut bytes = Vec::new();
        (&mut f)
            .take(FILE_MAX_BYTES)
            .read_to_end(&mut bytes)
            .with_context(|| format!("failed to read {path}"))?;
        let mut out = parse_file(&bytes, &path, naming);
        out.id = identity(&st);
        if out.perfdata_lines == 0 {
            self.leave_alone(&file.name, &st, "holds no Graphios perfdata line");
            return Ok(None);
        }
        for (line, error) in out.errors.drain(..) {
            warn!(
                message = "Skipped a malformed perfdata line.",
                file = %path,
                line,
                error = %error,
            );
        }
        Ok(Some(out))
    }

    /// Deletes `file`, forwarded, if it is still the file that was read
    /// (as `read` found it): a file replaced meanwhile stays.
    pub(crate) fn remove(&self, file: &SpoolFile, read: Identity) {
        let path = self.dir.display(&file.name);
        match self.dir.stat(&file.name) {
            Ok(st) if (file_id(&st).dev, file_id(&st).ino) == (read.dev, read.ino) => {
                match self.dir.remove(&file.name) {
                    Ok(()) => debug!(message = "Deleted a forwarded perfdata file.", file = %path),
                    Err(e) => {
                        warn!(message = "Cannot delete a forwarded perfdata file.", file = %path, error = %e)
                    }
                }
            }
            Ok(_) => warn!(
                message = "A forwarded perfdata file was replaced since it was read; leaving the new one.",
                file = %path
            ),
            Err(e) => {
                debug!(message = "A forwarded perfdata file is gone already.", file = %path, error = %e)
            }
        }
    }
}

/// Whether `name` is one Nagios gives the files it moves into the spool
/// (`service-perfdata.<TIMET>`, `host-perfdata.<TIMET>`).
fn is_nagios_name(name: &str) -> bool {
    ACTIVE_FILES.iter().any(|a| {
        name.strip_prefix(a)
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// What reading one spool file gave.
#[derive(Debug, Default)]
pub(crate) struct FileResult {
    /// All its points.
    pub(crate) metrics: Vec<Metric>,
    /// Malformed lines and perfdata items (logged already).
    pub(crate) malformed: usize,
    /// Lines that are Graphios perfdata (with or without points).
    pub(crate) perfdata_lines: usize,
    /// The file as it was read, so that only that file is deleted.
    pub(crate) id: Identity,
    /// The first [`MALFORMED_LOGGED`] malformed lines (number, why), logged
    /// only once the file turns out to be perfdata.
    errors: Vec<(usize, String)>,
}

/// Malformed lines of one file logged at most (all are counted).
const MALFORMED_LOGGED: usize = 1000;

/// Bytes read from one spool file at most: Nagios moves its file every
/// few seconds, so a larger one is no perfdata file of its.
pub(crate) const FILE_MAX_BYTES: u64 = 64 << 20;

/// Parses the contents of spool file `path`, logging what is malformed
/// with file and line.
fn parse_file(bytes: &[u8], path: &str, naming: &Naming) -> FileResult {
    let text = String::from_utf8_lossy(bytes);
    let mut out = FileResult::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line, naming) {
            Ok(parsed) => {
                out.perfdata_lines += 1;
                for item in &parsed.bad_items {
                    warn!(
                        message = "Skipped a perfdata item.",
                        file = %path,
                        line = i + 1,
                        error = %item,
                    );
                }
                out.malformed += parsed.bad_items.len();
                if parsed.not_for_graphite {
                    debug!(message = "Line is not for Graphite (no prefix/postfix or no perfdata).", file = %path, line = i + 1);
                }
                out.metrics.extend(parsed.metrics);
            }
            Err(e) => {
                // Logged only for files that turn out to be perfdata: a
                // foreign file is logged once, as a whole.
                out.malformed += 1;
                if out.errors.len() < MALFORMED_LOGGED {
                    out.errors.push((i + 1, e));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn spool_files_skip_active_hidden_dirs_and_delete_empty_nagios_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in [
            "service-perfdata",
            "host-perfdata",
            "_hidden",
            "service-perfdata.2",
        ] {
            std::fs::write(d.join(name), "x\n").unwrap();
        }
        std::fs::write(d.join("service-perfdata.1"), "x\n").unwrap();
        std::fs::write(d.join("service-perfdata.3"), "").unwrap();
        std::fs::write(d.join("empty"), "").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        // Oldest first: by modification time, then name.
        let old = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(d.join("service-perfdata.2"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let files = Spool::open(d).unwrap().files().unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.name.to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["service-perfdata.2", "service-perfdata.1"]);
        // An empty file Nagios moved here goes, as with Graphios; any other
        // empty file is not ours to delete.
        assert!(!d.join("service-perfdata.3").exists());
        assert!(d.join("empty").exists());
    }

    #[test]
    fn links_fifos_and_foreign_files_are_left_alone_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("service-perfdata.9");
        let line = "DATATYPE::SERVICEPERFDATA\tTIMET::1\tHOSTNAME::h\tSERVICEPERFDATA::a=1\tGRAPHITEPREFIX::p\n";
        std::fs::write(&target, line).unwrap();
        std::os::unix::fs::symlink(&target, d.join("service-perfdata.9")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            d.join("service-perfdata.fifo").as_path(),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        std::fs::write(d.join("notes.txt"), "hello\nworld\n").unwrap();
        std::fs::write(d.join("service-perfdata.5"), line).unwrap();
        let mut spool = Spool::open(d).unwrap();
        let files = spool.files().unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.name.to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let naming = Naming::default();
        let mut perfdata = 0;
        for f in &files {
            if let Some(read) = spool.read(f, &naming).unwrap() {
                assert_eq!(f.name, "service-perfdata.5");
                assert_eq!(read.metrics.len(), 1);
                perfdata += 1;
            }
        }
        assert_eq!(perfdata, 1);
        assert_eq!(spool.left_alone.len(), 3, "{:?}", spool.left_alone);
        // Unchanged, they are not looked at (nor logged) again.
        let again = spool.files().unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].name, "service-perfdata.5");
        assert!(target.exists() && d.join("notes.txt").exists());
    }
}
