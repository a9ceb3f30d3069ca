//! Builds the eBPF programs (`collector-ebpf`) for the agent to embed.
//!
//! There is one build path: this script, through aya-build, compiles the
//! `hyper-stats-ebpf` binary for `bpfel-unknown-none` with the nightly
//! toolchain and bpf-linker, and leaves the object in `OUT_DIR`. The agent
//! embeds it when this script says so with `--cfg hyper_stats_ebpf_object`.
//!
//! `HYPER_STATS_EBPF` picks what happens when the toolchain is missing:
//!
//! - unset or `auto`: skip with a cargo warning, so that `cargo build`,
//!   `cargo test` and `cargo clippy` work on any machine; the agent then
//!   runs with its probes off and says why (the reason is passed to it in
//!   `HYPER_STATS_EBPF_SKIPPED`).
//! - `require`: fail the build, naming what is missing and how to install
//!   it. `cargo xtask build-ebpf` sets this.
//! - `skip`: never build the programs, even if the toolchain is there.
//!
//! When the toolchain is there, a failure to compile the programs always
//! fails the build: a broken probe must not hide behind a warning.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The variable that picks the mode (see the module doc).
const MODE_VAR: &str = "HYPER_STATS_EBPF";
/// The package holding the programs, and the name of its binary in `OUT_DIR`.
const EBPF_PACKAGE: &str = "hyper-stats-ebpf";
/// The rustup toolchain that builds the programs: `-Z build-std=core` needs
/// nightly (or `RUSTC_BOOTSTRAP=1`, which aya-build also honours).
const TOOLCHAIN: &str = "nightly";
/// The bpf-linker release known to work with this aya and LLVM 22.
const LINKER_VERSION: &str = "0.13.";
/// What a developer runs to get the toolchain and the programs.
const FIX: &str = "cargo xtask setup && cargo xtask build-ebpf";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Auto,
    Require,
    Skip,
}

fn main() -> ExitCode {
    embed_dashboard();
    println!("cargo::rustc-check-cfg=cfg(hyper_stats_ebpf_object)");
    println!("cargo::rerun-if-env-changed={MODE_VAR}");
    println!("cargo::rerun-if-changed=build.rs");

    let mode = match env::var(MODE_VAR).as_deref() {
        Err(_) | Ok("") | Ok("auto") => Mode::Auto,
        Ok("require") => Mode::Require,
        Ok("skip") => Mode::Skip,
        Ok(other) => {
            eprintln!("invalid {MODE_VAR}={other:?}: expected auto, require or skip");
            return ExitCode::FAILURE;
        }
    };

    if mode == Mode::Skip {
        skipped(&format!("{MODE_VAR}=skip was set at build time"));
        return ExitCode::SUCCESS;
    }

    if let Err(missing) = check_toolchain() {
        if mode == Mode::Require {
            eprintln!(
                "cannot build the eBPF programs: {missing}\n\
                 install the toolchain with: cargo xtask setup"
            );
            return ExitCode::FAILURE;
        }
        println!(
            "cargo::warning=eBPF programs not built ({missing}); \
             the agent will run with its probes off. To build them: {FIX}"
        );
        skipped(&missing);
        return ExitCode::SUCCESS;
    }

    let root_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../collector-ebpf");
    let root_dir = root_dir.to_str().expect("the workspace path is UTF-8");
    let package = aya_build::Package {
        name: EBPF_PACKAGE,
        root_dir,
        ..Default::default()
    };
    if let Err(err) = aya_build::build_ebpf([package], aya_build::Toolchain::Custom(TOOLCHAIN)) {
        eprintln!("failed to build the eBPF programs ({EBPF_PACKAGE}): {err:#}");
        return ExitCode::FAILURE;
    }
    println!("cargo::rustc-cfg=hyper_stats_ebpf_object");
    ExitCode::SUCCESS
}

/// Tells the agent why it has no object, and asks cargo to look again once
/// the toolchain may have changed (a new file in cargo's bin directory, a
/// component added to the nightly toolchain).
fn skipped(reason: &str) {
    println!("cargo::rustc-env=HYPER_STATS_EBPF_SKIPPED={reason}");
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")));
    let mut watched: Vec<PathBuf> = cargo_home
        .into_iter()
        .map(|home| home.join("bin"))
        .collect();
    if let Ok(sysroot) = nightly_sysroot() {
        watched.push(sysroot.join("lib/rustlib/components"));
    }
    for path in watched.iter().filter(|path| path.exists()) {
        println!("cargo::rerun-if-changed={}", path.display());
    }
}

/// Checks for what aya-build needs: bpf-linker on `PATH`, and the nightly
/// toolchain with rust-src (for `-Z build-std=core`). Returns what is
/// missing, in one line.
fn check_toolchain() -> Result<(), String> {
    let linker = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map_err(|err| format!("bpf-linker is not on PATH: {err}"))?;
    let version = String::from_utf8_lossy(&linker.stdout);
    let version = version.trim();
    if !linker.status.success() {
        return Err(format!("`bpf-linker --version` failed: {}", linker.status));
    }
    if !version.starts_with(&format!("bpf-linker {LINKER_VERSION}")) {
        println!(
            "cargo::warning=found {version:?}, this project is tested with bpf-linker {LINKER_VERSION}x"
        );
    }
    if let Ok(path) = which("bpf-linker") {
        println!("cargo::rerun-if-changed={}", path.display());
    }

    let sysroot = nightly_sysroot()?;
    let core = sysroot.join("lib/rustlib/src/rust/library/core/Cargo.toml");
    if !core.exists() {
        return Err(format!(
            "rust-src is not installed for the {TOOLCHAIN} toolchain"
        ));
    }
    Ok(())
}

/// The sysroot of the nightly toolchain, through rustup.
fn nightly_sysroot() -> Result<PathBuf, String> {
    let output = Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--print", "sysroot"])
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .output()
        .map_err(|err| format!("rustup is not on PATH: {err}"))?;
    if !output.status.success() {
        return Err(format!("the {TOOLCHAIN} toolchain is not installed"));
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim(),
    ))
}

/// The first `name` on `PATH`.
fn which(name: &str) -> Result<PathBuf, ()> {
    let path = env::var_os("PATH").ok_or(())?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or(())
}

/// The dashboard's files, served as `/assets/NAME` (and `index.html` at
/// `/`): each name, MIME type and path under the repository root.
const DASHBOARD_FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        "dashboard/index.html",
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        "dashboard/app.js",
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        "dashboard/style.css",
    ),
    (
        "d3.min.js",
        "text/javascript; charset=utf-8",
        "dashboard/node_modules/d3/dist/d3.min.js",
    ),
];

/// What the page runs instead of d3 when `npm ci` had not run before the
/// build: it says so on the page rather than failing the build, so that a
/// plain `cargo build` works on any machine.
const D3_MISSING: &str = "document.addEventListener('DOMContentLoaded', () => { \
    document.body.textContent = 'hyper-stats was built without d3: run cargo xtask setup \
    (npm ci in dashboard/) and rebuild.'; });";

/// Writes `$OUT_DIR/dashboard_assets.rs`, the table of embedded files
/// `src/dashboard/assets.rs` includes.
fn embed_dashboard() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest
        .parent()
        .expect("the collector is in the workspace");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets it"));
    let mut table = String::from("pub(crate) static ASSETS: &[Asset] = &[\n");
    for (name, mime, rel) in DASHBOARD_FILES {
        let path = root.join(rel);
        println!("cargo::rerun-if-changed={}", path.display());
        let body = if path.exists() {
            format!("include_bytes!({:?})", path.display().to_string())
        } else if *name == "d3.min.js" {
            println!(
                "cargo::warning=dashboard: {} is missing, the dashboard will say so; run `cargo xtask setup` (npm ci in dashboard/)",
                path.display()
            );
            format!("{:?}.as_bytes()", D3_MISSING)
        } else {
            panic!(
                "dashboard asset {} is missing from the checkout",
                path.display()
            );
        };
        table.push_str(&format!(
            "    Asset {{ name: {name:?}, content_type: {mime:?}, body: {body} }},\n"
        ));
    }
    table.push_str("];\n");
    std::fs::write(out.join("dashboard_assets.rs"), table).expect("OUT_DIR is writable");
}
