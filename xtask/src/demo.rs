//! `cargo xtask demo`: from a fresh machine to a live view of the lab in
//! one command: setup, the lab with two guests, the release agent (with
//! its eBPF probes) serving its query socket in `target/demo/`, and
//! `hyper-stats top` over that socket in the foreground.
//!
//! When `top` exits (`q`, Ctrl-C) the agent is stopped by its pid; the lab
//! stays up (`cargo xtask lab down`). The agent's log goes to
//! `target/demo/agent.log`, so that it does not write over the screen. If
//! the agent exits or never opens its socket, the demo stops and names
//! that log.
//!
//! Other parts of the demo (the dashboard: carbon-cache, graphite-web and
//! `hyper-stats dashboard`, behind a flag of [`Args`]) start where
//! [`run_demo`] says, add to the agent's config ([`agent_config`]) and
//! push their processes on the list stopped at the end.

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::util::{run, workspace_root};
use crate::{build_ebpf, lab, setup, sys};

/// How long the agent may take to open its query socket: it connects to
/// libvirt and loads its probes first, a few seconds on the lab machine.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a stopped process has to exit after SIGTERM before it is
/// killed: the agent's clean shutdown takes well under a second.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// `cargo xtask demo` options (none yet: `--dashboard` goes here).
#[derive(Debug, clap::Args)]
pub struct Args {}

/// A process the demo started, stopped by its pid (SIGTERM, then SIGKILL
/// after [`STOP_GRACE`]) when dropped.
struct Background {
    /// What it is, for messages.
    name: &'static str,
    /// The process.
    child: Child,
}

impl Drop for Background {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = sys::kill(self.child.id(), libc::SIGTERM);
        let until = Instant::now() + STOP_GRACE;
        while Instant::now() < until {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "{} (pid {}) ignored SIGTERM; killing it",
            self.name,
            self.child.id()
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent's config: its query socket at `socket`. Other demo parts
/// add their sections (the dashboard: `[carbon]`).
fn agent_config(socket: &Path) -> String {
    format!("[query]\nsocket = {:?}\n", socket.display().to_string())
}

/// Waits until `agent` answers on `socket`; fails if it exits first or
/// takes longer than [`SOCKET_TIMEOUT`], naming its log.
fn wait_for_socket(agent: &mut Background, socket: &Path, log: &Path) -> Result<()> {
    let until = Instant::now() + SOCKET_TIMEOUT;
    loop {
        if UnixStream::connect(socket).is_ok() {
            return Ok(());
        }
        if let Some(status) = agent.child.try_wait()? {
            bail!(
                "the agent exited with {status} before opening its query socket\nsee its log, {}",
                log.display()
            );
        }
        if Instant::now() > until {
            bail!(
                "the agent did not open its query socket {} within {SOCKET_TIMEOUT:?}\nsee its log, {}",
                socket.display(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn run_demo(_args: &Args) -> Result<()> {
    setup::run()?;
    lab::run(lab::Action::Up { guests: 2 })?;
    // The release agent with its probes: the run-queue columns are what
    // `top` is for.
    let bin = build_ebpf::release_agent()?;

    let dir: PathBuf = workspace_root().join("target").join("demo");
    std::fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let socket = dir.join("hyper-stats.sock");
    let config = dir.join("agent.toml");
    let log = dir.join("agent.log");
    std::fs::write(&config, agent_config(&socket))
        .with_context(|| format!("failed to write {}", config.display()))?;

    // Processes stopped when the demo ends, the last started first. The
    // dashboard's daemons go here, before the agent that feeds them.
    let mut background: Vec<Background> = Vec::new();

    eprintln!(
        "Starting the agent against the lab (log: {}).",
        log.display()
    );
    let log_file =
        File::create(&log).with_context(|| format!("failed to create {}", log.display()))?;
    let child = Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .args(["run", "--output", "json"])
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("failed to start {}", bin.display()))?;
    background.push(Background {
        name: "hyper-stats",
        child,
    });
    let agent = background.last_mut().expect("just pushed");
    wait_for_socket(agent, &socket, &log)?;

    let result = run(Command::new(&bin).arg("top").arg("--socket").arg(&socket));
    while let Some(process) = background.pop() {
        drop(process);
    }
    eprintln!("Stopped the agent; the lab stays up (`cargo xtask lab down` removes it).");
    result
}
