//! The eBPF probes against the running kernel: load, attach, and compare
//! what they count with what the kernel itself reports for the same thread.
//!
//! Needs root and an agent built with the eBPF object; run with
//! `cargo xtask build-ebpf` then
//! `cargo test -p hyper-stats --test ebpf_probes -- --ignored`.
//! These tests panic rather than return errors, as aya's own kernel tests do.

use std::time::{Duration, Instant};

use hyper_stats::sources::ebpf::Probes;
use hyper_stats_ebpf::Stat;

#[test]
#[ignore = "needs root and the eBPF object: cargo xtask test"]
fn probes_load_and_count_switches() {
    let probes = Probes::load().unwrap_or_else(|err| panic!("{err:#}"));
    let before = switch_events(&probes);
    // Sleeping switches this thread out and back in at least once per call.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(50) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let after = switch_events(&probes);
    assert!(
        after > before + 10,
        "sched_switch events did not grow: {before} -> {after}"
    );
}

fn switch_events(probes: &Probes) -> u64 {
    probes
        .stats()
        .expect("read STATS")
        .into_iter()
        .find(|(stat, _)| *stat == Stat::SwitchEvents)
        .map(|(_, n)| n)
        .expect("SwitchEvents in STATS")
}
