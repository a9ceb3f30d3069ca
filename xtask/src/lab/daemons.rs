//! Starts, finds and stops the lab's daemons (`virtlogd`, then `libvirtd`)
//! by hand, since this machine has no systemd.
//!
//! A daemon that is already running (whoever started it) is used as it is and
//! never stopped by the lab. A daemon the lab starts is recorded in
//! `<state>/run/<daemon>.pid`; `lab down` stops only a daemon whose recorded
//! pid still runs that program, by that pid. Daemon logs (warnings and
//! errors) go to `<state>/log/<daemon>.log`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::cmd;

/// The daemons, in start order: libvirtd sends QEMU's stderr to virtlogd and
/// does not spawn it itself when it runs as root.
pub const DAEMONS: &[Daemon] = &[
    Daemon {
        program: "virtlogd",
        package: "libvirt-daemon",
    },
    Daemon {
        program: "libvirtd",
        package: "libvirt-daemon",
    },
];

/// How long a daemon may take to show up in `/proc` or to answer after
/// `-d` returned; libvirtd probes QEMU's capabilities on its first start,
/// which takes a few seconds under TCG.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a daemon may take to exit after SIGTERM (libvirtd waits for its
/// workers and closes its QEMU monitors).
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// One daemon the lab needs.
pub struct Daemon {
    /// The program name, as found on `PATH` and in `/proc/PID/comm`.
    pub program: &'static str,
    /// The Debian package that ships it, for the "not installed" hint.
    pub package: &'static str,
}

/// Who a running daemon belongs to, for `lab status`.
pub struct DaemonStatus {
    /// The daemon's program name.
    pub program: &'static str,
    /// Its pid, if one runs.
    pub pid: Option<u32>,
    /// Whether the lab started that very process.
    pub started_by_lab: bool,
}

/// Where the lab records the pid of a daemon it started.
fn record_path(state: &Path, program: &str) -> PathBuf {
    state.join("run").join(format!("{program}.pid"))
}

/// The pid the lab recorded for `program`, if any.
fn recorded_pid(state: &Path, program: &str) -> Option<u32> {
    fs::read_to_string(record_path(state, program))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid` is a live (not zombie) process running `program`.
fn pid_runs(pid: u32, program: &str) -> bool {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim_end() != program {
        return false;
    }
    // The state is the field after the parenthesised command name.
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(") ")
        .next()
        .and_then(|rest| rest.chars().next());
    !matches!(state, Some('Z') | Some('X') | None)
}

/// The lowest pid running `program`, found by scanning `/proc` (so a daemon
/// started without its default pid file is found too).
pub fn running_pid(program: &str) -> Option<u32> {
    let entries = fs::read_dir("/proc").ok()?;
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid_runs(pid, program))
        .min()
}

/// Starts every daemon that is not running yet, records the ones it started,
/// and waits until libvirtd answers on [`cmd::LIBVIRT_URI`].
pub fn ensure_running(state: &Path) -> Result<()> {
    for daemon in DAEMONS {
        if let Some(pid) = running_pid(daemon.program) {
            let owner = if recorded_pid(state, daemon.program) == Some(pid) {
                "started by the lab"
            } else {
                "not started by the lab; the lab will not stop it"
            };
            println!(
                "lab: {} already running (pid {pid}, {owner})",
                daemon.program
            );
            continue;
        }
        let pid = start(state, daemon)?;
        println!("lab: started {} (pid {pid})", daemon.program);
    }
    wait_for_libvirt(state)
}

/// Starts one daemon with `-d` and returns the pid of the daemonized process.
fn start(state: &Path, daemon: &Daemon) -> Result<u32> {
    let program = daemon.program;
    if cmd::find_program(program).is_none() {
        bail!(
            "{program} is not installed (Debian package {})\nrun `cargo xtask setup`",
            daemon.package
        );
    }
    let log_dir = state.join("log");
    fs::create_dir_all(&log_dir)
        .with_context(|| format!("failed to create {}", log_dir.display()))?;
    fs::create_dir_all(state.join("run"))
        .with_context(|| format!("failed to create {}", state.join("run").display()))?;
    let log = log_dir.join(format!("{program}.log"));
    // Level 3 keeps warnings and errors: enough to see why a guest failed.
    let outputs = format!("3:file:{}", log.display());
    let mut command = Command::new(program);
    command
        .arg("-d")
        .env("LIBVIRT_LOG_OUTPUTS", outputs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // `-d` forks the daemon and returns once it has initialised (or failed).
    let status = command
        .status()
        .with_context(|| format!("failed to start `{}`", cmd::show(&command)))?;
    if !status.success() {
        bail!(
            "`{}` failed with {status}\nsee {} for the reason",
            cmd::show(&command),
            log.display()
        );
    }
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(pid) = running_pid(program) {
            let record = record_path(state, program);
            fs::write(&record, format!("{pid}\n"))
                .with_context(|| format!("failed to write {}", record.display()))?;
            return Ok(pid);
        }
        if Instant::now() > deadline {
            bail!(
                "{program} exited right after it started\nsee {} for the reason",
                log.display()
            );
        }
        sleep(Duration::from_millis(100));
    }
}

/// Waits until `virsh version` works on [`cmd::LIBVIRT_URI`].
fn wait_for_libvirt(state: &Path) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let result = cmd::capture(cmd::virsh().arg("version"));
        match result {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(e).context(format!(
                    "libvirtd does not answer on {}\nsee {} for the reason; if the QEMU driver is missing, run `cargo xtask setup`",
                    cmd::LIBVIRT_URI,
                    state.join("log/libvirtd.log").display()
                ));
            }
            Err(_) => sleep(Duration::from_millis(200)),
        }
    }
}

/// Stops the daemons the lab started (libvirtd first), each by its recorded
/// pid, and forgets them. Daemons the lab did not start are left running.
pub fn stop_started(state: &Path) -> Result<()> {
    for daemon in DAEMONS.iter().rev() {
        let program = daemon.program;
        let record = record_path(state, program);
        let Some(pid) = recorded_pid(state, program) else {
            if let Some(pid) = running_pid(program) {
                println!("lab: leaving {program} (pid {pid}) running: the lab did not start it");
            }
            continue;
        };
        if pid_runs(pid, program) {
            stop(pid, program)?;
            println!("lab: stopped {program} (pid {pid})");
        } else {
            println!("lab: {program} (pid {pid}) the lab started is no longer running");
        }
        fs::remove_file(&record)
            .with_context(|| format!("failed to remove {}", record.display()))?;
    }
    Ok(())
}

/// Kills the libvirtd the lab started with SIGKILL, as a crash would, and
/// forgets it; `lab up` starts a new one. Refuses a libvirtd the lab did not
/// start.
pub fn crash_libvirtd(state: &Path) -> Result<u32> {
    let program = "libvirtd";
    let Some(pid) = recorded_pid(state, program).filter(|pid| pid_runs(*pid, program)) else {
        bail!(
            "no running libvirtd was started by the lab
run `cargo xtask lab up` first"
        );
    };
    cmd::capture(Command::new("kill").args(["-KILL", &pid.to_string()]))?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    while pid_runs(pid, program) {
        if Instant::now() > deadline {
            bail!("libvirtd (pid {pid}) is still running after SIGKILL");
        }
        sleep(Duration::from_millis(20));
    }
    let record = record_path(state, program);
    fs::remove_file(&record).with_context(|| format!("failed to remove {}", record.display()))?;
    Ok(pid)
}

/// Sends SIGTERM to `pid` and waits for it to exit.
fn stop(pid: u32, program: &str) -> Result<()> {
    cmd::capture(Command::new("kill").args(["-TERM", &pid.to_string()]))?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    while pid_runs(pid, program) {
        if Instant::now() > deadline {
            bail!(
                "{program} (pid {pid}) is still running {} s after SIGTERM\nstop it with `kill -KILL {pid}`",
                STOP_TIMEOUT.as_secs()
            );
        }
        sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The running daemons and whether the lab started them.
pub fn status(state: &Path) -> Vec<DaemonStatus> {
    DAEMONS
        .iter()
        .map(|daemon| {
            let pid = running_pid(daemon.program);
            DaemonStatus {
                program: daemon.program,
                pid,
                started_by_lab: pid.is_some() && recorded_pid(state, daemon.program) == pid,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_found_by_its_comm() {
        let me = std::process::id();
        let comm = fs::read_to_string(format!("/proc/{me}/comm")).unwrap();
        assert!(pid_runs(me, comm.trim_end()));
        assert!(!pid_runs(me, "hs-not-this"));
    }
}
