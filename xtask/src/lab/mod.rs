//! `cargo xtask lab up|down|status|kernels`: a lab of real libvirt/QEMU guests on
//! this host, for testing the collector against live statistics.
//!
//! # What it runs
//! A hand-started `virtlogd` and `libvirtd` (this host has no systemd) and N
//! persistent TCG guests `hs-lab-1` .. `hs-lab-N` that boot a Debian kernel
//! with the lab's busybox initramfs. Each guest's init (`lab/guest/init`)
//! drives a steady CPU, disk and IPv6 link-local network load, so every
//! libvirt stats group (cpu, vcpu, balloon, block, net, perf) moves.
//!
//! # State
//! Everything the lab makes lives in `target/lab/` of the workspace: the
//! pid records of the daemons it started (`run/`), their logs (`log/`), the
//! cached boot image (`image/`), and per guest a disk, a console log and the
//! domain XML. `down` removes the guests and their files and stops only the
//! daemons recorded in `run/`; the image cache stays.
//!
//! # Failures
//! Missing programs point at `cargo xtask setup`; daemon and guest failures
//! point at the log or console file that holds the reason.
//!
//! The submodules: `cmd` (running programs, `virsh`), `host` (directories,
//! user, `qemu.conf`), `daemons`, `image` (kernel and initramfs), `guests`,
//! and `kernels` (`lab kernels`: the selftest on other kernels under QEMU,
//! state in `kernels/`).

pub(crate) mod cmd;
mod daemons;
mod guests;
mod host;
pub(crate) mod image;
mod kernels;

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use guests::Guest;

/// The most guests `lab up` runs: 8 TCG guests already keep the 2 host
/// cores of a lab machine well busy.
const MAX_GUESTS: u32 = 8;

/// Programs `lab up` needs, with the Debian package that ships each.
const NEEDED_PROGRAMS: &[(&str, &str)] = &[
    ("virsh", "libvirt-clients"),
    ("virtlogd", "libvirt-daemon"),
    ("libvirtd", "libvirt-daemon"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("qemu-img", "qemu-utils"),
    ("busybox", "busybox-static"),
    ("cpio", "cpio"),
    ("xz", "xz-utils"),
    ("ip", "iproute2"),
];

#[derive(Subcommand)]
pub enum Action {
    /// Start libvirtd and N guests; wait until every guest's init runs.
    Up {
        /// Number of guests (1-8). Lab guests above N are removed.
        #[arg(long, default_value_t = 2)]
        guests: u32,
    },
    /// Remove the guests and stop the daemons the lab started.
    Down,
    /// Show the daemons and guests.
    Status,
    /// Kill the libvirtd the lab started with SIGKILL, as if it crashed
    /// (for tests); the guests keep running and `lab up` starts it again.
    CrashLibvirtd,
    /// Run `hyper-stats selftest` on the host's kernel and on each kernel in
    /// `lab/kernels.txt`, booted directly under QEMU (no libvirt, no lab
    /// guests); print one row per kernel and fail if any kernel fails.
    Kernels,
}

/// The lab's state directory, `target/lab` in the workspace.
pub(crate) fn state_dir() -> PathBuf {
    crate::util::workspace_root().join("target").join("lab")
}

/// Whether a lab is up: libvirtd runs and at least one lab guest is
/// running. `cargo xtask test` uses it to leave a lab it did not start.
pub fn is_up() -> Result<bool> {
    if daemons::running_pid("libvirtd").is_none() {
        return Ok(false);
    }
    for name in guests::defined()? {
        if guests::state(&name)? == "running" {
            return Ok(true);
        }
    }
    Ok(false)
}

pub fn run(action: Action) -> Result<()> {
    match action {
        Action::Up { guests } => {
            let _lock = lock()?;
            up(guests)
        }
        Action::Down => {
            let _lock = lock()?;
            down()
        }
        Action::Status => status(),
        Action::CrashLibvirtd => {
            let _lock = lock()?;
            let pid = daemons::crash_libvirtd(&state_dir())?;
            println!("lab: killed libvirtd (pid {pid}) with SIGKILL");
            Ok(())
        }
        Action::Kernels => {
            let _lock = lock()?;
            kernels::run()
        }
    }
}

/// Takes the lab's lock (`<state>/lock`), waiting for another `lab up` or
/// `lab down` on this checkout to finish; released when the file is dropped.
fn lock() -> Result<fs::File> {
    let state = state_dir();
    fs::create_dir_all(&state).with_context(|| format!("failed to create {}", state.display()))?;
    let path = state.join("lock");
    let file =
        fs::File::create(&path).with_context(|| format!("failed to create {}", path.display()))?;
    if file.try_lock().is_err() {
        println!(
            "lab: waiting for another `cargo xtask lab` to finish ({})",
            path.display()
        );
        file.lock()
            .with_context(|| format!("failed to lock {}", path.display()))?;
    }
    Ok(file)
}

/// Brings the lab to exactly `count` running guests whose init runs.
fn up(count: u32) -> Result<()> {
    if !(1..=MAX_GUESTS).contains(&count) {
        bail!("invalid --guests {count}: the lab runs 1 to {MAX_GUESTS} guests");
    }
    let since = Instant::now();
    cmd::require_root("lab up")?;
    cmd::require_programs(NEEDED_PROGRAMS)?;
    let state = state_dir();
    fs::create_dir_all(&state).with_context(|| format!("failed to create {}", state.display()))?;

    let prepared = host::prepare()?;
    // The image first: on a fresh checkout it downloads a kernel, and a
    // failure there should not leave daemons behind for nothing.
    let image = image::ensure(&state)?;
    daemons::ensure_running(&state)?;
    if prepared.qemu_conf_changed
        && daemons::status(&state)
            .iter()
            .any(|d| d.pid.is_some() && !d.started_by_lab)
    {
        println!(
            "lab: warning: qemu.conf changed while a libvirtd the lab did not start was running; restart it if guests fail to start"
        );
    }

    let wanted: Vec<Guest> = (1..=count).map(Guest::new).collect();
    let extra: Vec<String> = guests::defined()?
        .into_iter()
        .filter(|name| !wanted.iter().any(|g| &g.name == name))
        .collect();
    guests::remove(&state, &extra)?;
    let started = guests::ensure(&state, &wanted, &image)?;
    let names: Vec<String> = wanted.iter().map(|g| g.name.clone()).collect();
    guests::wait_for_init(&state, &names, &started, since)?;
    println!(
        "lab: up with {count} guest{} (kernel {}) in {:.1} s; `cargo xtask lab status` shows them",
        if count == 1 { "" } else { "s" },
        image.kernel_release,
        since.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Removes every lab guest and its files, then stops the daemons the lab
/// started.
fn down() -> Result<()> {
    cmd::require_root("lab down")?;
    let state = state_dir();
    // Lab guests stay defined when libvirtd stops (say, the machine's
    // processes were ended): start it, recorded as the lab's, to remove them.
    if daemons::running_pid("libvirtd").is_none() && persistent_definitions_exist() {
        println!(
            "lab: lab guests are still defined in {LIBVIRT_QEMU_CONFIG_DIR}; starting libvirtd to remove them"
        );
        host::prepare()?;
        daemons::ensure_running(&state)?;
    }
    if daemons::running_pid("libvirtd").is_some() {
        guests::remove(&state, &guests::defined()?)?;
    } else {
        println!("lab: libvirtd is not running and no lab guest is defined");
    }
    // Files of guests libvirt no longer knows (e.g. after a failed `up`).
    for dir in ["disks", "console", "domains"] {
        let Ok(entries) = fs::read_dir(state.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(name) = file.split('.').next()
                && name.starts_with(guests::NAME_PREFIX)
            {
                guests::remove_files(&state, name)?;
            }
        }
    }
    daemons::stop_started(&state)?;
    println!("lab: down");
    Ok(())
}

/// Where libvirtd keeps persistent QEMU domain definitions.
const LIBVIRT_QEMU_CONFIG_DIR: &str = "/etc/libvirt/qemu";

/// Whether libvirt has a persistent lab guest definition on disk.
fn persistent_definitions_exist() -> bool {
    fs::read_dir(LIBVIRT_QEMU_CONFIG_DIR).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(guests::NAME_PREFIX) && n.ends_with(".xml"))
        })
    })
}

/// Prints the daemons and the guests.
fn status() -> Result<()> {
    let state = state_dir();
    println!("daemons:");
    for daemon in daemons::status(&state) {
        match daemon.pid {
            Some(pid) => println!(
                "  {:<9} pid {pid:<7} {}",
                daemon.program,
                if daemon.started_by_lab {
                    "started by the lab"
                } else {
                    "not started by the lab"
                }
            ),
            None => println!("  {:<9} not running", daemon.program),
        }
    }
    if daemons::running_pid("libvirtd").is_none() {
        println!("guests: unknown (libvirtd is not running; `cargo xtask lab up` starts it)");
        return Ok(());
    }
    let names = guests::defined()?;
    if names.is_empty() {
        println!("guests: none (`cargo xtask lab up` makes them)");
        return Ok(());
    }
    println!("guests ({}):", cmd::LIBVIRT_URI);
    for name in names {
        let console = guests::GuestFiles::new(&state, &name).console;
        let state = guests::state(&name)?;
        let vcpus = guests::vcpus(&name)?;
        let init = if guests::marker_seen(&console) {
            "init running"
        } else {
            "no init marker"
        };
        let last = guests::last_console_line(&console).unwrap_or_default();
        println!(
            "  {name:<9} {state:<8} {vcpus} vcpu{}  {init:<14}  last: {last}",
            if vcpus == 1 { " " } else { "s" }
        );
    }
    Ok(())
}
