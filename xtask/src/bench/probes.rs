//! `cargo xtask bench probes`: what the agent's eBPF probes cost the
//! kernel per scheduler event, next to Debian's libbpf-tools `runqlat` in
//! the same run and workload, and what the agent costs in CPU.
//!
//! # What runs
//! The lab with [`GUESTS`] guests, one busy loop (so the scheduler also
//! preempts), the agent (release build, eBPF object required, its JSON
//! read back only to count the vCPUs it reports on, no query socket) and
//! `runqlat` with no filter (every task), all at once, with
//! `kernel.bpf_stats_enabled=1` so that the kernel counts each program's
//! runs and run time.
//!
//! # What is measured
//! After [`WARMUP`], two snapshots [`MEASURE`] apart of every BPF program
//! the agent's and runqlat's processes hold (found through the `prog_id`
//! of their file descriptors, so other probes loaded on the machine do not
//! count), read with `bpftool prog show id N --json`: the difference in
//! `run_time_ns` over the difference in `run_cnt` is the cost per event.
//! The agent's CPU is the difference in `utime + stime` of
//! `/proc/PID/stat` over the same span.
//!
//! # Restoring
//! `kernel.bpf_stats_enabled` gets its previous value back, runqlat, the
//! busy loop and the agent are stopped by their pids, and the lab goes
//! back to 2 guests (or down, if it was down), whether the bench succeeded
//! or not.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::build_ebpf;
use crate::lab;
use crate::util::workspace_root;

/// Guests the agent samples and probes during the bench.
const GUESTS: u32 = 8;
/// Guests the lab is left with afterwards (what the tests use).
const GUESTS_AFTER: u32 = 2;
/// From starting the agent and runqlat to the first snapshot: the agent
/// must have found every guest and both must have attached.
const WARMUP: Duration = Duration::from_secs(8);
/// Between the two snapshots.
const MEASURE: Duration = Duration::from_secs(30);
/// The sysctl that makes the kernel count BPF program runs and run time.
const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// The scheduler hooks both tools attach to, in report order.
const HOOKS: [&str; 3] = ["sched_switch", "sched_wakeup", "sched_wakeup_new"];

pub fn run() -> Result<()> {
    let was_up = lab::is_up()?;
    let agent_bin = build_ebpf::release_agent()?;
    let result = with_lab(&agent_bin);
    let after = if was_up {
        lab::run(lab::Action::Up {
            guests: GUESTS_AFTER,
        })
    } else {
        lab::run(lab::Action::Down)
    };
    let report = result?;
    after?;
    super::save("probes", &report)
}

/// Sets `kernel.bpf_stats_enabled` and puts the previous value back when
/// dropped.
struct BpfStats {
    previous: String,
}

impl BpfStats {
    fn enable() -> Result<Self> {
        let previous = fs::read_to_string(BPF_STATS)
            .with_context(|| format!("failed to read {BPF_STATS}"))?
            .trim()
            .to_owned();
        fs::write(BPF_STATS, "1").with_context(|| format!("failed to write 1 to {BPF_STATS}"))?;
        Ok(Self { previous })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(e) = fs::write(BPF_STATS, &self.previous) {
            eprintln!(
                "bench: failed to restore {BPF_STATS} to {}: {e}",
                self.previous
            );
        }
    }
}

/// A process this bench started, stopped by its pid when dropped.
struct Started {
    name: &'static str,
    child: Child,
}

impl Started {
    fn spawn(name: &'static str, cmd: &mut Command) -> Result<Self> {
        let child = cmd
            .spawn()
            .with_context(|| format!("failed to start {name}: {cmd:?}"))?;
        Ok(Self { name, child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (a `kill` name such as `INT`) and waits up to 10 s
    /// for the process to exit.
    fn stop(&mut self, signal: &str) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = self.pid().to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .context("failed to run kill")?;
        if !status.success() {
            bail!("kill -{signal} {pid} ({}) failed", self.name);
        }
        let since = Instant::now();
        while since.elapsed() < Duration::from_secs(10) {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "{} (pid {pid}) did not stop 10 s after SIG{signal}",
            self.name
        )
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One BPF program at one instant.
#[derive(Debug, Clone)]
struct Prog {
    name: String,
    kind: String,
    run_time_ns: u64,
    run_cnt: u64,
    recursion_misses: u64,
}

/// The programs a process holds file descriptors of, by id.
fn programs_of(pid: u32) -> Result<BTreeMap<u32, Prog>> {
    let fd_dir = format!("/proc/{pid}/fdinfo");
    let mut ids = Vec::new();
    for entry in fs::read_dir(&fd_dir).with_context(|| format!("failed to read {fd_dir}"))? {
        let Ok(info) = fs::read_to_string(entry?.path()) else {
            continue;
        };
        if let Some(id) = info
            .lines()
            .find_map(|l| l.strip_prefix("prog_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    let mut progs = BTreeMap::new();
    for id in ids {
        let out = Command::new("bpftool")
            .args(["prog", "show", "id", &id.to_string(), "--json"])
            .output()
            .context("failed to run bpftool (cargo xtask setup installs it)")?;
        if !out.status.success() {
            bail!(
                "bpftool prog show id {id} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let json = String::from_utf8_lossy(&out.stdout);
        progs.insert(
            id,
            Prog {
                name: json_str(&json, "name").unwrap_or_default(),
                kind: json_str(&json, "type").unwrap_or_default(),
                run_time_ns: json_u64(&json, "run_time_ns").unwrap_or(0),
                run_cnt: json_u64(&json, "run_cnt").unwrap_or(0),
                recursion_misses: json_u64(&json, "recursion_misses").unwrap_or(0),
            },
        );
    }
    Ok(progs)
}

/// The raw text of the top-level field `key` of bpftool's one-object JSON
/// (its fields are flat strings and numbers, plus arrays we do not read).
fn json_raw<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &json[start..];
    let end = rest.find([',', '}'])?;
    Some(rest[..end].trim())
}

fn json_str(json: &str, key: &str) -> Option<String> {
    Some(json_raw(json, key)?.trim_matches('"').to_owned())
}

pub(super) fn json_u64(json: &str, key: &str) -> Option<u64> {
    json_raw(json, key)?.parse().ok()
}

/// Which scheduler hook a program serves, from its name (runqlat names its
/// raw_tp fallbacks `handle_<hook>`; the kernel keeps 15 characters).
fn hook_of(name: &str) -> Option<&'static str> {
    let name = name.strip_prefix("handle_").unwrap_or(name);
    if name.starts_with("sched_sw") {
        Some("sched_switch")
    } else if name.starts_with("sched_wakeup_n") {
        Some("sched_wakeup_new")
    } else if name == "sched_wakeup" {
        Some("sched_wakeup")
    } else {
        None
    }
}

/// `utime + stime` of a process, in clock ticks.
pub(super) fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("failed to read /proc/{pid}/stat"))?;
    // Fields after the `(comm)`, which may hold spaces: state is field 3,
    // utime 14, stime 15.
    let after = &stat[stat.rfind(')').context("malformed stat")? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .context("short stat")?
            .parse()
            .context("bad stat field")
    };
    Ok(field(14)? + field(15)?)
}

pub(super) fn clock_ticks_per_s() -> Result<f64> {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("failed to run getconf CLK_TCK")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("getconf CLK_TCK printed no number")
}

/// One side's programs between the two snapshots.
struct Cost {
    /// Per hook: runs, ns, recursion misses.
    per_hook: BTreeMap<&'static str, (u64, u64, u64)>,
    /// Every program with its delta, for the raw table.
    raw: Vec<(u32, Prog)>,
}

fn cost(before: &BTreeMap<u32, Prog>, after: &BTreeMap<u32, Prog>) -> Cost {
    let mut per_hook = BTreeMap::new();
    let mut raw = Vec::new();
    for (id, a) in after {
        let b = before.get(id);
        let d = Prog {
            name: a.name.clone(),
            kind: a.kind.clone(),
            run_time_ns: a.run_time_ns - b.map_or(0, |b| b.run_time_ns),
            run_cnt: a.run_cnt - b.map_or(0, |b| b.run_cnt),
            recursion_misses: a.recursion_misses - b.map_or(0, |b| b.recursion_misses),
        };
        if let Some(hook) = hook_of(&d.name) {
            let e = per_hook.entry(hook).or_insert((0, 0, 0));
            e.0 += d.run_cnt;
            e.1 += d.run_time_ns;
            e.2 += d.recursion_misses;
        }
        raw.push((*id, d));
    }
    Cost { per_hook, raw }
}

fn per_event(runs: u64, ns: u64) -> f64 {
    if runs == 0 {
        f64::NAN
    } else {
        ns as f64 / runs as f64
    }
}

/// Brings the lab to [`GUESTS`] and runs the measurement.
fn with_lab(agent_bin: &Path) -> Result<String> {
    lab::run(lab::Action::Up { guests: GUESTS })?;
    let mut report = super::header()?;
    let stats = BpfStats::enable()?;

    // The agent without its query socket: the default one may belong to
    // an agent someone else runs.
    let config_dir = workspace_root().join("target/bench-probes");
    fs::create_dir_all(&config_dir)?;
    let config = config_dir.join("hyper-stats.toml");
    fs::write(&config, "[query]\nenabled = false\n")?;

    let mut busy = Started::spawn(
        "busy loop",
        Command::new("sh").args(["-c", "while :; do :; done"]),
    )?;
    let total = WARMUP + MEASURE + Duration::from_secs(5);
    let mut agent = Started::spawn(
        "hyper-stats",
        Command::new(agent_bin)
            .arg("--config")
            .arg(&config)
            .args(["run", "--output", "json", "--duration"])
            .arg(format!("{}s", total.as_secs()))
            .stdout(Stdio::piped()),
    )?;
    // Which vCPUs the agent reports on, and how many datapoints: proof
    // that it probes every guest while it is measured.
    let seen = Arc::new(Mutex::new((BTreeSet::<String>::new(), 0u64)));
    let reader = {
        let stdout = agent.child.stdout.take().context("agent stdout")?;
        let seen = Arc::clone(&seen);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                seen.1 += 1;
                if line.contains(".runq_latency_us.count\"")
                    && let (Some(domain), Some(metric)) =
                        (json_str(&line, "domain"), json_str(&line, "metric"))
                    && metric.starts_with("vcpu.")
                {
                    seen.0.insert(format!("{domain} {metric}"));
                }
            }
        })
    };
    let mut runqlat = Started::spawn(
        "runqlat",
        Command::new("runqlat")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    println!(
        "bench: agent pid {}, runqlat pid {}, busy loop pid {}; {} s warm-up, {} s measured",
        agent.pid(),
        runqlat.pid(),
        busy.pid(),
        WARMUP.as_secs(),
        MEASURE.as_secs()
    );
    thread::sleep(WARMUP);

    let hz = clock_ticks_per_s()?;
    let lines0 = seen.lock().unwrap_or_else(|e| e.into_inner()).1;
    let t0 = Instant::now();
    let (ours0, theirs0, ticks0) = (
        programs_of(agent.pid())?,
        programs_of(runqlat.pid())?,
        cpu_ticks(agent.pid())?,
    );
    thread::sleep(MEASURE);
    let (ours1, theirs1, ticks1) = (
        programs_of(agent.pid())?,
        programs_of(runqlat.pid())?,
        cpu_ticks(agent.pid())?,
    );
    let wall = t0.elapsed().as_secs_f64();
    let (vcpus, lines1) = {
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        (seen.0.len(), seen.1)
    };

    runqlat.stop("INT")?;
    agent.stop("TERM")?;
    let _ = reader.join();
    busy.stop("KILL")?;
    drop(stats);

    if ours1.is_empty() {
        bail!("the agent holds no BPF program: were its probes off? (run it by hand to see why)");
    }
    if theirs1.is_empty() {
        bail!("runqlat holds no BPF program");
    }
    let (ours, theirs) = (cost(&ours0, &ours1), cost(&theirs0, &theirs1));
    let agent_cpu = (ticks1 - ticks0) as f64 / hz / wall * 100.0;

    let mut out = format!(
        "\n{GUESTS} lab guests, 1 busy loop, agent (release, probes on, JSON into a pipe the bench reads) and \
         runqlat (no filter) side by side; kernel.bpf_stats_enabled=1; {wall:.1} s measured \
         after {} s of warm-up\n\n",
        WARMUP.as_secs()
    );
    out.push_str(&format!(
        "{:<18} {:>12} {:>10} {:>12} {:>10} {:>12} {:>8}\n",
        "hook", "ours runs/s", "ours ns", "runqlat r/s", "rql ns", "ours/runqlat", "misses"
    ));
    let (mut our_runs, mut our_ns, mut their_runs, mut their_ns) = (0, 0, 0, 0);
    for hook in HOOKS {
        let (or, on, om) = ours.per_hook.get(hook).copied().unwrap_or_default();
        let (tr, tn, tm) = theirs.per_hook.get(hook).copied().unwrap_or_default();
        our_runs += or;
        our_ns += on;
        their_runs += tr;
        their_ns += tn;
        out.push_str(&format!(
            "{hook:<18} {:>12.0} {:>10.0} {:>12.0} {:>10.0} {:>12.2} {:>8}\n",
            or as f64 / wall,
            per_event(or, on),
            tr as f64 / wall,
            per_event(tr, tn),
            per_event(or, on) / per_event(tr, tn),
            format!("{om}/{tm}")
        ));
    }
    out.push_str(&format!(
        "{:<18} {:>12.0} {:>10.0} {:>12.0} {:>10.0} {:>12.2}\n",
        "all three",
        our_runs as f64 / wall,
        per_event(our_runs, our_ns),
        their_runs as f64 / wall,
        per_event(their_runs, their_ns),
        per_event(our_runs, our_ns) / per_event(their_runs, their_ns),
    ));
    out.push_str(&format!(
        "\nkernel time in the programs: ours {:.2}% of one core, runqlat {:.2}%\n",
        our_ns as f64 / 1e9 / wall * 100.0,
        their_ns as f64 / 1e9 / wall * 100.0
    ));
    out.push_str(&format!(
        "agent CPU (utime+stime of /proc/{}/stat): {agent_cpu:.2}% of one core with {GUESTS} guests, \
         {vcpus} vCPUs probed, {:.0} datapoints/s\n",
        agent.pid(),
        (lines1 - lines0) as f64 / wall
    ));
    out.push_str("\nraw deltas (id, type, name, runs, run_time_ns, recursion misses):\n");
    for (side, c) in [("ours", &ours), ("runqlat", &theirs)] {
        for (id, p) in &c.raw {
            out.push_str(&format!(
                "  {side:<8} {id:>6} {:<12} {:<16} {:>10} {:>14} {:>6}\n",
                p.kind, p.name, p.run_cnt, p.run_time_ns, p.recursion_misses
            ));
        }
    }
    print!("{out}");
    report.push_str(&out);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_flat_fields_of_bpftool_json() {
        let json = r#"{"id":812,"type":"tracepoint","name":"sched_switch","tag":"ab","gpl_compatible":true,"run_time_ns":123456,"run_cnt":789,"map_ids":[1,2],"btf_id":9}"#;
        assert_eq!(json_str(json, "name").as_deref(), Some("sched_switch"));
        assert_eq!(json_str(json, "type").as_deref(), Some("tracepoint"));
        assert_eq!(json_u64(json, "run_time_ns"), Some(123_456));
        assert_eq!(json_u64(json, "run_cnt"), Some(789));
        assert_eq!(json_u64(json, "recursion_misses"), None);
    }

    #[test]
    fn programs_map_to_hooks_by_name() {
        let cases = [
            ("sched_switch", Some("sched_switch")),
            ("sched_wakeup", Some("sched_wakeup")),
            ("sched_wakeup_ne", Some("sched_wakeup_new")),
            ("handle_sched_sw", Some("sched_switch")),
            ("kvm_exit", None),
        ];
        for (name, want) in cases {
            assert_eq!(hook_of(name), want, "{name}");
        }
    }
}
