//! `cargo xtask setup`: installs everything the project needs on a fresh
//! Debian 12 machine of the lab's kind, and does nothing (quickly) when it is
//! all there already.
//!
//! # What it installs
//! - The Debian packages in [`PACKAGES`] (one `apt-get update`, only if one
//!   is missing), with `qemu-utils` pinned to the version of
//!   `qemu-system-x86` (see [`QEMU_UTILS`]).
//! - The nightly toolchain's `rust-src`, for building the eBPF crate.
//! - `bpf-linker` [`BPF_LINKER_VERSION`], built against Debian's LLVM 22.
//! - `cargo-deb` [`CARGO_DEB_VERSION`], for `cargo xtask package`.
//! - The system group `libvirt`, as Debian's libvirt-daemon-system creates
//!   it on a compute node (the lab runs libvirtd without that package):
//!   the Debian package's postinst adds its user to it, and the package
//!   test checks that.
//! - A tracefs mount at `/sys/kernel/tracing`.
//! - The dashboard's npm packages (d3) in `dashboard/node_modules`, with
//!   `npm ci` from its lock file (Debian's `nodejs` and `npm` if no npm is
//!   there), which the agent's build embeds.
//! - The lab guests' boot image (kernel and initramfs) in `target/lab/`, so
//!   a later `cargo xtask lab up` does not wait for a download.
//!
//! Every step checks first and says what it found; the first failing step
//! stops the run with the command that failed.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::lab::{cmd, image, state_dir};
use crate::package::CARGO_DEB_VERSION;

/// Debian packages the project needs, each with the reason. Adding one is
/// one line.
const PACKAGES: &[(&str, &str)] = &[
    // The lab: libvirtd, virsh, QEMU and the collector's libvirt binding.
    ("libvirt-daemon", "libvirtd and virtlogd for the lab"),
    ("libvirt-daemon-driver-qemu", "libvirtd's QEMU driver"),
    ("libvirt-clients", "virsh"),
    ("libvirt-dev", "the collector links libvirt"),
    ("qemu-system-x86", "the lab guests (TCG)"),
    // The lab guests' image.
    ("busybox-static", "the guests' initramfs userland"),
    ("cpio", "packs the guests' initramfs"),
    (
        "xz-utils",
        "unpacks the guests' kernel to a fast-booting ELF",
    ),
    ("iproute2", "ip, to look at the guests' taps"),
    // bpf-linker, built against Debian's LLVM 22 (rustc's LLVM is 22 too).
    ("llvm-22-dev", "bpf-linker's LLVM"),
    ("libpolly-22-dev", "bpf-linker links LLVM's Polly"),
    ("libzstd-dev", "bpf-linker links zstd"),
    ("zlib1g-dev", "bpf-linker links zlib"),
    ("gcc", "the linker rustc calls"),
    ("libc6-dev", "the C library rustc links against"),
    ("pkg-config", "finds libvirt for the collector's build"),
    // Nagios: the plugin's integration tests run the real daemons.
    (
        "nagios-nrpe-server",
        "nrpe, for the plugin's integration test",
    ),
    (
        "nagios-nrpe-plugin",
        "check_nrpe, for the plugin's integration test",
    ),
    (
        "nagios4-core",
        "a Nagios core scheduling the plugin in its test",
    ),
    // `hyper-stats top`'s test reads its screen from a tmux pane.
    ("tmux", "runs hyper-stats top in its test"),
    // Graphite: the Carbon sink's integration tests run a carbon-cache.
    ("graphite-carbon", "carbon-cache for the Carbon tests"),
    ("python3-whisper", "whisper-fetch reads what Carbon stored"),
    // The dashboard's test and bench: graphite-web behind it, a real browser.
    (
        "graphite-web",
        "graphite-web's render API for the dashboard",
    ),
    (
        "chromium",
        "the browser the dashboard's test and bench drive",
    ),
    (
        "chromium-driver",
        "chromedriver: WebDriver for the dashboard's test",
    ),
    // eBPF tooling and references.
    ("bpftool", "inspects loaded eBPF programs"),
    // The Debian package: built, checked and installed by its test.
    (
        "dpkg-dev",
        "dpkg-shlibdeps, which computes the package's Depends (cargo deb's $auto)",
    ),
    ("lintian", "checks the package"),
    (
        "systemd",
        "systemd-analyze verify and security on the unit (systemd is not PID 1 here)",
    ),
    ("adduser", "the package's postinst creates its user with it"),
    (
        "libbpf-tools",
        "runqlat and friends, the reference to measure against",
    ),
];

/// `qemu-utils` (qemu-img, for the guests' disks) must have the exact
/// version of `qemu-system-x86`: a newer one in the base image conflicts
/// with qemu 7.2, so it is installed as `qemu-utils=<that version>` with
/// downgrades allowed.
const QEMU_UTILS: &str = "qemu-utils";

/// The package whose version `qemu-utils` follows.
const QEMU_SYSTEM: &str = "qemu-system-x86";

/// The bpf-linker release that builds against LLVM 22 with the toolchains
/// here (see the lab facts).
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Where Debian's LLVM 22 lives; bpf-linker's build picks LLVM 14 without it.
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// apt waits this long for another apt/dpkg to release its lock.
const DPKG_LOCK_TIMEOUT_S: &str = "300";

pub fn run() -> Result<()> {
    let since = Instant::now();
    cmd::require_root("setup")?;
    debian_packages()?;
    nightly_rust_src()?;
    bpf_linker()?;
    cargo_deb()?;
    libvirt_group()?;
    tracefs()?;
    dashboard_npm()?;
    let image = image::ensure(&state_dir())?;
    println!(
        "setup: lab guest image ready (kernel {})",
        image.kernel_release
    );
    println!("setup: done in {:.1} s", since.elapsed().as_secs_f64());
    Ok(())
}

/// The installed version of each package in `names`, if installed.
fn installed_versions(names: &[&str]) -> Result<Vec<Option<String>>> {
    // dpkg-query exits 1 when a package is unknown, but still prints the
    // others, so its status is ignored and its output read.
    let out = Command::new("dpkg-query")
        .arg("--show")
        .arg("--showformat=${Package} ${db:Status-Abbrev} ${Version}\n")
        .args(names)
        .output()
        .context("failed to run dpkg-query: is this a Debian machine?")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(names
        .iter()
        .map(|name| {
            text.lines().find_map(|line| {
                let mut fields = line.split_whitespace();
                let package = fields.next()?.split(':').next()?;
                let status = fields.next()?;
                let version = fields.next()?;
                (package == *name && status == "ii").then(|| version.to_string())
            })
        })
        .collect())
}

/// An `apt-get` command that never prompts and waits for the dpkg lock.
fn apt_get() -> Command {
    let mut command = Command::new("apt-get");
    command
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-q", "-y", "-o"])
        .arg(format!("DPkg::Lock::Timeout={DPKG_LOCK_TIMEOUT_S}"));
    command
}

/// The version apt would install for `package`.
fn candidate_version(package: &str) -> Result<String> {
    let policy = cmd::capture(Command::new("apt-cache").args(["policy", package]))?;
    policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|v| *v != "(none)")
        .map(str::to_string)
        .with_context(|| {
            format!("apt has no candidate version of {package}\ncheck the apt sources")
        })
}

/// Installs the missing packages of [`PACKAGES`] and a matching `qemu-utils`.
fn debian_packages() -> Result<()> {
    let mut names: Vec<&str> = PACKAGES.iter().map(|(name, _)| *name).collect();
    names.push(QEMU_UTILS);
    let versions = installed_versions(&names)?;
    let mut missing: Vec<String> = names
        .iter()
        .zip(&versions)
        .filter(|(name, version)| **name != QEMU_UTILS && version.is_none())
        .map(|(name, _)| name.to_string())
        .collect();
    let qemu_system = versions[names.iter().position(|n| *n == QEMU_SYSTEM).unwrap()].clone();
    let qemu_utils = versions.last().cloned().flatten();
    let qemu_utils_ok = qemu_system.is_some() && qemu_utils == qemu_system;
    if missing.is_empty() && qemu_utils_ok {
        println!("setup: all {} Debian packages installed", names.len());
        return Ok(());
    }

    println!(
        "setup: installing {}{}",
        missing.join(" "),
        if qemu_utils_ok {
            ""
        } else {
            " qemu-utils (pinned)"
        }
    );
    cmd::run_shown(apt_get().arg("update"))?;
    let mut allow_downgrades = false;
    if !qemu_utils_ok {
        let version = match qemu_system {
            Some(v) => v,
            None => candidate_version(QEMU_SYSTEM)?,
        };
        missing.push(format!("{QEMU_UTILS}={version}"));
        allow_downgrades = true;
    }
    let mut install = apt_get();
    install.args(["install", "--no-install-recommends"]);
    if allow_downgrades {
        install.arg("--allow-downgrades");
    }
    cmd::run_shown(install.args(&missing))?;

    let versions = installed_versions(&names)?;
    let still: Vec<&str> = names
        .iter()
        .zip(&versions)
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| *n)
        .collect();
    if !still.is_empty() {
        bail!(
            "apt-get install finished but these are not installed: {}",
            still.join(" ")
        );
    }
    // The version pin is the point of the quirk: check that it took.
    cmd::capture(Command::new("qemu-img").arg("--version"))
        .context("qemu-img does not run after installing qemu-utils")?;
    Ok(())
}

/// Adds `rust-src` to the nightly toolchain (installing nightly if missing).
fn nightly_rust_src() -> Result<()> {
    if cmd::find_program("rustup").is_none() {
        bail!(
            "rustup is not installed\ninstall Rust with rustup first, then run `cargo xtask setup` again"
        );
    }
    let toolchains = cmd::capture(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        println!("setup: installing the nightly toolchain with rust-src");
        return cmd::run_shown(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]));
    }
    // Adding a component to the installed nightly does not update it.
    let installed = cmd::capture(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))?;
    if installed.lines().any(|l| l.trim() == "rust-src") {
        println!("setup: nightly rust-src installed");
        return Ok(());
    }
    println!("setup: adding rust-src to the nightly toolchain");
    cmd::run_shown(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

/// Installs bpf-linker [`BPF_LINKER_VERSION`] against LLVM 22 unless that
/// version is already installed.
fn bpf_linker() -> Result<()> {
    let current = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(version) = &current
        && version.split_whitespace().any(|w| w == BPF_LINKER_VERSION)
    {
        println!("setup: {version} installed");
        return Ok(());
    }
    println!(
        "setup: installing bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (found {}; takes about 90 s)",
        current.as_deref().unwrap_or("none")
    );
    let path = std::env::var("PATH").unwrap_or_default();
    cmd::run_shown(
        Command::new("cargo")
            .args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}")])
            .args([
                "--locked",
                "--force",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .env("PATH", format!("{LLVM_PREFIX}/bin:{path}"))
            // Outside the workspace, so its config and target dir stay out.
            .current_dir(std::env::temp_dir()),
    )
}

/// Installs cargo-deb [`CARGO_DEB_VERSION`] unless that version is
/// installed.
fn cargo_deb() -> Result<()> {
    let current = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(version) = &current
        && version.split_whitespace().any(|w| w == CARGO_DEB_VERSION)
    {
        println!("setup: {version} installed");
        return Ok(());
    }
    println!(
        "setup: installing cargo-deb {CARGO_DEB_VERSION} (found {}; takes about a minute)",
        current.as_deref().unwrap_or("none")
    );
    cmd::run_shown(
        Command::new("cargo")
            .args(["install", &format!("cargo-deb@{CARGO_DEB_VERSION}")])
            .args(["--locked", "--force"])
            // Outside the workspace, so its config and target dir stay out.
            .current_dir(std::env::temp_dir()),
    )
}

/// Creates the system group `libvirt` if it is missing.
fn libvirt_group() -> Result<()> {
    let found = Command::new("getent")
        .args(["group", "libvirt"])
        .output()
        .context("failed to run getent")?
        .status
        .success();
    if found {
        println!("setup: group libvirt exists");
        return Ok(());
    }
    cmd::run_shown(Command::new("addgroup").args(["--system", "--quiet", "libvirt"]))?;
    println!("setup: created the system group libvirt");
    Ok(())
}

/// Mounts tracefs at `/sys/kernel/tracing` if it is not mounted.
fn tracefs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("failed to read /proc/mounts")?;
    let mounted = mounts.lines().any(|l| {
        let mut fields = l.split_whitespace();
        let (_, target, kind) = (fields.next(), fields.next(), fields.next());
        target == Some("/sys/kernel/tracing") && kind == Some("tracefs")
    });
    if mounted {
        println!("setup: tracefs mounted at /sys/kernel/tracing");
        return Ok(());
    }
    cmd::capture(Command::new("mount").args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"]))
        .context("failed to mount tracefs; the eBPF probes read tracepoint formats from it")?;
    println!("setup: mounted tracefs at /sys/kernel/tracing");
    Ok(())
}

/// Installs the dashboard's npm packages with `npm ci` (exactly what
/// `dashboard/package-lock.json` pins) unless the locked d3 is there.
fn dashboard_npm() -> Result<()> {
    let dir = crate::util::workspace_root().join("dashboard");
    let version_of = |path: std::path::PathBuf, key: &str| -> Option<String> {
        let text = std::fs::read_to_string(path).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        let v = if key.is_empty() {
            &json["version"]
        } else {
            &json["packages"][key]["version"]
        };
        v.as_str().map(str::to_owned)
    };
    let locked = version_of(dir.join("package-lock.json"), "node_modules/d3")
        .context("dashboard/package-lock.json names no d3 version")?;
    let installed = version_of(dir.join("node_modules/d3/package.json"), "");
    if installed.as_deref() == Some(locked.as_str())
        && dir.join("node_modules/d3/dist/d3.min.js").exists()
    {
        println!("setup: dashboard npm packages installed (d3 {locked})");
        return Ok(());
    }
    if cmd::find_program("npm").is_none() {
        println!("setup: installing nodejs npm");
        cmd::run_shown(apt_get().args(["install", "--no-install-recommends", "nodejs", "npm"]))?;
    }
    println!("setup: npm ci in dashboard/ (d3 {locked})");
    cmd::run_shown(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir),
    )
    .context("npm ci failed in dashboard/; the agent's build embeds d3 from there")
}
