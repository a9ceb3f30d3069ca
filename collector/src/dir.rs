//! The directories the agent reads and writes (the Carbon spool, the
//! Nagios perfdata spool): listing them with errors that name the
//! directory and what it is for.

use std::fs::{self, DirEntry};
use std::path::Path;

use anyhow::{Context, Result};

/// The entries of `dir`, the `what` directory (e.g. "Carbon spool"), in
/// no particular order.
pub(crate) fn entries(dir: &Path, what: &str) -> Result<Vec<DirEntry>> {
    fs::read_dir(dir)
        .with_context(|| format!("failed to read the {what} directory {}", dir.display()))?
        .map(|entry| entry.with_context(|| format!("failed to read {}", dir.display())))
        .collect()
}
