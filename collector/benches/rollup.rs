//! What the rollup costs a host of 1,024 vCPUs in 256 guests: CPU per
//! second and memory once every window is full.
//!
//! Every simulated second, each vCPU brings a run-queue and an on-CPU
//! interval of `HS_BENCH_RATE` (default 200) values drawn from a
//! log-normal (medians 20 µs and 300 µs, log-space spread
//! `HS_BENCH_SIGMA`, default 1.0), sent as the eBPF source sends them
//! (bucket midpoints with counts), and nine per-vCPU gauges at 1 Hz. The
//! rollup is fed `HS_BENCH_SECONDS` (default 960: 16 minutes, all windows
//! full) of them, each second at its own instant of the rollup's clock.
//!
//! - Latency batch: `ingest_at` of one second's 2,048 intervals, i.e.
//!   recording them and closing the second (per-second summaries of 1,024
//!   vCPUs and 256 domains, every window pushed; coarse window buckets
//!   built every 10 s and 60 s). Mean, p50, p99 and max per second, and
//!   the mean per series. Times are the thread's CPU time, not wall time,
//!   so other load on the machine does not count.
//! - Gauge batch: `ingest_at` of one second's 9,216 gauges.
//! - Queries: the 1, 5 and 15 minute windows of `runq_latency` of every
//!   guest merged (a guest's from its vCPUs' windows), and of every vCPU
//!   too, as a histogram query over all guests asks: CPU time each, with
//!   the rollup's lock held.
//! - Memory: [`Rollup::heap_bytes`] (what the rollup holds, allocator
//!   overhead estimated) and the growth of this process's RSS while it
//!   was fed, both per vCPU.
//!
//! Run with `cargo bench -p hyper-stats --bench rollup`. It needs no root,
//! no libvirt and no eBPF.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_stats::rollup::Rollup;
use hyper_stats::sample::{Datapoint, Latency, Sample};
use hyper_stats_ebpf::{bucket_index, bucket_mid};

/// Guests on the simulated host.
const DOMAINS: u32 = 256;
/// vCPUs per guest: 1,024 in all.
const VCPUS: u32 = 4;
/// Distinct seconds of values generated per metric and reused (each vCPU
/// starts at its own offset), so that drawing values stays out of the
/// measured time and memory.
const POOL_SECONDS: usize = 97;
/// The per-vCPU gauges the sources send every second: five from eBPF,
/// four from libvirt.
const GAUGES: [&str; 9] = [
    "switches_voluntary_per_s",
    "switches_involuntary_per_s",
    "wakeups_per_s",
    "kvm_exits_per_s",
    "kvm_exit_time_percent",
    "time_percent",
    "delay_percent",
    "wait_percent",
    "halted",
];

/// The agent's allocator: what the rollup costs depends on it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// SplitMix64 and Box-Muller: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn log_normal(&mut self, median_ns: f64, sigma: f64) -> u64 {
        let (u, v) = (1.0 - self.unit(), self.unit());
        let normal = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
        (median_ns.ln() + sigma * normal).exp() as u64
    }
}

/// One interval as the eBPF source sends it: `(bucket midpoint, count)`
/// pairs and the exact sum.
type Interval = (Vec<(u64, u64)>, u64);

/// One second of `rate` values.
fn second(rng: &mut Rng, rate: usize, median_ns: f64, sigma: f64) -> Interval {
    let mut counts = std::collections::BTreeMap::new();
    let mut sum = 0;
    for _ in 0..rate {
        let v = rng.log_normal(median_ns, sigma);
        sum += v;
        *counts.entry(bucket_index(v)).or_insert(0u64) += 1;
    }
    let pairs = counts
        .into_iter()
        .map(|(b, c)| (bucket_mid(b), c))
        .collect();
    (pairs, sum)
}

/// CPU time of the calling thread: what the rollup stage's thread pays,
/// whatever else the machine runs.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `ts` is.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// This process's resident memory in bytes.
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let rate: usize = env("HS_BENCH_RATE", 200);
    let sigma: f64 = env("HS_BENCH_SIGMA", 1.0);
    let seconds: u64 = env("HS_BENCH_SECONDS", 960);
    let vcpus = (DOMAINS * VCPUS) as usize;

    let mut rng = Rng(1);
    let pools: Vec<(&'static str, Vec<Interval>)> =
        [("runq_latency", 20_000.0), ("oncpu", 300_000.0)]
            .into_iter()
            .map(|(metric, median)| {
                let pool = (0..POOL_SECONDS)
                    .map(|_| second(&mut rng, rate, median, sigma))
                    .collect();
                (metric, pool)
            })
            .collect();
    let domains: Vec<(Arc<str>, Arc<str>)> = (0..DOMAINS)
        .map(|d| {
            let uuid = format!("00000000-0000-0000-0000-{d:012}");
            (
                Arc::from(uuid.as_str()),
                Arc::from(format!("guest-{d}").as_str()),
            )
        })
        .collect();
    let gauge_names: Vec<Arc<str>> = (0..VCPUS)
        .flat_map(|v| GAUGES.iter().map(move |g| format!("vcpu.{v}.{g}").into()))
        .collect();

    let rss_before = rss_bytes();
    let mut rollup = Rollup::default();
    let start = Instant::now();
    let (mut latency_times, mut gauge_times) = (Vec::new(), Vec::new());
    for s in 0..seconds {
        let ts = 1_800_000_000.0 + s as f64;
        let mut latencies = Vec::with_capacity(vcpus * 2);
        let mut gauges = Vec::with_capacity(vcpus * GAUGES.len());
        for (d, (uuid, name)) in domains.iter().enumerate() {
            for v in 0..VCPUS {
                let offset = d * VCPUS as usize + v as usize;
                for (metric, pool) in &pools {
                    let (values, sum_ns) = &pool[(s as usize + offset) % POOL_SECONDS];
                    latencies.push(Sample::Latency(Latency {
                        ts,
                        uuid: Arc::clone(uuid),
                        domain: Arc::clone(name),
                        vcpu: v,
                        metric,
                        values: values.clone(),
                        sum_ns: *sum_ns,
                    }));
                }
                for g in 0..GAUGES.len() {
                    gauges.push(Sample::Gauge(Datapoint {
                        ts,
                        uuid: Arc::clone(uuid),
                        domain: Arc::clone(name),
                        metric: gauge_names[v as usize * GAUGES.len() + g].clone(),
                        value: rng.unit() * 100.0,
                    }));
                }
            }
        }
        let at = start + Duration::from_secs(s);
        let t = thread_cpu();
        let out = rollup.ingest_at(gauges, at);
        gauge_times.push(thread_cpu() - t);
        drop(out);
        let t = thread_cpu();
        let out = rollup.ingest_at(latencies, at);
        latency_times.push(thread_cpu() - t);
        drop(out);
    }
    let rss_growth = rss_bytes().saturating_sub(rss_before);
    let heap = rollup.heap_bytes();

    let report = |what: &str, times: &mut Vec<Duration>, per: usize, per_what: &str| {
        let mean = times.iter().sum::<Duration>() / times.len() as u32;
        times.sort_unstable();
        println!(
            "{what}: CPU mean {:.3} ms, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms per second; {:.0} ns per {per_what}",
            mean.as_secs_f64() * 1e3,
            percentile(times, 0.5).as_secs_f64() * 1e3,
            percentile(times, 0.99).as_secs_f64() * 1e3,
            percentile(times, 1.0).as_secs_f64() * 1e3,
            mean.as_secs_f64() * 1e9 / per as f64,
        );
    };
    println!(
        "rollup: {DOMAINS} domains x {VCPUS} vCPUs, {rate} values/s per series (log-normal sigma {sigma}), {seconds} s"
    );
    report(
        "latency batch (record + close_second)",
        &mut latency_times,
        vcpus * 2,
        "series-second",
    );
    report(
        "gauge batch",
        &mut gauge_times,
        vcpus * GAUGES.len(),
        "gauge",
    );
    for window_s in [60, 300, 900] {
        for per_vcpu in [false, true] {
            let t = thread_cpu();
            let values =
                rollup.merge_all_windows("runq_latency", Duration::from_secs(window_s), per_vcpu);
            let what = if per_vcpu {
                "and per vCPU"
            } else {
                "per guest"
            };
            println!(
                "query {window_s} s window {what}: CPU {:.1} ms ({values} values)",
                (thread_cpu() - t).as_secs_f64() * 1e3
            );
        }
    }
    println!(
        "memory: heap {:.1} MiB, {:.1} KiB per vCPU; RSS growth {:.1} MiB, {:.1} KiB per vCPU",
        heap as f64 / (1 << 20) as f64,
        heap as f64 / 1024.0 / vcpus as f64,
        rss_growth as f64 / (1 << 20) as f64,
        rss_growth as f64 / 1024.0 / vcpus as f64,
    );
}
