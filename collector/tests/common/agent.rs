//! The agent runner: the real `hyper-stats run --output json` started as
//! a child process, its stdout JSON lines parsed into [`Point`]s (each
//! kept with the instant it arrived; the agent's own `agent.*` series,
//! which belong to no domain, kept apart), optionally its stderr kept as
//! its log, and the process stopped when the runner is dropped.
//!
//! One [`AgentBuilder`] covers what the test files need: a config file
//! (given, or written from text into a temporary directory), another
//! libvirt URI or agent binary, extra arguments after `run`, stdout
//! discarded, stderr kept.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::URI;

/// How long a dropped agent has to exit after SIGTERM before it is
/// killed: its clean shutdown flushes the sinks, which takes well under a
/// second on the lab; 10 s leaves room for a loaded CI machine.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How often a dropped agent is polled for having exited.
const STOP_POLL: Duration = Duration::from_millis(50);

/// One line of `hyper-stats run --output json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Point {
    /// Unix time of the sample, in seconds.
    pub ts: f64,
    /// The domain's UUID; empty for the agent's own series.
    #[serde(default)]
    pub uuid: String,
    /// The domain's name; empty for the agent's own series.
    #[serde(default)]
    pub domain: String,
    /// The dotted metric name.
    pub metric: String,
    /// The value, in the unit the metric name gives.
    pub value: f64,
}

/// What an agent printed by the time it exited.
pub struct Finished {
    /// Every JSON line of its stdout of a domain's series, in order.
    pub points: Vec<Point>,
    /// Every line of its stderr, in order (empty unless
    /// [`AgentBuilder::keep_log`]).
    pub log: Vec<String>,
}

/// The agent's config file.
enum Config {
    /// No `--config`.
    None,
    /// `--config` with a file the test owns.
    File(PathBuf),
    /// `--config` with a file holding this text, written into a temporary
    /// directory the agent holds for its lifetime.
    Text(String),
}

/// How to start an agent; see [`Agent::json`].
pub struct AgentBuilder {
    /// The binary to run: the one this build made, unless a test asks
    /// for another (e.g. an older build, to show a test fails on it).
    binary: PathBuf,
    /// The libvirt URI given with `--connect`.
    connect: String,
    /// The config file, if any.
    config: Config,
    /// Arguments after `run --output json --connect URI`.
    args: Vec<OsString>,
    /// Whether stdout is discarded instead of parsed.
    discard_stdout: bool,
    /// Whether stderr is kept (and echoed) instead of inherited.
    keep_log: bool,
    /// A program (and its arguments) that runs the agent, e.g. `setpriv`
    /// with the packaged unit's user and capabilities.
    wrapper: Vec<OsString>,
}

impl AgentBuilder {
    /// Runs `binary` instead of this build's `hyper-stats`.
    pub fn binary(mut self, binary: &Path) -> Self {
        self.binary = binary.to_path_buf();
        self
    }

    /// Runs the agent through `program args... BINARY ...` (e.g. setpriv).
    pub fn wrapper<S: Into<OsString> + Clone>(mut self, program: &[S]) -> Self {
        self.wrapper = program.iter().cloned().map(Into::into).collect();
        self
    }

    /// Passes `--connect uri` instead of the lab's URI.
    pub fn connect(mut self, uri: &str) -> Self {
        self.connect = uri.to_owned();
        self
    }

    /// Passes `--config path`.
    pub fn config(mut self, path: &Path) -> Self {
        self.config = Config::File(path.to_path_buf());
        self
    }

    /// Passes `--config` with a file holding `text`.
    pub fn config_text(mut self, text: &str) -> Self {
        self.config = Config::Text(text.to_owned());
        self
    }

    /// Appends arguments after `run --output json --connect URI`.
    pub fn args<S: Into<OsString> + Clone>(mut self, args: &[S]) -> Self {
        self.args.extend(args.iter().cloned().map(Into::into));
        self
    }

    /// Sends stdout to /dev/null: no points are collected.
    pub fn discard_stdout(mut self) -> Self {
        self.discard_stdout = true;
        self
    }

    /// Keeps stderr as the agent's log, echoing each line (but the
    /// per-domain `Domain found` ones) to the test's stderr as
    /// `agent: LINE`.
    pub fn keep_log(mut self) -> Self {
        self.keep_log = true;
        self
    }

    /// Starts the agent with `HYPER_STATS_LOG=info`.
    pub fn start(self) -> Agent {
        let mut config_dir = None;
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(&self.binary);
                cmd
            }
            None => Command::new(&self.binary),
        };
        match self.config {
            Config::None => {}
            Config::File(path) => {
                cmd.arg("--config").arg(path);
            }
            Config::Text(text) => {
                let dir = tempfile::tempdir().unwrap();
                let file = dir.path().join("hyper-stats.toml");
                std::fs::write(&file, text).unwrap();
                cmd.arg("--config").arg(file);
                config_dir = Some(dir);
            }
        }
        cmd.args(["run", "--output", "json", "--connect"])
            .arg(&self.connect)
            .args(&self.args)
            .env("HYPER_STATS_LOG", "info");
        if self.discard_stdout {
            cmd.stdout(Stdio::null());
        } else {
            cmd.stdout(Stdio::piped());
        }
        if self.keep_log {
            cmd.stderr(Stdio::piped());
        }
        let mut child = cmd.spawn().expect("failed to start hyper-stats");

        let lines = Arc::new(Mutex::new(Vec::new()));
        let agent_lines = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            let sink = Arc::clone(&lines);
            let agent_sink = Arc::clone(&agent_lines);
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let p: Point = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"));
                    let sink = if p.uuid.is_empty() {
                        &agent_sink
                    } else {
                        &sink
                    };
                    sink.lock().unwrap().push((Instant::now(), p));
                }
            }));
        }
        if let Some(stderr) = child.stderr.take() {
            let sink = Arc::clone(&log);
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if !line.contains("Domain found") {
                        eprintln!("agent: {line}");
                    }
                    sink.lock().unwrap().push(line);
                }
            }));
        }
        Agent {
            child,
            lines,
            agent_lines,
            log,
            readers,
            _config_dir: config_dir,
        }
    }
}

/// A running `hyper-stats run --output json`; stopped when dropped
/// (SIGCONT and SIGTERM by pid, then killed if it has not exited within
/// [`STOP_GRACE`]).
pub struct Agent {
    /// The agent process.
    child: Child,
    /// Its stdout lines of domain series so far, each with the instant it
    /// was read.
    lines: Arc<Mutex<Vec<(Instant, Point)>>>,
    /// Its stdout lines of its own series so far.
    agent_lines: Arc<Mutex<Vec<(Instant, Point)>>>,
    /// Its stderr lines so far (with [`AgentBuilder::keep_log`]).
    log: Arc<Mutex<Vec<String>>>,
    /// The threads reading stdout and stderr; they end at EOF.
    readers: Vec<JoinHandle<()>>,
    /// Holds a config file written from text for the agent's lifetime.
    _config_dir: Option<tempfile::TempDir>,
}

impl Agent {
    /// A builder for `hyper-stats run --output json --connect URI`.
    pub fn json() -> AgentBuilder {
        AgentBuilder {
            binary: PathBuf::from(env!("CARGO_BIN_EXE_hyper-stats")),
            connect: URI.to_owned(),
            config: Config::None,
            args: Vec::new(),
            discard_stdout: false,
            keep_log: false,
            wrapper: Vec::new(),
        }
    }

    /// The points printed so far.
    pub fn points(&self) -> Vec<Point> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// The points of the agent's own series (`agent.*`) printed so far.
    pub fn agent_points(&self) -> Vec<Point> {
        self.agent_lines
            .lock()
            .unwrap()
            .iter()
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// The points printed so far, each with the instant it was read.
    pub fn timed_points(&self) -> Vec<(Instant, Point)> {
        self.lines.lock().unwrap().clone()
    }

    /// Its stderr lines so far (with [`AgentBuilder::keep_log`]).
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Its stderr lines so far that contain `s`.
    pub fn logged(&self, s: &str) -> Vec<String> {
        self.log().into_iter().filter(|l| l.contains(s)).collect()
    }

    /// Waits up to `timeout` for the agent to exit; its status, with all
    /// its output read, or `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                for r in self.readers.drain(..) {
                    r.join().unwrap();
                }
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(STOP_POLL);
        }
    }

    /// SIGTERM (a clean shutdown) and waits up to [`STOP_GRACE`] for the
    /// exit; the agent's output stays readable.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.pid();
        // SAFETY: kill(2) on our own child; no memory involved.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill -TERM {pid} failed");
        self.wait_exit(STOP_GRACE)
            .unwrap_or_else(|| panic!("hyper-stats (pid {pid}) did not stop within {STOP_GRACE:?}"))
    }

    /// Whether the agent has not exited yet.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The agent's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits for the agent to exit by itself (after `--duration`) or after
    /// a signal, asserts it exited successfully, and returns everything it
    /// printed.
    pub fn wait(mut self) -> Finished {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "hyper-stats exited with {status}");
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        Finished {
            points: self.points(),
            log: self.log.lock().unwrap().clone(),
        }
    }

    /// Stops the agent with SIGTERM (a clean shutdown), then as
    /// [`Agent::wait`].
    pub fn stop(mut self) -> Finished {
        self.terminate();
        self.wait()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let pid = self.pid();
        // SAFETY: kill(2) on our own child, not yet reaped; SIGCONT first
        // in case a test stopped it.
        unsafe {
            libc::kill(pid, libc::SIGCONT);
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(STOP_POLL);
        }
        eprintln!("hyper-stats (pid {pid}) ignored SIGTERM; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
