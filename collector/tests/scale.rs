//! More vCPU threads than the old 256-slot cap, through the real agent:
//! this test process starts [`THREADS`] threads named `CPU <n>/TCG` (as
//! QEMU names its TCG vCPU threads) that sleep and wake, and runs the
//! agent with `--watch-pid` naming itself (a pseudo-domain named after
//! this process' comm, uuid `pid-<PID>`) and `--connect test:///default`
//! (libvirt's in-process test driver: no libvirtd, no lab guest needed).
//! Every thread must get its `vcpu.<n>.runq_latency_us.count` series in
//! the JSON output, and the agent must not log that it ran out of eBPF
//! slots.
//!
//! Needs root and the eBPF object (the probes); run by `cargo xtask test`.
//! The threads stop when the test ends; the agent is stopped by the
//! runner.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

mod common;

use common::Agent;

/// Threads watched: more than the 256 eBPF slots the agent had before
/// issue 12, so a fixed cap of that size fails this test.
const THREADS: u32 = 300;

/// How long each thread sleeps between wakeups: 300 threads then wake
/// 6,000 times a second, enough for every thread to wait in the run queue
/// and switch every second, little enough for a loaded 2-core machine.
const SLEEP: Duration = Duration::from_millis(50);

/// How long the agent runs: it finds the threads at its start and
/// reports each once a second; 8 s leaves several seconds of series after
/// a slow start on a loaded machine.
const AGENT_RUNS: &str = "8s";

/// What the agent logs when it has fewer slots than threads to watch.
const OUT_OF_SLOTS: &str = "more vcpu threads than ebpf slots";

/// Threads named `CPU <n>/TCG` that sleep and wake until dropped.
struct FakeVcpus {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl FakeVcpus {
    fn start(n: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|i| {
                let stop = Arc::clone(&stop);
                thread::Builder::new()
                    .name(format!("CPU {i}/TCG"))
                    .spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            thread::sleep(SLEEP);
                        }
                    })
                    .expect("spawn a vCPU thread")
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for FakeVcpus {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
#[ignore = "needs root and the eBPF object: cargo xtask test"]
fn watches_300_threads_of_one_process() {
    let _vcpus = FakeVcpus::start(THREADS);
    let pid = std::process::id().to_string();
    let finished = Agent::json()
        .connect("test:///default")
        .config_text("[query]\nenabled = false\n")
        .args(&["--watch-pid", &pid, "--duration", AGENT_RUNS])
        .keep_log()
        .start()
        .wait();

    let uuid = format!("pid-{pid}");
    let seen: BTreeSet<u32> = finished
        .points
        .iter()
        .filter(|p| p.uuid == uuid)
        .filter_map(|p| {
            p.metric
                .strip_prefix("vcpu.")?
                .strip_suffix(".runq_latency_us.count")?
                .parse()
                .ok()
        })
        .collect();
    let missing: Vec<u32> = (0..THREADS).filter(|n| !seen.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "{} of {THREADS} vCPU threads have no runq_latency_us.count series (first missing: {:?}); \
         domains seen: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)],
        finished
            .points
            .iter()
            .map(|p| (p.uuid.as_str(), p.domain.as_str()))
            .collect::<BTreeSet<_>>()
    );
    let out_of_slots: Vec<&String> = finished
        .log
        .iter()
        .filter(|l| l.to_lowercase().contains(OUT_OF_SLOTS))
        .collect();
    assert!(
        out_of_slots.is_empty(),
        "the agent ran out of eBPF slots: {out_of_slots:?}"
    );
}
