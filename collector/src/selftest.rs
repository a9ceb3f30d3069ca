//! `hyper-stats selftest`: do the probes measure true on this kernel?
//!
//! # What does this do?
//!
//! It loads and attaches the agent's own eBPF probes (no libvirt needed),
//! watches one of its own threads while busy spinners compete with it for
//! the CPUs, and compares what the probes recorded with what the kernel
//! itself accounted for that thread over the same interval:
//!
//! - the run-queue wait sum with `/proc/self/task/TID/schedstat` field 2
//!   (`run_delay`),
//! - the on-CPU sum with schedstat field 1 (`sum_exec_runtime`),
//! - voluntary and involuntary switches with `status`'s
//!   `voluntary_ctxt_switches` and `nonvoluntary_ctxt_switches`.
//!
//! Both sides are read once before the thread starts and once after it
//! has blocked for good, so they cover the same interval exactly.
//!
//! # Output
//!
//! Lines a person (and `cargo xtask lab kernels`, which reads a booted
//! kernel's serial console) reads: the kernel, where its BTF came from, the
//! programs and their types, the field offsets found, one `check` line per
//! comparison with its deviation, and `verdict: PASS` or
//! `verdict: FAIL: <cause>` with the fix on a `fix:` line. [`run`] returns
//! whether it passed; `main` turns that into the exit code. This is what
//! an operator runs before rolling a new kernel out.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::sources::ebpf::{self, ProbeOptions, Probes, ProbesOff, ThreadDelta};

/// The largest deviation from the kernel's own accounting that passes: a
/// sum off by more than this is a wrong offset or a lost event, not noise.
pub(crate) const MAX_DEVIATION: f64 = 0.02;

/// Run-queue wait the watched thread must see for the comparison to mean
/// anything: a handful of short waits would make 2% a few microseconds.
const MIN_RUNQ_NS: u64 = 10_000_000;

/// How long the watched thread spins before each short sleep: long enough
/// to be preempted by the spinners, short enough for many wakeups.
const SPIN: Duration = Duration::from_millis(5);

/// Its sleep between spins, so it also waits after wakeups.
const SLEEP: Duration = Duration::from_millis(1);

/// `hyper-stats selftest`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How long the watched thread competes with the spinners.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// The kernel's BTF (to test a kernel's BTF file other than the running
    /// one's, or the failure path).
    #[arg(long, value_name = "FILE", default_value = ebpf::KERNEL_BTF)]
    pub(crate) btf: std::path::PathBuf,
}

/// One comparison with the kernel.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Check {
    /// What was compared, e.g. `run-queue`.
    pub(crate) name: &'static str,
    /// What the probes recorded.
    pub(crate) probes: u64,
    /// What the kernel accounted.
    pub(crate) kernel: u64,
}

impl Check {
    /// `|probes - kernel| / kernel`; 0 when both are 0, 1 when only the
    /// kernel's is.
    pub(crate) fn deviation(&self) -> f64 {
        match self.kernel {
            0 if self.probes == 0 => 0.0,
            0 => 1.0,
            k => self.probes.abs_diff(k) as f64 / k as f64,
        }
    }

    /// Whether it is within [`MAX_DEVIATION`].
    pub(crate) fn ok(&self) -> bool {
        self.deviation() <= MAX_DEVIATION
    }

    /// `check run-queue: probes 1000 ns, schedstat 1000 ns, off 0.000% (limit 2%): ok`
    fn line(&self) -> String {
        format!(
            "check {}: probes {} ns, schedstat {} ns, off {:.3}% (limit {}%): {}",
            self.name,
            self.probes,
            self.kernel,
            self.deviation() * 100.0,
            MAX_DEVIATION * 100.0,
            verdict_word(self.ok()),
        )
    }
}

fn verdict_word(ok: bool) -> &'static str {
    if ok { "ok" } else { "FAIL" }
}

/// Runs the selftest, printing as it goes; `Ok(false)` when a check failed
/// or the probes could not run (already said on stdout), `Err` only when
/// this process could not do its part (spawn threads, read `/proc`).
pub fn run(args: &Args) -> Result<bool> {
    println!("kernel: {}", kernel_release());
    let options = ProbeOptions {
        // The watched thread only; two for a margin.
        max_watched: 2,
        btf: args.btf.clone(),
    };
    let mut probes = match Probes::load(&options) {
        Ok(probes) => probes,
        Err(off) => {
            print_probes_off(&off);
            return Ok(false);
        }
    };
    let features = probes.features().clone();
    println!("btf: {} ({})", args.btf.display(), features.btf_source);
    let programs: Vec<String> = ebpf::attached_programs(features.kvm_attached)
        .into_iter()
        .map(|(_, kind, tracepoint)| format!("{kind} {tracepoint}"))
        .collect();
    let kvm = if features.kvm_attached {
        ""
    } else {
        "; kvm:kvm_exit/kvm:kvm_entry not attached (no kvm module)"
    };
    println!("programs: {}{kvm}", programs.join(", "));
    let o = features.offsets;
    println!(
        "offsets: task_struct.pid={} task_struct.sched_info.run_delay={} \
         task_struct.sched_info.last_queued={} task_struct.se.cfs_rq={} \
         task_struct.se.sum_exec_runtime={} cfs_rq.rq={} rq.clock={} kvm_exit.exit_reason={}",
        o.task_pid,
        o.task_run_delay,
        o.task_last_queued,
        o.task_cfs_rq,
        o.task_sum_exec_runtime,
        o.cfs_rq_rq,
        o.rq_clock,
        o.kvm_exit_reason,
    );

    let measured = measure(&mut probes, args.duration)?;
    let checks = [
        Check {
            name: "run-queue",
            probes: measured.probes.runq.sum_ns,
            kernel: measured.kernel.run_delay_ns,
        },
        Check {
            name: "on-cpu",
            probes: measured.probes.oncpu.sum_ns,
            kernel: measured.kernel.exec_ns,
        },
    ];
    for check in &checks {
        println!("{}", check.line());
    }
    let (p, k) = (&measured.probes, &measured.kernel);
    let switches_equal =
        p.voluntary_switches == k.voluntary && p.involuntary_switches == k.involuntary;
    println!(
        "check switches: voluntary {}/{}, involuntary {}/{}: {}",
        p.voluntary_switches,
        k.voluntary,
        p.involuntary_switches,
        k.involuntary,
        verdict_word(switches_equal)
    );

    let failure = if k.run_delay_ns < MIN_RUNQ_NS {
        Some(format!(
            "too little contention to compare: the thread waited {} ns, at least {MIN_RUNQ_NS} \
             needed\nfix: run with a longer --duration",
            k.run_delay_ns
        ))
    } else if let Some(bad) = checks.iter().find(|c| !c.ok()) {
        Some(format!(
            "the probes' {} sum is off by {:.3}% from the kernel's\n\
             fix: report this kernel (uname -r, this output) to the hyper-stats developers; \
             the agent's {} numbers are wrong on it",
            bad.name,
            bad.deviation() * 100.0,
            bad.name
        ))
    } else if !switches_equal {
        Some(
            "the probes' switch counts differ from the kernel's\n\
             fix: report this kernel (uname -r, this output) to the hyper-stats developers"
                .to_string(),
        )
    } else {
        None
    };
    match failure {
        None => {
            println!("verdict: PASS");
            Ok(true)
        }
        Some(text) => {
            println!("verdict: FAIL: {text}");
            Ok(false)
        }
    }
}

/// `verdict: FAIL: <cause>` and `fix: <fix>` for probes that did not load.
fn print_probes_off(off: &ProbesOff) {
    let text = off.to_string();
    let (cause, fix) = text.split_once('\n').unwrap_or((&text, ""));
    match verifier_error(off) {
        Some(line) => println!("verdict: FAIL: {cause}: verifier: {line}"),
        None => println!("verdict: FAIL: {cause}"),
    }
    if !fix.is_empty() {
        println!("fix: {}", fix.lines().next().unwrap_or(fix));
    }
}

/// The verifier's error for a program the kernel refused: the last line
/// of its log before the `processed N insns` summary (the log before it is
/// the instruction trace that led there).
fn verifier_error(off: &ProbesOff) -> Option<String> {
    let ProbesOff::Attach {
        source: aya::programs::ProgramError::LoadError { verifier_log, .. },
        ..
    } = off
    else {
        return None;
    };
    first_verifier_error(&verifier_log.to_string())
}

/// See [`verifier_error`].
fn first_verifier_error(log: &str) -> Option<String> {
    let lines: Vec<&str> = log.lines().map(str::trim).collect();
    let end = lines
        .iter()
        .position(|l| l.starts_with("processed "))
        .unwrap_or(lines.len());
    lines[..end]
        .iter()
        .rev()
        .find(|l| !l.is_empty())
        .map(|l| l.to_string())
}

/// The kernel's release, e.g. `6.1.0-57-amd64`.
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// What the kernel accounted for one thread over the measured interval.
#[derive(Debug, Default, Clone, Copy)]
struct KernelCounts {
    /// schedstat field 2.
    run_delay_ns: u64,
    /// schedstat field 1.
    exec_ns: u64,
    /// `voluntary_ctxt_switches`.
    voluntary: u64,
    /// `nonvoluntary_ctxt_switches`.
    involuntary: u64,
}

impl KernelCounts {
    fn read(tid: u32) -> Result<Self> {
        let path = format!("/proc/self/task/{tid}/schedstat");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let fields: Vec<u64> = text
            .split_whitespace()
            .map(|f| {
                f.parse()
                    .with_context(|| format!("{path}: bad field {f:?}"))
            })
            .collect::<Result<_>>()?;
        let [exec_ns, run_delay_ns, ..] = fields[..] else {
            anyhow::bail!("{path} has {} fields, expected 3", fields.len());
        };
        let path = format!("/proc/self/task/{tid}/status");
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .with_context(|| format!("{path} has no {name}"))
        };
        Ok(Self {
            run_delay_ns,
            exec_ns,
            voluntary: field("voluntary_ctxt_switches:")?,
            involuntary: field("nonvoluntary_ctxt_switches:")?,
        })
    }

    fn since(self, before: Self) -> Self {
        Self {
            run_delay_ns: self.run_delay_ns - before.run_delay_ns,
            exec_ns: self.exec_ns - before.exec_ns,
            voluntary: self.voluntary - before.voluntary,
            involuntary: self.involuntary - before.involuntary,
        }
    }
}

/// The two sides of one measured interval.
struct Measured {
    /// What the probes recorded for the thread.
    probes: ThreadDelta,
    /// What the kernel accounted for it.
    kernel: KernelCounts,
}

/// Watches a thread that spins and sleeps among more spinners than CPUs
/// for `duration`, so that it waits on the run queue both after wakeups
/// and after preemptions.
fn measure(probes: &mut Probes, duration: Duration) -> Result<Measured> {
    let cpus = thread::available_parallelism().map_or(2, |n| n.get());
    let stop = Arc::new(AtomicBool::new(false));
    let spinners: Vec<_> = (0..=cpus)
        .map(|_| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();

    // The watched thread: reports its tid, waits for "go", spins and
    // sleeps until stopped, reports "stopped", then blocks until told to
    // exit, so nothing happens to it while both sides are read.
    let (tid_tx, tid_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (exit_tx, exit_rx) = mpsc::channel::<()>();
    let target = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            // Safety: gettid has no preconditions.
            let tid = unsafe { libc::gettid() } as u32;
            let _ = tid_tx.send(tid);
            if go_rx.recv().is_err() {
                return;
            }
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                while t.elapsed() < SPIN {
                    std::hint::spin_loop();
                }
                thread::sleep(SLEEP);
            }
            let _ = tid_tx.send(0);
            let _ = exit_rx.recv();
        })
    };
    let result = (|| {
        let tid = tid_rx.recv().context("the watched thread died")?;
        thread::sleep(Duration::from_millis(20)); // let it block on "go"
        probes
            .threads()
            .set_watched(&[tid])
            .context("failed to watch the test thread")?;
        probes
            .threads()
            .read()
            .context("failed to read the probes' maps")?; // baseline
        let before = KernelCounts::read(tid)?;
        go_tx.send(()).context("the watched thread died")?;
        thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        tid_rx.recv().context("the watched thread died")?;
        thread::sleep(Duration::from_millis(50)); // it is blocked by now
        let deltas = probes
            .threads()
            .read()
            .context("failed to read the probes' maps")?;
        let kernel = KernelCounts::read(tid)?.since(before);
        let probes = deltas
            .into_iter()
            .find(|d| d.tid == tid)
            .context("the probes recorded nothing for the watched thread")?;
        Ok(Measured { probes, kernel })
    })();
    stop.store(true, Ordering::Relaxed);
    drop(go_tx);
    let _ = exit_tx.send(());
    for s in spinners {
        let _ = s.join();
    }
    let _ = target.join();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_lines_give_the_deviation_and_the_verdict() {
        let check = Check {
            name: "run-queue",
            probes: 1_010,
            kernel: 1_000,
        };
        assert_eq!(
            check.line(),
            "check run-queue: probes 1010 ns, schedstat 1000 ns, off 1.000% (limit 2%): ok"
        );
        // 2.1% off: one case past the limit, computed by hand.
        let bad = Check {
            probes: 979,
            ..check
        };
        assert!((bad.deviation() - 0.021).abs() < 1e-12);
        assert!(bad.line().ends_with("off 2.100% (limit 2%): FAIL"));
        let none = Check {
            probes: 0,
            kernel: 0,
            ..check
        };
        assert!(none.ok());
        assert!(
            !Check {
                probes: 5,
                kernel: 0,
                ..check
            }
            .ok()
        );
    }

    #[test]
    fn the_verifier_error_is_the_line_before_the_summary() {
        let log = "func#0 @0\n0: R1=ctx() R10=fp0\n0: (79) r2 = *(u64 *)(r1 +0)\n\
                   invalid bpf_context access off=0 size=8\n\
                   processed 1 insns (limit 1000000) max_states_per_insn 0\n";
        assert_eq!(
            first_verifier_error(log).as_deref(),
            Some("invalid bpf_context access off=0 size=8")
        );
        assert_eq!(first_verifier_error(""), None);
    }
}
