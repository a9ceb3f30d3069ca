//! A synthetic vCPU load: processes that look to the agent like QEMU
//! guests, for benchmarks at thread counts the lab's real guests cannot
//! reach on a 2-core machine.
//!
//! # What runs
//! One process per pseudo-guest, named `synth-NNN` (its `/proc/PID/comm`,
//! which the agent's `--watch-pid` turns into the domain name), each with
//! `vcpus` threads named `CPU <n>/TCG` as QEMU names its TCG vCPU threads.
//! Each thread behaves like an idle-ish vCPU: it sleeps to an absolute
//! deadline on the monotonic clock ([`WAKEUPS_PER_S`] times a second, each
//! thread at its own phase, each wakeup moved by up to [`JITTER_PERCENT`]
//! of the period), runs a busy burst of [`BURST_MIN_US`] to
//! [`BURST_MAX_US`] of its own CPU time, and sleeps again. So every thread
//! is woken by a timer and waits in the run queue whenever the machine's
//! CPUs are busy with the other threads' bursts, which is what the agent's
//! probes measure.
//!
//! # Lifetime
//! The guests are children of whoever started them (the bench, or the
//! hidden `cargo xtask synthetic-guests` command for a manual run). Each
//! asks the kernel for SIGKILL when that parent dies
//! (`PR_SET_PDEATHSIG`), and [`Load`] kills them by pid when dropped, so
//! none outlives its bench.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::sys;

/// Wakeups per second of each synthetic vCPU thread by default. A guest
/// that ticks at 20 Hz is on the quiet side of real ones (an idle Linux
/// guest with `NO_HZ` wakes tens of times a second); with 1,024 threads
/// it makes about 20,000 wakeups and 40,000 context switches a second.
pub const WAKEUPS_PER_S: u32 = 20;

/// Shortest busy burst after a wakeup, in µs of the thread's CPU time.
/// Shorter than most real vCPU slices, because on the 2-core lab machine
/// (nested virtualization, costly switches) each wakeup costs about as
/// much again in the kernel: 1,024 threads with bursts of 10-30 µs
/// measured 0.81 of one core (40% of the machine), with 20-60 µs 1.36
/// cores (68%), too much for the agent's numbers to mean anything.
pub const BURST_MIN_US: u32 = 10;

/// Longest busy burst after a wakeup, in µs of the thread's CPU time.
pub const BURST_MAX_US: u32 = 30;

/// How far a wakeup may move from its nominal tick, in percent of the
/// period either way: real guests' timers are not in lockstep, and
/// without jitter the threads' phases would be the only spread.
pub const JITTER_PERCENT: u64 = 25;

/// How the threads of a load behave.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct Profile {
    /// Wakeups per second of each vCPU thread.
    #[arg(long, default_value_t = WAKEUPS_PER_S)]
    pub wakeups: u32,
    /// Shortest busy burst, µs of CPU time.
    #[arg(long, default_value_t = BURST_MIN_US)]
    pub burst_min_us: u32,
    /// Longest busy burst, µs of CPU time.
    #[arg(long, default_value_t = BURST_MAX_US)]
    pub burst_max_us: u32,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            wakeups: WAKEUPS_PER_S,
            burst_min_us: BURST_MIN_US,
            burst_max_us: BURST_MAX_US,
        }
    }
}

impl Profile {
    /// One line for reports.
    pub fn describe(&self) -> String {
        format!(
            "{} wakeups/s per thread (±{JITTER_PERCENT}% jitter), bursts of {}-{} µs CPU",
            self.wakeups, self.burst_min_us, self.burst_max_us
        )
    }
}

/// `cargo xtask synthetic-guests`: start a load and keep it until killed.
#[derive(clap::Args)]
pub struct GuestsArgs {
    /// Pseudo-guests (processes).
    #[arg(long)]
    pub guests: u32,
    /// vCPU threads per pseudo-guest.
    #[arg(long)]
    pub vcpus: u32,
    #[command(flatten)]
    pub profile: Profile,
}

/// `cargo xtask synthetic-guest`: one pseudo-guest (started by [`Load`]).
#[derive(clap::Args)]
pub struct GuestArgs {
    /// The guest's number, which names it `synth-NNN`.
    #[arg(long)]
    pub index: u32,
    /// vCPU threads.
    #[arg(long)]
    pub vcpus: u32,
    /// The pid of the process that started it: if that is no longer the
    /// parent by the time the death signal is set, it already died.
    #[arg(long)]
    pub parent: u32,
    #[command(flatten)]
    pub profile: Profile,
}

/// The name of pseudo-guest `index` (its comm, and the agent's domain name).
pub fn guest_name(index: u32) -> String {
    format!("synth-{index:03}")
}

/// Runs `synthetic-guests`: prints the guests' pids on one line
/// (`pids P1,P2,...`) and waits until killed.
pub fn run_guests(args: &GuestsArgs) -> Result<()> {
    sys::die_with_parent().context("failed to set the parent-death signal")?;
    let load = Load::start(args.guests, args.vcpus, args.profile)?;
    println!("pids {}", load.pid_list());
    eprintln!(
        "synthetic-guests: {} guests x {} vCPU threads, {}; Ctrl-C stops",
        args.guests,
        args.vcpus,
        args.profile.describe()
    );
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

/// Runs one pseudo-guest until killed.
pub fn run_guest(args: &GuestArgs) -> Result<()> {
    sys::die_with_parent().context("failed to set the parent-death signal")?;
    if sys::parent_pid() != args.parent {
        bail!("parent {} exited before this guest started", args.parent);
    }
    let p = args.profile;
    if p.wakeups == 0 || p.burst_min_us > p.burst_max_us {
        bail!(
            "invalid profile: {} wakeups/s, bursts of {}-{} µs",
            p.wakeups,
            p.burst_min_us,
            p.burst_max_us
        );
    }
    // Named before any thread exists, so the process' comm is the name.
    sys::set_process_name(&guest_name(args.index)).context("failed to set the process name")?;
    let mut threads = Vec::new();
    for n in 0..args.vcpus {
        let seed =
            (u64::from(args.index) << 32 | u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        threads.push(
            thread::Builder::new()
                .name(format!("CPU {n}/TCG"))
                .spawn(move || vcpu(seed, p))
                .context("failed to start a vCPU thread")?,
        );
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// A small xorshift generator: phases, jitter and bursts need spread, not
/// quality, and each thread gets its own from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// One vCPU thread: timer wakeup, busy burst, sleep; forever.
fn vcpu(seed: u64, p: Profile) {
    let mut rng = Rng(seed);
    let period = 1_000_000_000 / u64::from(p.wakeups);
    let jitter = period * JITTER_PERCENT / 100;
    // Each thread starts at its own phase of the period.
    let mut tick = sys::monotonic_ns() + rng.between(0, period);
    loop {
        let wake = tick + rng.between(0, 2 * jitter) - jitter;
        sys::sleep_until_monotonic(wake);
        let burst_ns = rng.between(u64::from(p.burst_min_us), u64::from(p.burst_max_us)) * 1000;
        let start = sys::thread_cpu_ns();
        while sys::thread_cpu_ns() - start < burst_ns {
            std::hint::spin_loop();
        }
        tick += period;
        // A thread that fell more than a period behind (the machine was
        // saturated) skips the ticks it missed instead of bursting back to
        // back to catch up.
        let now = sys::monotonic_ns();
        if now > tick + period {
            tick = now;
        }
    }
}

/// A running synthetic load, killed by pid when dropped.
pub struct Load {
    /// One child per pseudo-guest, in index order.
    children: Vec<Child>,
    /// vCPU threads per guest.
    pub vcpus: u32,
}

impl Load {
    /// Starts `guests` pseudo-guests of `vcpus` threads each, as children
    /// of this process (this xtask binary re-executed), and waits until
    /// every thread is there.
    pub fn start(guests: u32, vcpus: u32, profile: Profile) -> Result<Self> {
        let exe: PathBuf =
            std::env::current_exe().context("failed to find this xtask binary to re-run it")?;
        let mut load = Self {
            children: Vec::new(),
            vcpus,
        };
        for index in 0..guests {
            let child = Command::new(&exe)
                .arg("synthetic-guest")
                .args(["--index", &index.to_string()])
                .args(["--vcpus", &vcpus.to_string()])
                .args(["--parent", &std::process::id().to_string()])
                .args(["--wakeups", &profile.wakeups.to_string()])
                .args(["--burst-min-us", &profile.burst_min_us.to_string()])
                .args(["--burst-max-us", &profile.burst_max_us.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| format!("failed to start synthetic guest {index}"))?;
            load.children.push(child);
        }
        // Every thread named, so the agent finds all of them at its start.
        let until = std::time::Instant::now() + Duration::from_secs(30);
        for pid in load.pids() {
            loop {
                let threads = vcpu_threads(pid).len() as u32;
                if threads == vcpus {
                    break;
                }
                if std::time::Instant::now() > until {
                    bail!("synthetic guest {pid} has {threads} of {vcpus} vCPU threads after 30 s");
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(load)
    }

    /// The guests' pids, in index order.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// The pids as one comma-separated list (`--watch-pid`'s format).
    pub fn pid_list(&self) -> String {
        let pids: Vec<String> = self.pids().iter().map(u32::to_string).collect();
        pids.join(",")
    }

    /// vCPU threads in all.
    pub fn threads(&self) -> u32 {
        self.children.len() as u32 * self.vcpus
    }

    /// Kills every guest by pid and reaps it.
    pub fn stop(&mut self) {
        for child in &mut self.children {
            if child.try_wait().ok().flatten().is_none() {
                let _ = sys::kill(child.id(), libc::SIGKILL);
            }
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The thread ids of `pid`'s threads named `CPU <n>/...`, by `n`.
pub fn vcpu_threads(pid: u32) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        if let Some(n) = vcpu_index(comm.trim()) {
            out.push((n, tid));
        }
    }
    out.sort_unstable();
    out
}

/// `n` of a thread named `CPU <n>/<accel>`.
fn vcpu_index(comm: &str) -> Option<u32> {
    let rest = comm.strip_prefix("CPU ")?;
    let (n, accel) = rest.split_once('/')?;
    if accel.is_empty() {
        return None;
    }
    n.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_thread_names_parse() {
        assert_eq!(vcpu_index("CPU 0/TCG"), Some(0));
        assert_eq!(vcpu_index("CPU 299/KVM"), Some(299));
        assert_eq!(vcpu_index("CPU 3/"), None);
        assert_eq!(vcpu_index("worker"), None);
    }

    #[test]
    fn rng_stays_in_range() {
        let mut rng = Rng(12345);
        for _ in 0..10_000 {
            let v = rng.between(20, 60);
            assert!((20..=60).contains(&v));
        }
    }

    #[test]
    fn guest_names_sort_and_fit_comm() {
        assert_eq!(guest_name(17), "synth-017");
        assert!(guest_name(4095).len() <= 15);
    }
}
