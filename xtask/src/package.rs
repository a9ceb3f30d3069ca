//! `cargo xtask package`: the Debian package `hyper-stats` (agent, systemd
//! unit, config, Nagios plugin, man pages, examples), with cargo-deb.
//!
//! # Steps
//! 1. Build `hyper-stats` (eBPF object required, as every build of this
//!    task runner) and `check_hyper_stats` in release.
//! 2. Generate the man pages from the clap definitions (each crate's
//!    `examples/manpage.rs`) into `target/release/man/`, compressed as
//!    Debian wants them (`gzip -9n`: no name or time stamp, so the same
//!    source gives the same bytes).
//! 3. `cargo deb --no-build`: the package's contents and metadata are in
//!    `collector/Cargo.toml` (`[package.metadata.deb]`), its unit and
//!    maintainer scripts in `collector/debian/`.
//!
//! The `.deb` goes to `target/debian/`; [`build`] returns its path, which
//! `cargo xtask test` hands to `collector/tests/package.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::build_ebpf::cargo_require;
use crate::util::{run, workspace_root};

/// The cargo-deb release `cargo xtask setup` installs and this task
/// expects (its `[package.metadata.deb]` keys and `--no-build` behaviour
/// are what `collector/Cargo.toml` is written for).
pub const CARGO_DEB_VERSION: &str = "3.8.0";

/// Builds the package and prints where it is and how big.
pub fn run_package() -> Result<()> {
    let deb = build()?;
    let size = std::fs::metadata(&deb)
        .with_context(|| format!("failed to look at {}", deb.display()))?
        .len();
    println!(
        "package: {} ({:.1} MiB)",
        deb.display(),
        size as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}

/// The workspace's target directory.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Builds the binaries, the man pages and the package; the `.deb`'s path.
pub fn build() -> Result<PathBuf> {
    require_cargo_deb()?;
    run(&mut cargo_require(&[
        "build",
        "--release",
        "--package",
        "hyper-stats",
        "--package",
        "check-hyper-stats",
        "--bins",
    ]))?;
    man_pages(&target_dir().join("release/man"))?;

    let out = target_dir().join("debian");
    let output = cargo_require(&[
        "deb",
        "--no-build",
        "--strip",
        "--package",
        "hyper-stats",
        "--output",
    ])
    .arg(&out)
    .output()
    .context("failed to run cargo deb")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "cargo deb failed with {}:\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // cargo deb prints the package's path as its last line.
    let deb = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .with_context(|| format!("cargo deb did not say where the package is:\n{stdout}"))?;
    if !deb.is_file() {
        bail!("cargo deb named {} but it is not there", deb.display());
    }
    Ok(deb)
}

/// Generates `hyper-stats*.1.gz` and `check_hyper_stats.1.gz` into `dir`
/// (emptied first, so a page of a removed command does not linger).
fn man_pages(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("failed to empty {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    for package in ["hyper-stats", "check-hyper-stats"] {
        run(cargo_require(&[
            "run",
            "--quiet",
            "--release",
            "--package",
            package,
            "--example",
            "manpage",
            "--",
        ])
        .arg(dir))?;
    }
    let mut pages = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "1") {
            pages.push(path);
        }
    }
    if pages.len() < 2 {
        bail!("expected man pages in {}, found {pages:?}", dir.display());
    }
    run(Command::new("gzip").args(["-9", "-n"]).args(&pages))
}

/// Fails unless `cargo deb` is [`CARGO_DEB_VERSION`].
fn require_cargo_deb() -> Result<()> {
    let out = Command::new(env!("CARGO"))
        .args(["deb", "--version"])
        .output();
    let version = out
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match version {
        Some(v) if v.split_whitespace().any(|w| w == CARGO_DEB_VERSION) => Ok(()),
        found => bail!(
            "cargo-deb {CARGO_DEB_VERSION} is needed, found {}\nrun `cargo xtask setup`",
            found.as_deref().unwrap_or("none")
        ),
    }
}
