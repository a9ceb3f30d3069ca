//! How long `check_hyper_stats` takes, end to end, for a host of 8 guests:
//! process start, connect, the agent's answer, judging and printing. Nagios
//! runs thousands of checks, so the budget is 20 ms per run.
//!
//! The agent side is the real rollup and query sink
//! (`hyper_stats::harness::QuerySocket`) in this process, fed 5 minutes of 1 Hz libvirt series and run-queue
//! histograms for 8 domains of 2 vCPUs. Each case runs the release binary
//! `RUNS` times, one after another, and reports wall-clock percentiles next
//! to `/bin/true` run the same way (the cost of a process start, which no
//! plugin can go below).
//!
//! `cargo bench -p check-hyper-stats`; exits non-zero if a case's p95 is
//! over the budget.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hyper_stats::harness::QuerySocket;
use hyper_stats::sample::{Datapoint, Latency, Sample};

/// Runs per case.
const RUNS: usize = 200;

/// The budget per plugin run.
const BUDGET: Duration = Duration::from_millis(20);

/// Guests on the simulated host.
const GUESTS: usize = 8;

/// vCPUs per guest.
const VCPUS: u32 = 2;

/// Seconds of history fed before measuring.
const HISTORY_S: u32 = 300;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The libvirt series of one guest, as the libvirt source names them.
fn libvirt_metrics() -> Vec<String> {
    let mut m: Vec<String> = [
        "state.code",
        "state.reason",
        "cpu.time_percent",
        "cpu.user_percent",
        "cpu.system_percent",
        "vcpu.current",
        "vcpu.maximum",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for v in 0..VCPUS {
        for s in ["time_percent", "delay_percent", "wait_percent", "halted"] {
            m.push(format!("vcpu.{v}.{s}"));
        }
    }
    for b in ["current", "maximum", "available", "usable", "unused", "rss"] {
        m.push(format!("balloon.{b}_bytes"));
    }
    for op in ["rd", "wr", "flush"] {
        m.push(format!("block.vda.{op}.reqs_per_s"));
        m.push(format!("block.vda.{op}.latency_mean_ms"));
    }
    for dir in ["rx", "tx"] {
        for s in [
            "bytes_per_s",
            "packets_per_s",
            "errors_per_s",
            "drops_per_s",
        ] {
            m.push(format!("net.tap0.{dir}.{s}"));
        }
    }
    m
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Row {
    name: String,
    p50: Duration,
    p95: Duration,
    max: Duration,
}

fn measure(name: &str, program: &Path, args: &[&str], want_code: i32) -> Row {
    let mut times = Vec::with_capacity(RUNS);
    for i in 0..RUNS + 5 {
        let started = Instant::now();
        let status = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        let elapsed = started.elapsed();
        assert_eq!(status.code(), Some(want_code), "{name}");
        // The first runs warm the page cache.
        if i >= 5 {
            times.push(elapsed);
        }
    }
    times.sort();
    Row {
        name: name.to_owned(),
        p50: percentile(&times, 0.5),
        p95: percentile(&times, 0.95),
        max: *times.last().unwrap(),
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not run us.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("hs.sock");
    let sink = QuerySocket::start(
        runtime.handle(),
        socket.clone(),
        Some("0".into()),
        Duration::from_secs(HISTORY_S.into()),
    );

    // Five minutes of history, one batch per second, ending now.
    let metrics = libvirt_metrics();
    let guests: Vec<(Arc<str>, Arc<str>)> = (0..GUESTS)
        .map(|i| (format!("uuid-{i}").into(), format!("guest-{i}").into()))
        .collect();
    let end = now();
    let fed = Instant::now();
    for s in 0..HISTORY_S {
        let ts = end - f64::from(HISTORY_S - s);
        let mut batch = Vec::new();
        for (g, (uuid, name)) in guests.iter().enumerate() {
            for v in 0..VCPUS {
                // A spread of waits per vCPU and second.
                let values: Vec<(u64, u64)> = (1..=20u64)
                    .map(|k| (1_000 * k * k * (g as u64 + 1) + u64::from(s), 5))
                    .collect();
                let sum_ns = values.iter().map(|(ns, n)| ns * n).sum();
                batch.push(Sample::Latency(Latency {
                    ts,
                    uuid: Arc::clone(uuid),
                    domain: Arc::clone(name),
                    vcpu: v,
                    metric: "runq_latency",
                    values,
                    sum_ns,
                }));
            }
            for (k, m) in metrics.iter().enumerate() {
                batch.push(Sample::Gauge(Datapoint {
                    ts,
                    uuid: Arc::clone(uuid),
                    domain: Arc::clone(name),
                    metric: m.as_str().into(),
                    value: (g * 7 + k + s as usize % 5) as f64 / 10.0,
                }));
            }
        }
        // Each second placed where it belongs in the past, so the agent's
        // windows hold five minutes as they would on a host.
        sink.ingest_ago(batch, Duration::from_secs(u64::from(HISTORY_S - s)));
    }
    while !socket.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "fed {GUESTS} guests x {VCPUS} vCPUs, {} libvirt series each, {HISTORY_S} s, in {:?}",
        metrics.len(),
        fed.elapsed()
    );

    let plugin = Path::new(env!("CARGO_BIN_EXE_check_hyper_stats"));
    let sock = socket.to_str().unwrap();
    let rows = vec![
        measure("/bin/true (process start)", Path::new("/bin/true"), &[], 0),
        measure(
            "runq_latency_us p99 5m, per domain",
            plugin,
            &[
                "-S",
                sock,
                "-m",
                "runq_latency_us",
                "-p",
                "99",
                "--window",
                "5m",
                "-w",
                "1000000",
            ],
            0,
        ),
        measure(
            "runq_latency_us p99 5m, per vCPU",
            plugin,
            &[
                "-S",
                sock,
                "-m",
                "runq_latency_us",
                "--per-vcpu",
                "--window",
                "5m",
                "-w",
                "1000000",
            ],
            0,
        ),
        measure(
            "runq_latency_us p99 15m, per vCPU",
            plugin,
            &[
                "-S",
                sock,
                "-m",
                "runq_latency_us",
                "--per-vcpu",
                "--window",
                "15m",
                "-w",
                "1000000",
            ],
            0,
        ),
        measure(
            "vcpu.*.delay_percent avg 5m",
            plugin,
            &[
                "-S",
                sock,
                "-m",
                "vcpu.*.delay_percent",
                "--window",
                "5m",
                "-w",
                "1000",
            ],
            0,
        ),
        measure("--list", plugin, &["-S", sock, "--list"], 0),
    ];
    let base = rows[0].p50;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "check_hyper_stats, {GUESTS} guests, {RUNS} runs per case, {} cores, kernel {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel.trim()
    );
    println!(
        "{:<40} {:>9} {:>9} {:>9} {:>12}",
        "case", "p50", "p95", "max", "p50 / true"
    );
    let mut over = false;
    for r in &rows {
        println!(
            "{:<40} {:>9.2?} {:>9.2?} {:>9.2?} {:>11.1}x",
            r.name,
            r.p50,
            r.p95,
            r.max,
            r.p50.as_secs_f64() / base.as_secs_f64()
        );
        over |= r.p95 > BUDGET;
    }
    runtime.block_on(sink.stop()).unwrap();
    if over {
        eprintln!("a case's p95 is over the {BUDGET:?} budget");
        std::process::exit(1);
    }
}
