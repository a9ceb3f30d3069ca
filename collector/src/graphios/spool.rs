//! The spool directory Nagios moves perfdata files into: which files to
//! process, and reading one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use std::time::SystemTime;

use tracing::{debug, warn};

use super::args::Naming;
use super::line::{Metric, parse_line};

/// The files Nagios is still appending to: never touched.
const ACTIVE_FILES: [&str; 2] = ["host-perfdata", "service-perfdata"];

/// The perfdata spool files to process now, oldest first: everything but
/// the files Nagios appends to, names starting with `_`, directories and
/// empty files (which are deleted, as Graphios does).
pub(crate) fn spool_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in crate::dir::entries(dir, "perfdata spool")? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if ACTIVE_FILES.contains(&name.as_str()) || name.starts_with('_') {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        if meta.len() == 0 {
            let _ = std::fs::remove_file(entry.path());
            continue;
        }
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        files.push((mtime, name, entry.path()));
    }
    files.sort();
    Ok(files.into_iter().map(|(_, _, p)| p).collect())
}

/// What reading one spool file gave.
#[derive(Debug, Default)]
pub(crate) struct FileResult {
    /// All its points.
    pub(crate) metrics: Vec<Metric>,
    /// Malformed lines and perfdata items (logged already).
    pub(crate) malformed: usize,
}

/// Reads one spool file, logging what is malformed with file and line.
pub(crate) fn read_file(path: &Path, naming: &Naming) -> Result<FileResult> {
    let bytes =
        std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let mut out = FileResult::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line, naming) {
            Ok(parsed) => {
                for item in &parsed.bad_items {
                    warn!(
                        message = "Skipped a perfdata item.",
                        file = %path.display(),
                        line = i + 1,
                        error = %item,
                    );
                }
                out.malformed += parsed.bad_items.len();
                if parsed.not_for_graphite {
                    debug!(message = "Line is not for Graphite (no prefix/postfix or no perfdata).", file = %path.display(), line = i + 1);
                }
                out.metrics.extend(parsed.metrics);
            }
            Err(e) => {
                warn!(
                    message = "Skipped a malformed perfdata line.",
                    file = %path.display(),
                    line = i + 1,
                    error = %e,
                );
                out.malformed += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn spool_files_skip_active_hidden_dirs_and_delete_empty() {
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
        let files = spool_files(d).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["service-perfdata.2", "service-perfdata.1"]);
        assert!(!d.join("empty").exists());
    }
}
