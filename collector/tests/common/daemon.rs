//! Daemons a test started that detach from it (`nrpe -d`, `nagios4 -d`):
//! found by the pid file the test told them to write, and stopped by that
//! pid only — SIGTERM, then SIGKILL if they ignore it.

use std::path::Path;
use std::time::{Duration, Instant};

/// How long a daemon has to write its pid file after it was started.
const PID_FILE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a dropped daemon has to exit after SIGTERM before it is
/// killed.
const DROP_GRACE: Duration = Duration::from_secs(5);

/// How long [`Daemon::stop`] waits for the daemon to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A process this test started, stopped by its pid when dropped.
pub struct Daemon {
    /// What it is, for messages.
    name: &'static str,
    /// Its pid, from its pid file.
    pid: i32,
}

impl Daemon {
    /// Waits (up to 10 s) for `path` to hold a pid; panics if it does not.
    pub fn from_pid_file(name: &'static str, path: &Path) -> Daemon {
        let deadline = Instant::now() + PID_FILE_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(path)
                && let Ok(pid) = text.trim().parse::<i32>()
            {
                return Daemon { name, pid };
            }
            assert!(
                Instant::now() < deadline,
                "{name} wrote no pid file {}",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether the pid still exists.
    pub fn alive(&self) -> bool {
        // SAFETY: signal 0 only checks that the pid exists.
        unsafe { libc::kill(self.pid, 0) == 0 }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with a pid this test started; no memory involved.
        unsafe { libc::kill(self.pid, sig) };
    }

    /// Stops it with SIGTERM and waits until it has exited; panics (and
    /// then kills it, as when dropped) if it takes more than 30 s.
    pub fn stop(self) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self.alive() {
            assert!(
                Instant::now() < deadline,
                "{} (pid {}) did not exit",
                self.name,
                self.pid
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::mem::forget(self);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + DROP_GRACE;
        while Instant::now() < deadline {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "{} (pid {}) ignored SIGTERM; killing it",
            self.name, self.pid
        );
        self.signal(libc::SIGKILL);
    }
}
