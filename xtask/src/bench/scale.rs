//! `cargo xtask bench scale`: what the agent costs when it watches
//! hundreds to thousands of vCPU threads (issue 12, dense compute nodes),
//! and what its libvirt side costs with 250 domains. Needs root (for the
//! probes), no lab and no libvirtd.
//!
//! # What runs
//! For each size in `--threads` (default 256, then 1,024): a synthetic
//! load of `size / 4` pseudo-guests of 4 vCPU threads each
//! (`crate::synthetic`), then the release agent (eBPF object required)
//! with `--connect test:///default` (libvirt in process, no daemon) and
//! `--watch-pid` naming every pseudo-guest, pushing to a loopback Carbon
//! listener the bench runs (`scale/carbon.rs`). Twice:
//! 1. with the default Carbon settings, for `--minutes` at the largest
//!    size (default 16: every 15-minute window is full after that) and
//!    `--small-minutes` below it: RSS and CPU every
//!    [`SAMPLE_RSS_EVERY`], printed each minute; the agent's own series
//!    (threads watched, slots, kernel map bytes, CPU of reading and of
//!    the rollup); points per second; kernel map memory cross-checked
//!    with `bpftool map show`;
//! 2. with full detail ([`FULL_DETAIL_CARBON`]), for `--detail-minutes`:
//!    points per second, and the run-queue sums of [`SAMPLED_THREADS`]
//!    threads against the kernel's schedstat (`scale/schedstat.rs`).
//!
//! Then (or alone with `--libvirt`) the libvirt side: 250 domains of a
//! test-driver file (`scale/libvirt.rs`).
//!
//! # Report
//! Every number and each goal of the issue, met or not, printed and saved
//! to `bench/runs/<unix time>-scale.txt`. The load, the listener and the
//! agent are stopped by their pids whether the bench succeeded or not.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::build_ebpf;
use crate::synthetic::{self, Load, Profile};
use crate::sys;
use crate::util::workspace_root;

mod carbon;
mod libvirt;
mod schedstat;

/// Minutes of the largest size's run: the rollup's longest window is
/// 15 minutes, so after 16 every window is full and the RSS is the
/// steady state the memory goal is about.
const LARGE_MINUTES: f64 = 16.0;

/// Minutes of the smaller sizes' runs: long enough for an RSS trend, short
/// enough that the whole bench stays under half an hour.
const SMALL_MINUTES: f64 = 3.0;

/// Minutes of each full-detail run: at least [`DETAIL_MIN_WINDOW_S`] of
/// run-queue sums after [`CHECK_FROM`].
const DETAIL_MINUTES: f64 = 3.0;

/// The shortest window the schedstat check trusts: one second of
/// misalignment at each end is then under 2% even in the worst case.
const DETAIL_MIN_WINDOW_S: f64 = 120.0;

/// The sizes run by default, in order (threads watched).
const DEFAULT_SIZES: [u32; 2] = [256, 1024];

/// The size the CPU goal is stated for, and from which `--minutes` applies.
const LARGE_SIZE: u32 = 1024;

/// vCPU threads per pseudo-guest: a typical small VM; 1,024 threads are
/// then 256 domains, the density the issue is about.
const VCPUS_PER_GUEST: u32 = 4;

/// From the agent's start to the first measured instant: it has found
/// every thread, allocated its slots and sent its first points.
const WARMUP: Duration = Duration::from_secs(60);

/// From the agent's start to the first run-queue sum the schedstat check
/// uses: every thread is watched well before (the agent sizes its slots
/// and lists the threads at its start), and a shorter wait leaves a longer
/// window in a full-detail run of a few minutes.
const CHECK_FROM: Duration = Duration::from_secs(30);

/// How often RSS and CPU are read (printed once a minute).
const SAMPLE_RSS_EVERY: Duration = Duration::from_secs(10);

/// How long an agent outlives its run if the bench cannot stop it.
const AGENT_GRACE: Duration = Duration::from_secs(60);

/// How long the load's own CPU is measured before the agent starts.
const LOAD_MEASURE: Duration = Duration::from_secs(10);

/// Threads whose run-queue sums are checked against schedstat, spread over
/// the guests.
const SAMPLED_THREADS: u32 = 16;

/// Issue 12's memory goal, RSS per watched thread at steady state, KiB:
/// 4,096 threads then cost at most 512 MiB, small beside a host that runs
/// them.
const GOAL_RSS_KIB_PER_THREAD: f64 = 128.0;

/// Issue 12's CPU goal for reading the maps and rolling up, per second at
/// [`LARGE_SIZE`] threads, ms: half a percent of one core, so watching
/// every vCPU of a dense host stays "almost no cost".
const GOAL_READ_ROLLUP_MS_PER_S: f64 = 5.0;

/// `<prefix>.<host>.` of every path: the bench sets the host so paths do
/// not depend on the machine's name.
const CARBON_PREFIX: &str = "hyperstats.bench.";

/// The agent's config for every run: no query socket (the default one may
/// belong to an agent someone else runs) and a fixed Carbon host name.
const BASE_CONFIG: &str = "[query]\nenabled = false\n\n[carbon]\nhost = \"bench\"\n";

/// The `[carbon]` line that asks for full detail (every per-vCPU series;
/// `carbon.per_vcpu`, added with issue 12). An agent that does not know it
/// refuses the config; the full-detail run then uses the default settings
/// and the report says so.
const FULL_DETAIL_CARBON: &str = "per_vcpu = true\n";

/// What "today's code" (before issue 12) published, quoted as text with
/// where each figure comes from: it cannot run this bench.
const OLD_FIGURES: &str = "today's code (before issue 12) cannot run this bench: it has no target provider \
     (no --watch-pid), so it cannot watch synthetic threads. Its published figures, not measured here: \
     reading the histograms costs about 7 ms per second for 256 watched threads (README, release build); \
     at most 256 slots (collector-ebpf DEFAULT_MAX_WATCHED, fixed); about 3 MB of rollup memory per \
     series (as issue 12 quotes it).";

/// `cargo xtask bench scale` flags.
#[derive(clap::Args)]
pub struct Args {
    /// Minutes of the 1,024-thread run (16: every window full).
    #[arg(long, default_value_t = LARGE_MINUTES)]
    minutes: f64,
    /// Minutes of the runs below 1,024 threads (RSS trend only).
    #[arg(long, default_value_t = SMALL_MINUTES)]
    small_minutes: f64,
    /// Minutes of each full-detail Carbon run (schedstat check, points/s).
    #[arg(long, default_value_t = DETAIL_MINUTES)]
    detail_minutes: f64,
    /// Watched vCPU threads per size, in order (multiples of 4).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_SIZES)]
    threads: Vec<u32>,
    /// Run only the libvirt side (250 test-driver domains).
    #[arg(long)]
    libvirt: bool,
    /// Skip the libvirt side.
    #[arg(long, conflicts_with = "libvirt")]
    no_libvirt: bool,
    /// Minutes of the libvirt side's 250-domain run.
    #[arg(long, default_value_t = libvirt::MINUTES)]
    libvirt_minutes: f64,
}

pub fn run(args: &Args) -> Result<()> {
    if let Some(size) = args
        .threads
        .iter()
        .find(|&&n| n == 0 || n % VCPUS_PER_GUEST != 0)
    {
        bail!("--threads {size}: must be a positive multiple of {VCPUS_PER_GUEST}");
    }
    let agent_bin = build_ebpf::release_agent()?;
    let mut report = super::header()?;
    let commit = Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=7"])
        .current_dir(workspace_root())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let intro = format!(
        "\nscale bench: agent at commit {commit} (release, eBPF object embedded), \
         --connect test:///default, Carbon to a loopback line counter\n{OLD_FIGURES}\n"
    );
    print!("{intro}");
    report.push_str(&intro);

    let dir = workspace_root().join("target/bench-scale");
    fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    if !args.libvirt {
        for &size in &args.threads {
            let minutes = if size >= LARGE_SIZE {
                args.minutes
            } else {
                args.small_minutes
            };
            let out = size_case(&agent_bin, &dir, size, minutes, args.detail_minutes)?;
            report.push_str(&out);
        }
    }
    if !args.no_libvirt {
        let out = libvirt::run(&agent_bin, &dir, args.libvirt_minutes)?;
        report.push_str(&out);
    }
    super::save("scale", &report)
}

/// Prints `text` and appends it to `out`.
fn emit(out: &mut String, text: &str) {
    println!("{text}");
    out.push_str(text);
    out.push('\n');
}

/// One size: the load, a default run and a full-detail run.
fn size_case(
    agent_bin: &Path,
    dir: &Path,
    threads: u32,
    minutes: f64,
    detail_minutes: f64,
) -> Result<String> {
    let mut out = String::new();
    let guests = threads / VCPUS_PER_GUEST;
    emit(
        &mut out,
        &format!(
            "\n## {threads} watched vCPU threads ({guests} pseudo-guests x {VCPUS_PER_GUEST})\n"
        ),
    );
    let profile = Profile::default();
    let load = Load::start(guests, VCPUS_PER_GUEST, profile)?;
    let load_cpu = process_cpu_percent(&load.pids(), LOAD_MEASURE)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    emit(
        &mut out,
        &format!(
            "load: {}; {load_cpu:.1}% of one core ({:.1}% of the machine's {cores} cores), \
             measured over {} s before the agent started",
            profile.describe(),
            load_cpu / cores as f64,
            LOAD_MEASURE.as_secs()
        ),
    );

    let plain = agent_run(agent_bin, dir, &load, Mode::Default, minutes, &mut out)?;
    let detail = agent_run(
        agent_bin,
        dir,
        &load,
        Mode::FullDetail,
        detail_minutes,
        &mut out,
    )?;
    drop(load);

    // The goals, each with its number.
    emit(&mut out, &format!("\n### goals at {threads} threads\n"));
    let steady = minutes >= LARGE_MINUTES;
    let rss_kib = plain.rss_end_kib as f64 / f64::from(threads);
    let own_kib =
        plain.rss_end_kib.saturating_sub(plain.rss_bpf_end_kib) as f64 / f64::from(threads);
    emit(
        &mut out,
        &format!(
            "- RSS per watched thread <= {GOAL_RSS_KIB_PER_THREAD} KiB after {LARGE_MINUTES} min: \
             {rss_kib:.1} KiB of VmRSS ({:.1} MiB / {threads}), the kernel's map pages the agent \
             maps for reading included ({own_kib:.1} KiB without them) after {minutes} min: {}",
            plain.rss_end_kib as f64 / 1024.0,
            if !steady {
                "not judged (run shorter than 16 min, windows not yet full)".to_owned()
            } else {
                verdict(rss_kib <= GOAL_RSS_KIB_PER_THREAD)
            }
        ),
    );
    let own = plain.read_us_per_s.zip(plain.rollup_us_per_s);
    emit(
        &mut out,
        &format!(
            "- reading + rollup <= {GOAL_READ_ROLLUP_MS_PER_S} ms/s at {LARGE_SIZE} threads: {}",
            match own {
                Some((r, u)) => format!(
                    "{:.2} ms/s ({:.2} reading + {:.2} rollup): {}",
                    (r + u) / 1000.0,
                    r / 1000.0,
                    u / 1000.0,
                    if threads == LARGE_SIZE {
                        verdict((r + u) / 1000.0 <= GOAL_READ_ROLLUP_MS_PER_S)
                    } else {
                        format!(
                            "scaled to {LARGE_SIZE}: {:.2} ms/s (the goal is judged at {LARGE_SIZE})",
                            (r + u) / 1000.0 * f64::from(LARGE_SIZE) / f64::from(threads)
                        )
                    }
                ),
                None => "not measured (the agent does not report agent.ebpf.read_cpu_us and agent.rollup.cpu_us)".to_owned(),
            }
        ),
    );
    emit(
        &mut out,
        &format!(
            "- every thread watched: {}",
            match (
                plain.last("agent.ebpf.watched_threads"),
                plain.last("agent.ebpf.unwatched_threads")
            ) {
                (Some(w), u) => format!(
                    "{w:.0} watched, {} unwatched of {threads}: {}",
                    u.map_or("?".to_owned(), |u| format!("{u:.0}")),
                    verdict(w as u32 == threads && u.unwrap_or(0.0) == 0.0)
                ),
                (None, _) => "not reported (no agent.ebpf.watched_threads)".to_owned(),
            }
        ),
    );
    let checks: Vec<_> = detail
        .checks
        .iter()
        .filter_map(|(_, c)| c.as_ref())
        .collect();
    emit(
        &mut out,
        &format!(
            "- run-queue sums of {SAMPLED_THREADS} threads within {}% of schedstat: {}",
            schedstat::TOLERANCE_PERCENT,
            if checks.is_empty() {
                "not measured (no sampled series reached Carbon: is full detail on?)".to_owned()
            } else {
                let worst = checks
                    .iter()
                    .map(|c| c.diff_percent().abs())
                    .fold(0.0, f64::max);
                let window = checks
                    .iter()
                    .map(|c| c.window_s)
                    .fold(f64::INFINITY, f64::min);
                format!(
                    "{} of {} agree, worst {worst:.3}%, shortest window {window:.0} s{}: {}",
                    checks.iter().filter(|c| c.ok()).count(),
                    detail.checks.len(),
                    if window < DETAIL_MIN_WINDOW_S {
                        format!(" (under {DETAIL_MIN_WINDOW_S:.0} s: too short to trust)")
                    } else {
                        String::new()
                    },
                    verdict(checks.len() == detail.checks.len() && checks.iter().all(|c| c.ok()))
                )
            }
        ),
    );
    emit(
        &mut out,
        &format!(
            "- points/s to Carbon: {:.0} with the default settings, {:.0} with full detail{}",
            plain.points_per_s,
            detail.points_per_s,
            if detail.detail_known {
                ""
            } else {
                " (the agent does not know the full-detail key: both runs used the default settings)"
            }
        ),
    );
    Ok(out)
}

fn verdict(met: bool) -> String {
    if met { "met" } else { "NOT met" }.to_owned()
}

/// Which Carbon settings a run uses.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// The agent's defaults.
    Default,
    /// [`FULL_DETAIL_CARBON`].
    FullDetail,
}

/// What one agent run measured.
struct RunResult {
    /// RSS at the end, KiB.
    rss_end_kib: u64,
    /// Of that, the kernel's BPF map pages mapped into the agent, KiB.
    rss_bpf_end_kib: u64,
    /// Mean of `agent.ebpf.read_cpu_us` after the warm-up, µs per second.
    read_us_per_s: Option<f64>,
    /// Mean of `agent.rollup.cpu_us` after the warm-up, µs per second.
    rollup_us_per_s: Option<f64>,
    /// Lines per second Carbon received after the warm-up.
    points_per_s: f64,
    /// Last value of each agent series.
    agent_last: Vec<(String, f64)>,
    /// Per sampled thread: its series and the comparison, if it had one.
    checks: Vec<(String, Option<schedstat::Check>)>,
    /// Whether the agent accepted the full-detail key (always true for
    /// the default run).
    detail_known: bool,
}

impl RunResult {
    fn last(&self, metric: &str) -> Option<f64> {
        self.agent_last
            .iter()
            .find(|(m, _)| m == metric)
            .map(|(_, v)| *v)
    }
}

/// The agent process of one run, killed by pid if still running when
/// dropped.
struct AgentProc {
    child: Child,
}

impl AgentProc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and up to 10 s for a clean exit, then SIGKILL.
    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = sys::kill(self.pid(), libc::SIGTERM);
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes the agent's config for `mode` and returns it with whether the
/// agent accepts the full-detail key.
fn write_config(agent_bin: &Path, dir: &Path, mode: Mode) -> Result<(PathBuf, bool)> {
    let path = dir.join(match mode {
        Mode::Default => "default.toml",
        Mode::FullDetail => "full-detail.toml",
    });
    if mode == Mode::Default {
        fs::write(&path, BASE_CONFIG)?;
        return Ok((path, true));
    }
    fs::write(&path, format!("{BASE_CONFIG}{FULL_DETAIL_CARBON}"))?;
    let check = Command::new(agent_bin)
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .output()
        .context("failed to run hyper-stats check-config")?;
    if check.status.success() {
        return Ok((path, true));
    }
    println!(
        "bench: the agent refuses the full-detail key ({}): {}",
        FULL_DETAIL_CARBON.trim(),
        String::from_utf8_lossy(&check.stderr).trim()
    );
    fs::write(&path, BASE_CONFIG)?;
    Ok((path, false))
}

/// The threads whose run-queue sums are checked: spread over the guests.
fn sampled_threads(load: &Load) -> Vec<schedstat::Thread> {
    let pids = load.pids();
    let mut out = Vec::new();
    let n = SAMPLED_THREADS.min(load.threads());
    for k in 0..n {
        let guest = (k as usize * pids.len()) / n as usize;
        let vcpu = k % load.vcpus;
        let pid = pids[guest];
        let Some(&(_, tid)) = synthetic::vcpu_threads(pid)
            .iter()
            .find(|(index, _)| *index == vcpu)
        else {
            continue;
        };
        out.push(schedstat::Thread {
            series: format!(
                "{}.vcpu.{vcpu}.runq_latency_us.sum",
                synthetic::guest_name(guest as u32)
            ),
            pid,
            tid,
            samples: Vec::new(),
        });
    }
    out
}

/// Runs the agent against `load` for `minutes` and measures it.
fn agent_run(
    agent_bin: &Path,
    dir: &Path,
    load: &Load,
    mode: Mode,
    minutes: f64,
    out: &mut String,
) -> Result<RunResult> {
    let threads = load.threads();
    let (config, detail_known) = write_config(agent_bin, dir, mode)?;
    let mut sampled = if mode == Mode::FullDetail {
        sampled_threads(load)
    } else {
        Vec::new()
    };
    let keys: BTreeSet<String> = sampled.iter().map(|t| t.series.clone()).collect();
    let counter = carbon::Counter::start(CARBON_PREFIX, keys, None)?;
    let total = Duration::from_secs_f64(minutes * 60.0);
    let log_path = dir.join(format!(
        "agent-{threads}-{}.log",
        if mode == Mode::Default {
            "default"
        } else {
            "detail"
        }
    ));
    let log = fs::File::create(&log_path)?;
    let child = Command::new(agent_bin)
        .arg("--config")
        .arg(&config)
        .args(["run", "--connect", "test:///default", "--carbon"])
        .arg(format!("127.0.0.1:{}", counter.port))
        .arg("--watch-pid")
        .arg(load.pid_list())
        .arg("--duration")
        .arg(agent_duration(total))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("failed to start hyper-stats")?;
    let mut agent = AgentProc { child };
    let title = match mode {
        Mode::Default => "default Carbon settings".to_owned(),
        Mode::FullDetail if detail_known => {
            format!("full detail ([carbon] {})", FULL_DETAIL_CARBON.trim())
        }
        Mode::FullDetail => {
            "full detail asked, key unknown to the agent: default settings".to_owned()
        }
    };
    emit(
        out,
        &format!(
            "\n### {title}, {minutes} min (agent pid {}, {} s warm-up)\n",
            agent.pid(),
            WARMUP.min(total / 2).as_secs()
        ),
    );
    emit(
        out,
        &format!(
            "{:>5} {:>9} {:>11} {:>12}",
            "min", "RSS MiB", "KiB/thread", "CPU ms/s"
        ),
    );

    let hz = super::probes::clock_ticks_per_s()?;
    let start = Instant::now();
    let start_unix = carbon::unix_now();
    // A run shorter than two warm-ups (a smoke run) measures its second half.
    let warmup = WARMUP.min(total / 2);
    let warm_unix = start_unix + warmup.as_secs_f64();
    let check_unix = start_unix + CHECK_FROM.as_secs_f64();
    let mut next_rss = start;
    let mut next_print = start + Duration::from_secs(60);
    let mut rss_samples: Vec<(f64, u64, u64)> = Vec::new();
    let mut at_warm: Option<(Instant, u64, u64)> = None;
    let mut minute_mark = (start, 0u64);
    while start.elapsed() < total {
        if let Some(status) = agent.child.try_wait()? {
            let tail = fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(10).collect();
            bail!(
                "hyper-stats exited early with {status}; last log lines:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        for t in &mut sampled {
            t.sample();
        }
        let now = Instant::now();
        if now >= next_rss {
            let rss = rss_kib(agent.pid())?;
            let ticks = super::probes::cpu_ticks(agent.pid())?;
            rss_samples.push((start.elapsed().as_secs_f64(), rss, ticks));
            if at_warm.is_none() && start.elapsed() >= warmup {
                at_warm = Some((now, ticks, counter.lines()));
            }
            next_rss += SAMPLE_RSS_EVERY;
        }
        // A row each minute, and one at the end of a run that does not end
        // on a whole minute.
        let last_round = start.elapsed() + schedstat::SAMPLE_EVERY >= total;
        if now >= next_print
            || (last_round && now.duration_since(minute_mark.0) > Duration::from_secs(5))
        {
            let (rss, ticks) = rss_samples.last().map_or((0, 0), |s| (s.1, s.2));
            let cpu_ms = (ticks - minute_mark.1) as f64 / hz * 1000.0
                / now.duration_since(minute_mark.0).as_secs_f64();
            minute_mark = (now, ticks);
            emit(
                out,
                &format!(
                    "{:>5.1} {:>9.1} {:>11.1} {:>12.2}",
                    start.elapsed().as_secs_f64() / 60.0,
                    rss as f64 / 1024.0,
                    rss as f64 / f64::from(threads),
                    cpu_ms
                ),
            );
            next_print += Duration::from_secs(60);
        }
        thread::sleep(schedstat::SAMPLE_EVERY);
    }
    // The last readings, with the agent still running.
    let rss_end = rss_kib(agent.pid())?;
    let rss_bpf_end = bpf_map_rss_kib(agent.pid())?;
    let ticks_end = super::probes::cpu_ticks(agent.pid())?;
    let lines_end = counter.lines();
    let end = Instant::now();
    let memlock = bpftool_memlock(agent.pid());
    agent.stop();
    let log = fs::read_to_string(&log_path).unwrap_or_default();

    let (warm_at, warm_ticks, warm_lines) = at_warm.unwrap_or((start, 0, 0));
    let span = end.duration_since(warm_at).as_secs_f64();
    let cpu_ms_per_s = (ticks_end - warm_ticks) as f64 / hz * 1000.0 / span;
    let points_per_s = (lines_end - warm_lines) as f64 / span;

    // The agent's own series after the warm-up.
    let (agent_last, mean_of, vcpu_series, bad) = counter.with_seen(|seen| {
        let last: Vec<(String, f64)> = seen
            .agent
            .iter()
            .filter_map(|(m, pts)| pts.last().map(|p| (m.clone(), p.1)))
            .collect();
        let mean = |metric: &str| -> Option<f64> {
            let pts: Vec<f64> = seen
                .agent
                .get(metric)?
                .iter()
                .filter(|p| p.0 as f64 >= warm_unix)
                .map(|p| p.1)
                .collect();
            (!pts.is_empty()).then(|| pts.iter().sum::<f64>() / pts.len() as f64)
        };
        let means = (mean("agent.ebpf.read_cpu_us"), mean("agent.rollup.cpu_us"));
        (last, means, seen.vcpu_series.len(), seen.bad_lines)
    });
    let checks: Vec<(String, Option<schedstat::Check>)> = counter.with_seen(|seen| {
        sampled
            .iter()
            .map(|t| {
                let points = seen.sampled.get(&t.series).map_or(&[][..], Vec::as_slice);
                (
                    t.series.clone(),
                    schedstat::compare(points, &t.samples, check_unix),
                )
            })
            .collect()
    });

    let trend = rss_trend_kib_per_min(&rss_samples);
    let mut text = String::new();
    let _ = writeln!(
        text,
        "\nRSS at the end: {:.1} MiB, {:.1} KiB per watched thread; trend over the second half {}",
        rss_end as f64 / 1024.0,
        rss_end as f64 / f64::from(threads),
        trend.map_or("n/a".to_owned(), |t| format!("{t:+.1} KiB/min"))
    );
    let _ = writeln!(
        text,
        "of that RSS, {:.1} MiB ({:.1} KiB per thread) are the kernel's BPF map pages the agent \
         reads in place (anon_inode:bpf-map in /proc/PID/smaps; the same pages as the kernel \
         map memory below); without them {:.1} KiB per thread",
        rss_bpf_end as f64 / 1024.0,
        rss_bpf_end as f64 / f64::from(threads),
        rss_end.saturating_sub(rss_bpf_end) as f64 / f64::from(threads)
    );
    let _ = writeln!(
        text,
        "agent CPU (utime+stime of /proc/PID/stat) after the warm-up: {cpu_ms_per_s:.2} ms/s \
         ({:.2}% of one core) over {span:.0} s",
        cpu_ms_per_s / 10.0
    );
    let (read, rollup) = mean_of;
    let fmt_opt = |v: Option<f64>| v.map_or("not reported".to_owned(), |v| format!("{v:.0} µs/s"));
    let _ = writeln!(
        text,
        "self-reported: reading the maps {}, rollup {}",
        fmt_opt(read),
        fmt_opt(rollup)
    );
    for metric in [
        "agent.ebpf.watched_threads",
        "agent.ebpf.slots",
        "agent.ebpf.unwatched_threads",
        "agent.ebpf.kernel_map_bytes",
        "agent.ebpf.dropped_events",
        "agent.carbon.dropped_points",
    ] {
        let v = agent_last
            .iter()
            .find(|(m, _)| m == metric)
            .map_or("not reported".to_owned(), |(_, v)| format!("{v:.0}"));
        let _ = writeln!(text, "  {metric} (last): {v}");
    }
    let _ = writeln!(
        text,
        "kernel map memory, bpftool map show (bytes_memlock of the agent's maps): {}",
        match memlock {
            Some((maps, bytes)) => format!(
                "{bytes} bytes in {maps} maps ({:.1} MiB)",
                bytes as f64 / 1048576.0
            ),
            None => "n/a (bpftool missing or no maps found)".to_owned(),
        }
    );
    let _ = writeln!(
        text,
        "points/s to Carbon after the warm-up: {points_per_s:.0} ({vcpu_series} per-vCPU run-queue series seen, {bad} bad lines)"
    );
    let slot_warnings = log
        .lines()
        .filter(|l| {
            l.to_lowercase()
                .contains("more vcpu threads than ebpf slots")
        })
        .count();
    let warnings = log.lines().filter(|l| l.contains("WARN")).count();
    let errors = log.lines().filter(|l| l.contains("ERROR")).count();
    let _ = writeln!(
        text,
        "agent log: {warnings} warnings ({slot_warnings} 'more vCPU threads than eBPF slots'), {errors} errors"
    );
    if !checks.is_empty() {
        let _ = writeln!(
            text,
            "\nrun-queue sum against /proc/PID/task/TID/schedstat field 2 (sampled every {} ms, \
             interpolated at the agent's reads, estimated as second + phase (the least transit of the \
             neighbouring lines); outside = beyond what reads anywhere in their bounds allow):",
            schedstat::SAMPLE_EVERY.as_millis()
        );
        let _ = writeln!(
            text,
            "{:<40} {:>8} {:>7} {:>12} {:>12} {:>8} {:>9} {:>5}",
            "series", "window s", "phase s", "agent µs", "kernel µs", "diff %", "outside %", "gaps"
        );
        for (series, check) in &checks {
            match check {
                Some(c) => {
                    let _ = writeln!(
                        text,
                        "{series:<40} {:>8.0} {:>7.3} {:>12.0} {:>12.0} {:>8.3} {:>9.3} {:>5}",
                        c.window_s,
                        c.phase_s,
                        c.agent_us,
                        c.kernel_us,
                        c.diff_percent(),
                        c.outside_percent(),
                        c.gaps
                    );
                }
                None => {
                    let _ = writeln!(text, "{series:<40} no points to compare");
                }
            }
        }
    }
    emit(out, text.trim_end());
    Ok(RunResult {
        rss_end_kib: rss_end,
        rss_bpf_end_kib: rss_bpf_end,
        read_us_per_s: read,
        rollup_us_per_s: rollup,
        points_per_s,
        agent_last,
        checks,
        detail_known,
    })
}

/// The agent's own `--duration`: the run plus [`AGENT_GRACE`], so an agent
/// whose bench was killed (Ctrl-C) stops by itself; the bench stops it by
/// pid before that.
pub(super) fn agent_duration(run: Duration) -> String {
    format!("{}s", (run + AGENT_GRACE).as_secs())
}

/// The part of a process' RSS that is BPF map memory mapped into it (the
/// agent reads its per-slot arrays in place): the kernel's own pages,
/// already counted in the kernel map memory, KiB. From `/proc/PID/smaps`.
pub(super) fn bpf_map_rss_kib(pid: u32) -> Result<u64> {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps"))
        .with_context(|| format!("failed to read /proc/{pid}/smaps"))?;
    let mut in_map = false;
    let mut total = 0;
    for line in smaps.lines() {
        let header = line
            .split_whitespace()
            .next()
            .is_some_and(|range| range.contains('-') && !range.ends_with(':'));
        if header {
            in_map = line.ends_with("anon_inode:bpf-map");
        } else if in_map && let Some(v) = line.strip_prefix("Rss:") {
            total += v
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap_or(0);
        }
    }
    Ok(total)
}

/// `VmRSS` of a process, KiB.
pub(super) fn rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("failed to read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

/// The RSS slope over the second half of the samples `(s, KiB, _)`, KiB per
/// minute (least squares); `None` with fewer than 3 samples there.
pub(super) fn rss_trend_kib_per_min(samples: &[(f64, u64, u64)]) -> Option<f64> {
    let half = &samples[samples.len() / 2..];
    if half.len() < 3 {
        return None;
    }
    let n = half.len() as f64;
    let mx = half.iter().map(|s| s.0).sum::<f64>() / n;
    let my = half.iter().map(|s| s.1 as f64).sum::<f64>() / n;
    let sxy: f64 = half.iter().map(|s| (s.0 - mx) * (s.1 as f64 - my)).sum();
    let sxx: f64 = half.iter().map(|s| (s.0 - mx).powi(2)).sum();
    (sxx > 0.0).then(|| sxy / sxx * 60.0)
}

/// The CPU `pids` use together over `span`, in percent of one core.
pub(super) fn process_cpu_percent(pids: &[u32], span: Duration) -> Result<f64> {
    let hz = super::probes::clock_ticks_per_s()?;
    let sum = |pids: &[u32]| -> u64 {
        pids.iter()
            .filter_map(|&p| super::probes::cpu_ticks(p).ok())
            .sum()
    };
    let (t0, before) = (Instant::now(), sum(pids));
    thread::sleep(span);
    let after = sum(pids);
    Ok((after - before) as f64 / hz / t0.elapsed().as_secs_f64() * 100.0)
}

/// The maps `pid` holds (through the `map_id` of its file descriptors)
/// and the sum of their `bytes_memlock` as `bpftool map show` reports it.
pub(super) fn bpftool_memlock(pid: u32) -> Option<(usize, u64)> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fdinfo")).ok()?.flatten() {
        let Ok(info) = fs::read_to_string(entry.path()) else {
            continue;
        };
        if let Some(id) = info
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    let mut bytes = 0;
    for id in &ids {
        let out = Command::new("bpftool")
            .args(["map", "show", "id", &id.to_string(), "--json"])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        bytes += super::probes::json_u64(&String::from_utf8_lossy(&out.stdout), "bytes_memlock")
            .unwrap_or(0);
    }
    (!ids.is_empty()).then_some((ids.len(), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_trend_is_the_slope_of_the_second_half() {
        // Flat 100 MiB for 5 min, then growing 60 KiB per minute.
        let samples: Vec<(f64, u64, u64)> = (0..60)
            .map(|i| {
                let s = f64::from(i) * 10.0;
                let kib = if i < 30 {
                    102_400
                } else {
                    102_400 + (i - 30) * 10
                };
                (s, kib as u64, 0)
            })
            .collect();
        let t = rss_trend_kib_per_min(&samples).unwrap();
        assert!((t - 60.0).abs() < 1e-6, "{t}");
        assert_eq!(rss_trend_kib_per_min(&samples[..4]), None);
    }

    #[test]
    fn reads_own_rss() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        // This process maps no BPF map.
        assert_eq!(bpf_map_rss_kib(std::process::id()).unwrap(), 0);
    }
}
