//! Integration tests of the libvirt source against the lab: a real
//! libvirtd with real QEMU/TCG guests `hs-lab-N`, started by
//! `cargo xtask lab up` (which `cargo xtask test` does before running
//! these). They drive the real `hyper-stats` binary and read its JSON
//! output.
//!
//! They are `#[ignore]`d so that a plain `cargo test` needs no daemon; CI
//! runs them through `cargo xtask test`, one at a time, because they stop
//! and start guests and libvirtd.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::{Agent, Point, now_unix, virsh};

/// The running lab guests and their vCPU counts.
fn lab_guests() -> BTreeMap<String, u32> {
    common::lab_guests()
        .into_iter()
        .map(|n| {
            let vcpus = virsh(&["vcpucount", &n, "--live", "--active"])
                .trim()
                .parse()
                .unwrap();
            (n, vcpus)
        })
        .collect()
}

fn values<'a>(points: &'a [Point], domain: &str, metric: &str) -> Vec<&'a Point> {
    points
        .iter()
        .filter(|p| p.domain == domain && p.metric == metric)
        .collect()
}

#[test]
#[ignore = "needs the lab: cargo xtask test"]
fn every_guest_shows_cpu_disk_and_net_within_10s() {
    let guests = lab_guests();
    let points = Agent::json()
        .args(&["--duration", "10s"])
        .start()
        .wait()
        .points;
    for (guest, vcpus) in &guests {
        let cpu = values(&points, guest, "cpu.time_percent");
        assert!(!cpu.is_empty(), "{guest}: no cpu.time_percent");
        for p in &cpu {
            assert!(
                p.value > 0.0 && p.value <= 100.0 * f64::from(*vcpus) + 5.0,
                "{guest}: cpu.time_percent {} outside (0, {}]",
                p.value,
                100 * vcpus
            );
        }
        for n in 0..*vcpus {
            let metric = format!("vcpu.{n}.time_percent");
            let v = values(&points, guest, &metric);
            assert!(!v.is_empty(), "{guest}: no {metric}");
            assert!(
                v.iter()
                    .all(|p| p.value > 0.0 && p.value <= 100.0 * f64::from(*vcpus)),
                "{guest}: {metric} out of range: {:?}",
                v.iter().map(|p| p.value).collect::<Vec<_>>()
            );
            assert!(!values(&points, guest, &format!("vcpu.{n}.delay_percent")).is_empty());
        }
        let disk = values(&points, guest, "block.vda.wr.bytes_per_s");
        assert!(
            disk.iter().any(|p| p.value > 0.0),
            "{guest}: no disk writes seen: {disk:?}"
        );
        let tap = format!("net.tap-{guest}.tx.bytes_per_s");
        let net = values(&points, guest, &tap);
        assert!(
            net.iter().any(|p| p.value > 0.0),
            "{guest}: no {tap} > 0: {net:?}"
        );
        assert!(!values(&points, guest, "balloon.current_bytes").is_empty());
        // One cpu sample per second, no gaps: 10 s run, first rate after 2 s.
        assert!(
            cpu.len() >= 7,
            "{guest}: only {} cpu samples in 10 s",
            cpu.len()
        );
    }
    // UUIDs identify domains; every guest has exactly one.
    let uuids: BTreeSet<(&str, &str)> = points
        .iter()
        .map(|p| (p.domain.as_str(), p.uuid.as_str()))
        .collect();
    assert_eq!(uuids.len(), guests.len(), "{uuids:?}");
}

#[test]
#[ignore = "needs the lab: cargo xtask test"]
fn destroyed_guest_is_retired_and_restarted_guest_returns() {
    let guests = lab_guests();
    let victim = guests.keys().last().unwrap().clone();
    let mut agent = Agent::json().start();
    std::thread::sleep(Duration::from_secs(4));
    virsh(&["destroy", &victim]);
    let destroyed_at = now_unix();
    std::thread::sleep(Duration::from_secs(4));
    let before_start = agent.points();
    virsh(&["start", &victim]);
    let started_at = now_unix();
    std::thread::sleep(Duration::from_secs(6));
    assert!(agent.is_running(), "agent died");
    let points = agent.points();

    let victim_ts: Vec<f64> = values(&before_start, &victim, "state.code")
        .iter()
        .map(|p| p.ts)
        .collect();
    assert!(!victim_ts.is_empty(), "victim never sampled before destroy");
    let last = victim_ts.iter().cloned().fold(f64::MIN, f64::max);
    assert!(
        last <= destroyed_at + 1.5,
        "series of {victim} continued {}s after destroy",
        last - destroyed_at
    );
    let back: Vec<&Point> = values(&points, &victim, "state.code")
        .into_iter()
        .filter(|p| p.ts > started_at)
        .collect();
    assert!(
        back.len() >= 3,
        "{victim} not back after virsh start: {back:?}"
    );
    assert!(
        back.iter().all(|p| p.value == 1.0),
        "state.code should be 1 (running)"
    );
    // The other guests never stopped.
    for other in guests.keys().filter(|g| **g != victim) {
        let ts: Vec<f64> = values(&points, other, "state.code")
            .iter()
            .map(|p| p.ts)
            .collect();
        assert!(ts.len() >= 12, "{other}: only {} samples", ts.len());
    }
    // No negative or absurd values across the restart.
    for p in values(&points, &victim, "cpu.time_percent") {
        assert!(
            p.value >= 0.0 && p.value < 1000.0,
            "{victim}: cpu.time_percent {}",
            p.value
        );
    }
    // Leave the lab as we found it: wait until the guest's init runs again.
    lab(&["up", "--guests", &guests.len().to_string()]);
}

#[test]
#[ignore = "needs the lab: cargo xtask test"]
fn agent_survives_libvirtd_restart() {
    let guests = lab_guests();
    let guest = guests.keys().next().unwrap().clone();
    let mut agent = Agent::json().start();
    std::thread::sleep(Duration::from_secs(4));

    let killed_at = now_unix();
    lab(&["crash-libvirtd"]);
    std::thread::sleep(Duration::from_secs(5));
    assert!(agent.is_running(), "agent died when libvirtd died");
    lab(&["up", "--guests", &guests.len().to_string()]);
    let back_at = now_unix();
    let deadline = Instant::now() + Duration::from_secs(15);
    let resumed = loop {
        let pts = agent.points();
        let after: Vec<f64> = values(&pts, &guest, "state.code")
            .iter()
            .map(|p| p.ts)
            .filter(|ts| *ts > back_at)
            .collect();
        if let Some(first) = after.first() {
            break *first;
        }
        assert!(
            Instant::now() < deadline,
            "no samples within 15 s of libvirtd restart"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "libvirtd back at {back_at:.3}, first sample at {resumed:.3}: {:.2}s",
        resumed - back_at
    );
    assert!(
        resumed - back_at <= 2.0 + 1.0,
        "resumed {:.2}s after libvirtd was back",
        resumed - back_at
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(agent.is_running());

    // Samples were lost only during the outage: every whole second before
    // the kill and after the first sample again has one.
    let pts = agent.points();
    let seconds: BTreeSet<i64> = values(&pts, &guest, "state.code")
        .iter()
        .map(|p| p.ts.floor() as i64)
        .collect();
    let first = *seconds.first().unwrap();
    let last = *seconds.last().unwrap();
    let missing: Vec<i64> = (first..=last)
        .filter(|s| !seconds.contains(s))
        .filter(|s| (*s as f64) < killed_at - 1.0 || (*s as f64) > resumed + 0.5)
        .collect();
    assert!(
        missing.is_empty(),
        "seconds missing outside the outage: {missing:?}"
    );
}

fn lab(args: &[&str]) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["run", "--quiet", "--package", "xtask", "--", "lab"])
        .args(args)
        .status()
        .expect("cargo xtask lab runs");
    assert!(status.success(), "cargo xtask lab {args:?} failed");
}

/// The agent's own series reach the JSON output once a second, apart from
/// every domain: libvirt poll failures (none on a healthy lab), values the
/// rollup clamped, and what the eBPF programs dropped or clamped.
#[test]
#[ignore = "needs the lab: cargo xtask test"]
fn agent_reports_its_own_series_each_second() {
    let mut agent = Agent::json().start();
    let deadline = Instant::now() + Duration::from_secs(20);
    let wanted = [
        "agent.libvirt.poll_failures",
        "agent.rollup.clamped_values",
        "agent.ebpf.dropped_events",
        "agent.ebpf.clamped_events",
    ];
    let seconds = |points: &[Point], metric: &str| -> BTreeSet<i64> {
        points
            .iter()
            .filter(|p| p.metric == metric)
            .map(|p| p.ts.floor() as i64)
            .collect()
    };
    let points = loop {
        let points = agent.agent_points();
        if wanted.iter().all(|m| seconds(&points, m).len() >= 4) {
            break points;
        }
        assert!(
            Instant::now() < deadline && agent.is_running(),
            "not every agent series in 4 seconds within 20 s: {:?}",
            points.iter().map(|p| &p.metric).collect::<BTreeSet<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(points.iter().all(|p| p.domain.is_empty()));
    assert!(points.iter().all(|p| p.metric.starts_with("agent.")));
    let failures: f64 = points
        .iter()
        .filter(|p| p.metric == "agent.libvirt.poll_failures")
        .map(|p| p.value)
        .sum();
    assert_eq!(failures, 0.0, "libvirt polls failed on a healthy lab");
    // None of them is a domain's series.
    assert!(
        !agent
            .points()
            .iter()
            .any(|p| p.metric.starts_with("agent."))
    );
}

/// Resumes a stopped process when dropped, so a failing test never leaves
/// a lab guest frozen.
struct Frozen(i32);

impl Frozen {
    /// Stops the QEMU process of `guest` (SIGSTOP by the pid libvirt wrote).
    fn guest(guest: &str) -> Frozen {
        let pid: i32 = std::fs::read_to_string(format!("/run/libvirt/qemu/{guest}.pid"))
            .expect("QEMU pid file")
            .trim()
            .parse()
            .expect("a pid");
        // SAFETY: kill(2) on the lab's QEMU process; no memory involved.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// The unix seconds in which `points` hold `metric` of `domain`.
fn seconds_of(points: &[Point], domain: &str, metric: &str) -> BTreeSet<i64> {
    values(points, domain, metric)
        .iter()
        .map(|p| p.ts.floor() as i64)
        .collect()
}

/// One guest's QEMU stops answering (SIGSTOP) for 15 s: every other guest
/// keeps one point a second of every group, the frozen guest keeps the
/// groups that never ask QEMU, and its monitor groups are back within 2 s
/// of it answering again.
#[test]
#[ignore = "needs the lab: cargo xtask test"]
fn a_frozen_guest_costs_only_its_own_monitor_groups() {
    let guests = lab_guests();
    let frozen = guests.keys().next().unwrap().clone();
    let mut agent = Agent::json().start();
    std::thread::sleep(Duration::from_secs(5));
    let stopped = Frozen::guest(&frozen);
    let froze_at = now_unix();
    std::thread::sleep(Duration::from_secs(15));
    drop(stopped);
    let thawed_at = now_unix();
    std::thread::sleep(Duration::from_secs(5));
    assert!(agent.is_running(), "agent died");
    let points = agent.points();

    // The whole seconds inside the freeze, after the first poll that met it.
    let during: BTreeSet<i64> =
        ((froze_at.floor() as i64 + 2)..(thawed_at.floor() as i64)).collect();
    let metric_of = |guest: &str| {
        [
            ("state", "state.code".to_owned()),
            ("cpu", "cpu.time_percent".to_owned()),
            ("balloon", "balloon.current_bytes".to_owned()),
            ("vcpu", "vcpu.current".to_owned()),
            ("net", format!("net.tap-{guest}.tx.bytes_per_s")),
            ("block", "block.vda.wr.reqs_per_s".to_owned()),
        ]
    };
    for other in guests.keys().filter(|g| **g != frozen) {
        for (group, metric) in metric_of(other) {
            let seen = seconds_of(&points, other, &metric);
            let missing: Vec<&i64> = during.difference(&seen).collect();
            eprintln!(
                "{other} {group} ({metric}): {} of {} seconds during the freeze",
                during.len() - missing.len(),
                during.len()
            );
            assert!(
                missing.is_empty(),
                "{other}: no {metric} in seconds {missing:?}"
            );
        }
    }
    for (group, metric) in metric_of(&frozen) {
        let seen = seconds_of(&points, &frozen, &metric);
        let kept = during.intersection(&seen).count();
        eprintln!(
            "{frozen} (frozen) {group} ({metric}): {kept} of {} seconds",
            during.len()
        );
        if group == "state" || group == "net" {
            assert_eq!(
                kept,
                during.len(),
                "{frozen}: {metric} stopped while frozen"
            );
        }
    }
    // Its monitor groups resume within 2 s of QEMU answering again.
    let back = values(&points, &frozen, "balloon.current_bytes")
        .iter()
        .map(|p| p.ts)
        .filter(|ts| *ts > thawed_at)
        .fold(f64::INFINITY, f64::min);
    assert!(
        back - thawed_at <= 2.0,
        "{frozen}: balloon back {:.1} s after the thaw",
        back - thawed_at
    );
}
