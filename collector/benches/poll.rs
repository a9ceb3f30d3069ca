//! What one bulk-stats call costs, per stats group and for all groups,
//! against the lab's libvirtd: wall time, the agent's own CPU time, and
//! libvirtd's CPU time, per call and per domain.
//!
//! Run with `cargo bench -p hyper-stats --bench poll` while the lab is up
//! (`cargo xtask lab up`). It needs running domains and fails loudly when
//! there are none. `HS_BENCH_URI` (default `qemu:///system`) and
//! `HS_BENCH_CALLS` (default 200) change the target and the sample size.
//!
//! - Wall time: p50 and p90 over the calls.
//! - Agent CPU: this process's CPU time (`CLOCK_PROCESS_CPUTIME_ID`: the
//!   calling thread plus libvirt's event loop thread), mean per call. This
//!   is what the agent pays to send the request and decode the reply.
//!   "caller" is the calling thread alone (`CLOCK_THREAD_CPUTIME_ID`):
//!   the rest is libvirt's event loop thread waking up for the reply.
//! - libvirtd CPU: utime + stime of the `libvirtd` (or `virtqemud`)
//!   process from /proc over the whole run, mean per call. Clock-tick
//!   resolution (10 ms) over hundreds of calls; it includes any other
//!   client's calls made at the same time.
//!
//! The work QEMU does to answer monitor queries (cpu, balloon, vcpu, block)
//! is in neither number.

use std::ffi::c_long;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper_stats::sources::libvirt::ffi::Connection;
use hyper_stats::sources::libvirt::groups::{Group, Groups};

/// Calls made and thrown away before each measured group, so that caches
/// and connections are warm.
const WARMUP_CALLS: usize = 5;

/// Measured calls per group unless `HS_BENCH_CALLS` says otherwise: enough
/// for a stable p90 and for libvirtd's 10 ms CPU ticks to average out.
const DEFAULT_CALLS: usize = 200;

fn main() {
    let uri = std::env::var("HS_BENCH_URI").unwrap_or_else(|_| "qemu:///system".to_owned());
    let calls: usize = std::env::var("HS_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CALLS);

    let conn =
        Connection::open(&uri).unwrap_or_else(|e| panic!("{e}\nis the lab up? cargo xtask lab up"));
    let all: Groups = Group::ALL.into_iter().collect();
    let first = conn
        .all_domain_stats(all)
        .unwrap_or_else(|e| panic!("bulk stats from {uri}: {e}"));
    let domains = first.len();
    assert!(
        domains > 0,
        "no running domains on {uri}: nothing to measure\nis the lab up? cargo xtask lab up"
    );
    let names: Vec<&str> = first.iter().map(|r| r.name.as_str()).collect();
    // The test driver runs in-process: no daemon to measure.
    let daemon = if uri.starts_with("test:") {
        None
    } else {
        find_daemon()
    };

    println!("hyper-stats poll bench");
    println!(
        "  date {} (unix s), kernel {}, {} CPUs",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "?".into()),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!("  uri {uri}, {domains} domains: {names:?}");
    println!(
        "  {calls} calls per group after {WARMUP_CALLS} warm-up calls; libvirtd pid {}",
        daemon.map_or_else(|| "not found".to_owned(), |p| p.to_string())
    );
    println!();
    println!(
        "{:<8} {:>10} {:>9} {:>9} {:>11} {:>10} {:>10} {:>11} {:>11} {:>11}",
        "group",
        "fields/dom",
        "p50 ms",
        "p90 ms",
        "p50/dom ms",
        "agent us",
        "caller us",
        "agent/dom",
        "libvirtd ms",
        "lvd/dom ms"
    );

    let mut cases: Vec<(String, Groups)> = Group::ALL
        .into_iter()
        .map(|g| (g.name().to_owned(), Groups::from_iter([g])))
        .collect();
    cases.push(("all".to_owned(), all));

    for (label, groups) in cases {
        for _ in 0..WARMUP_CALLS {
            conn.all_domain_stats(groups).expect("warm-up call");
        }
        let mut walls = Vec::with_capacity(calls);
        let mut fields = 0;
        let mut seen_domains = 0;
        let daemon_before = daemon.and_then(daemon_cpu);
        let cpu_before = process_cpu();
        let thread_before = thread_cpu();
        for _ in 0..calls {
            let t = Instant::now();
            let recs = conn
                .all_domain_stats(groups)
                .unwrap_or_else(|e| panic!("bulk stats ({label}): {e}"));
            walls.push(t.elapsed());
            seen_domains = recs.len();
            fields = recs.iter().map(|r| r.params.len()).sum::<usize>();
        }
        let agent = process_cpu().saturating_sub(cpu_before);
        let caller = thread_cpu().saturating_sub(thread_before);
        let daemon_used = match (daemon_before, daemon.and_then(daemon_cpu)) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        assert!(
            seen_domains == domains,
            "domain count changed during the run"
        );

        walls.sort();
        let p50 = ms(percentile(&walls, 50));
        let p90 = ms(percentile(&walls, 90));
        let n = calls as f64;
        let d = domains as f64;
        let agent_us = agent.as_secs_f64() * 1e6 / n;
        let caller_us = caller.as_secs_f64() * 1e6 / n;
        let lvd = daemon_used.map(|c| c.as_secs_f64() * 1e3 / n);
        println!(
            "{:<8} {:>10} {:>9.3} {:>9.3} {:>11.3} {:>10.1} {:>10.1} {:>11.1} {:>11} {:>11}",
            label,
            fields / domains,
            p50,
            p90,
            p50 / d,
            agent_us,
            caller_us,
            agent_us / d,
            lvd.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}")),
            lvd.map_or_else(|| "-".to_owned(), |v| format!("{:.2}", v / d)),
        );
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let i = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// CPU time of this whole process (all threads).
fn process_cpu() -> Duration {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// CPU time of the calling thread only.
fn thread_cpu() -> Duration {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn cpu_clock(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and a valid out pointer.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime({clock})");
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// The pid of the daemon that answers `qemu:///system`.
fn find_daemon() -> Option<u32> {
    let mut found = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        match comm.trim() {
            "libvirtd" => return Some(pid),
            "virtqemud" => found = Some(pid),
            _ => {}
        }
    }
    found
}

/// utime + stime of `pid`, from /proc/PID/stat.
fn daemon_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz: c_long = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0)?;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}
