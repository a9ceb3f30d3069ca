//! What the Carbon sink costs and how fast it can go.
//!
//! 1. Encoding alone: ns per point and points/s, plaintext and pickle.
//! 2. The whole sink (queue, encoder, TCP) flat out into a local listener
//!    that only reads, and into a real carbon-cache on 127.0.0.1: points/s
//!    until the receiver has read everything (the sink's shutdown waits for
//!    the receiver to confirm, so nothing is counted before it arrived).
//! 3. The sink paced like the agent (one batch a second) at 1,000 and
//!    10,000 points/s for a while: this process's CPU time per second,
//!    i.e. the agent's CPU per 1,000 points/s, the null reader's own CPU
//!    subtracted. carbon-cache's CPU is reported next to it.
//!
//! Run with `cargo bench -p hyper-stats --bench carbon`. The carbon-cache
//! parts need Debian's graphite-carbon (`cargo xtask setup`) and are
//! skipped with a note without it. `HS_BENCH_POINTS` (default 1,000,000)
//! sizes the flat-out runs, `HS_BENCH_SECONDS` (default 10) the paced ones.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper_stats::sample::{Batch, Datapoint};
use hyper_stats::sinks::carbon::config::DEFAULT_PATH;
use hyper_stats::sinks::carbon::encoder::Encoder;
use hyper_stats::sinks::carbon::path::Template;
use hyper_stats::sinks::carbon::{CarbonPoint, CarbonSink, Filter, Protocol, Settings};
use tokio::sync::mpsc;

/// Domains and metrics per domain of the synthetic stream: 500 series,
/// about what 8 guests give.
const DOMAINS: usize = 10;
const METRICS: usize = 50;

/// Points per batch in the flat-out runs (one batch per "second").
const SERIES: usize = DOMAINS * METRICS;

/// Debian graphite-carbon's daemon.
const CARBON_CACHE: &str = "/usr/bin/carbon-cache";

fn main() {
    let points: usize = env_or("HS_BENCH_POINTS", 1_000_000);
    let seconds: u64 = env_or("HS_BENCH_SECONDS", 10);
    println!("Carbon sink bench: {points} points flat out, {seconds} s paced runs");
    println!();

    println!("encoding only");
    let encode_pt = encode(points, Protocol::Plaintext);
    let encode_pk = encode(points, Protocol::Pickle);
    println!(
        "  pickle / plaintext time per point: {:.2}",
        encode_pk / encode_pt
    );
    println!();

    println!("whole sink, flat out, into a local reader that only reads");
    let null_pt = flat_out_null(points, Protocol::Plaintext);
    let null_pk = flat_out_null(points, Protocol::Pickle);
    println!("  pickle / plaintext throughput: {:.2}", null_pk / null_pt);
    println!();

    // A fresh carbon-cache for every run: one still writing the previous
    // run's points to whisper would slow the next run's receiver.
    if Path::new(CARBON_CACHE).exists() {
        println!("whole sink, flat out, into carbon-cache (Python; the receiver is the limit)");
        let n = points.min(200_000);
        let cc_pt = {
            let c = Carbon::start();
            flat_out(n, Protocol::Plaintext, c.line_port, Some(c.pid))
        };
        let cc_pk = {
            let c = Carbon::start();
            flat_out(n, Protocol::Pickle, c.pickle_port, Some(c.pid))
        };
        println!("  pickle / plaintext throughput: {:.2}", cc_pk / cc_pt);
        println!(
            "  carbon-cache / null reader throughput: plaintext {:.3}, pickle {:.3}",
            cc_pt / null_pt,
            cc_pk / null_pk
        );
    } else {
        println!("{CARBON_CACHE} not installed: skipping its runs (cargo xtask setup installs it)");
    }
    println!();

    println!("paced like the agent (one batch a second): agent CPU");
    for rate in [1_000, 10_000] {
        paced_null(rate, seconds);
        if Path::new(CARBON_CACHE).exists() {
            paced_carbon(rate, seconds, &Carbon::start());
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn settings(port: u16, protocol: Protocol) -> Settings {
    Settings {
        name: "carbon",
        host: "127.0.0.1".into(),
        port,
        protocol,
        template: Template::parse(DEFAULT_PATH).unwrap(),
        prefix: "hyperstats".into(),
        node: "bench".into(),
        queue_points: 100_000_000,
        spool: None,
        replay_window: Duration::from_secs(30),
        filter: Filter::ALL,
    }
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `count` batches of [`SERIES`] datapoints, one per second ending now.
fn batches(count: usize, per_batch: usize) -> Vec<Arc<Batch>> {
    let start = now_s() - count as i64;
    (0..count)
        .map(|b| {
            Arc::new(
                (0..per_batch)
                    .map(|i| Datapoint {
                        ts: (start + b as i64) as f64 + 0.003,
                        uuid: format!("uuid-{}", i % DOMAINS).into(),
                        domain: format!("bench-vm-{}", i % DOMAINS).into(),
                        metric: format!("group.metric_{}.value_percent", i / DOMAINS).into(),
                        value: (b * 7 + i) as f64 / 3.0,
                    })
                    .collect(),
            )
        })
        .collect()
}

fn encode(n: usize, protocol: Protocol) -> f64 {
    let paths: Vec<Arc<str>> = (0..SERIES)
        .map(|i| {
            format!(
                "hyperstats.bench.bench-vm-{}.group.metric_{}.value_percent",
                i % DOMAINS,
                i / DOMAINS
            )
            .into()
        })
        .collect();
    let points: Vec<CarbonPoint> = (0..n)
        .map(|i| CarbonPoint {
            path: Arc::clone(&paths[i % SERIES]),
            ts: 1_764_100_000 + (i / SERIES) as i64,
            value: i as f64 / 3.0,
        })
        .collect();
    let encoder = Encoder::new(protocol);
    let mut buf = Vec::with_capacity(1 << 20);
    let mut bytes = 0;
    let started = Instant::now();
    for chunk in points.chunks(10_000) {
        buf.clear();
        encoder.encode(chunk, &mut buf);
        bytes += buf.len();
    }
    let elapsed = started.elapsed();
    let ns = elapsed.as_nanos() as f64 / n as f64;
    println!(
        "  {:<9} {:>6.1} ns/point  {:>12.0} points/s  {:>5.1} bytes/point",
        protocol.name(),
        ns,
        n as f64 / elapsed.as_secs_f64(),
        bytes as f64 / n as f64
    );
    ns
}

/// A thread that accepts connections and reads them to the end, counting
/// bytes; its own CPU time is known so it can be subtracted.
struct NullReader {
    port: u16,
    bytes: Arc<AtomicU64>,
    cpu_ns: Arc<AtomicU64>,
}

impl NullReader {
    fn start() -> NullReader {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bytes = Arc::new(AtomicU64::new(0));
        let cpu_ns = Arc::new(AtomicU64::new(0));
        let (b, c) = (Arc::clone(&bytes), Arc::clone(&cpu_ns));
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    b.fetch_add(n as u64, Ordering::Relaxed);
                    c.store(thread_cpu_ns(), Ordering::Relaxed);
                }
                c.store(thread_cpu_ns(), Ordering::Relaxed);
                // Dropping the stream closes it: the sink's confirmation.
            }
        });
        NullReader {
            port,
            bytes,
            cpu_ns,
        }
    }
}

fn flat_out_null(n: usize, protocol: Protocol) -> f64 {
    let reader = NullReader::start();
    let rate = flat_out(n, protocol, reader.port, None);
    println!(
        "            ({:.1} MB read)",
        reader.bytes.load(Ordering::Relaxed) as f64 / 1e6
    );
    rate
}

/// Sends `n` points through a fresh sink as fast as it takes them and
/// returns points/s until the receiver confirmed the last one.
fn flat_out(n: usize, protocol: Protocol, port: u16, carbon_pid: Option<u32>) -> f64 {
    let batches = batches(n.div_ceil(SERIES), SERIES);
    let runtime = runtime();
    let cpu0 = process_cpu_ns();
    let carbon0 = carbon_pid.map(pid_cpu_ticks);
    let started = Instant::now();
    runtime.block_on(async {
        let sink = CarbonSink::new(settings(port, protocol), &Default::default()).unwrap();
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(sink.run(Some(rx), None));
        for b in &batches {
            tx.send(Arc::clone(b)).await.unwrap();
        }
        drop(tx);
        task.await.unwrap().unwrap();
    });
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (process_cpu_ns() - cpu0) as f64 / 1e9;
    let sent = batches.len() * SERIES;
    let rate = sent as f64 / elapsed;
    let target = if carbon_pid.is_some() {
        "carbon-cache"
    } else {
        "null"
    };
    print!(
        "  {:<9} {:<12} {:>10.0} points/s  ({sent} points in {elapsed:.2} s; this process {:.2} s CPU",
        protocol.name(),
        target,
        rate,
        cpu
    );
    if let (Some(pid), Some(t0)) = (carbon_pid, carbon0) {
        print!(
            ", carbon-cache {:.2} s CPU",
            (pid_cpu_ticks(pid) - t0) as f64 / clock_ticks() as f64
        );
    }
    println!(")");
    rate
}

/// Sends one batch of `rate` points each second for `seconds` seconds and
/// prints this process's CPU per second and per 1,000 points/s.
fn paced(rate: usize, seconds: u64, port: u16, protocol: Protocol) -> f64 {
    let batches = batches(seconds as usize, rate);
    let runtime = runtime();
    let cpu0 = process_cpu_ns();
    let started = Instant::now();
    runtime.block_on(async {
        let sink = CarbonSink::new(settings(port, protocol), &Default::default()).unwrap();
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(sink.run(Some(rx), None));
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        for b in &batches {
            tick.tick().await;
            tx.send(Arc::clone(b)).await.unwrap();
        }
        tick.tick().await;
        drop(tx);
        task.await.unwrap().unwrap();
    });
    let wall = started.elapsed().as_secs_f64();
    (process_cpu_ns() - cpu0) as f64 / 1e9 / wall
}

fn paced_null(rate: usize, seconds: u64) {
    let reader = NullReader::start();
    let before = reader.cpu_ns.load(Ordering::Relaxed);
    let cpu_per_s = paced(rate, seconds, reader.port, Protocol::Plaintext);
    let reader_s =
        (reader.cpu_ns.load(Ordering::Relaxed) - before) as f64 / 1e9 / (seconds + 1) as f64;
    let agent = cpu_per_s - reader_s;
    println!(
        "  {rate:>6} points/s into null reader:  agent {:>6.2} ms CPU/s = {:.3}% of a core per 1,000 points/s (reader {:.2} ms/s subtracted)",
        agent * 1e3,
        agent * 100.0 / (rate as f64 / 1000.0),
        reader_s * 1e3
    );
}

fn paced_carbon(rate: usize, seconds: u64, c: &Carbon) {
    let t0 = pid_cpu_ticks(c.pid);
    let started = Instant::now();
    let agent = paced(rate, seconds, c.line_port, Protocol::Plaintext);
    let carbon_s =
        (pid_cpu_ticks(c.pid) - t0) as f64 / clock_ticks() as f64 / started.elapsed().as_secs_f64();
    println!(
        "  {rate:>6} points/s into carbon-cache: agent {:>6.2} ms CPU/s = {:.3}% of a core per 1,000 points/s; carbon-cache {:.1}% of a core ({:.0}x the agent)",
        agent * 1e3,
        agent * 100.0 / (rate as f64 / 1000.0),
        carbon_s * 100.0,
        carbon_s / agent
    );
}

fn runtime() -> tokio::runtime::Runtime {
    // As the agent runs: two worker threads.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// CPU time of every thread of this process, from each thread's
/// schedstat (nanoseconds on CPU).
fn process_cpu_ns() -> u64 {
    let mut total = 0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            total += schedstat_ns(&t.path().join("schedstat"));
        }
    }
    total
}

/// CPU time of the calling thread.
fn thread_cpu_ns() -> u64 {
    schedstat_ns(Path::new("/proc/thread-self/schedstat"))
}

fn schedstat_ns(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks (children included: the
/// carbon-cache daemon is a single process).
fn pid_cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the whole line.
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

fn clock_ticks() -> u64 {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    out.ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100)
}

/// A carbon-cache of the bench's own (short retention, sparse files), on
/// 127.0.0.1, stopped by its pid when dropped.
struct Carbon {
    _dir: tempfile::TempDir,
    line_port: u16,
    pickle_port: u16,
    pid: u32,
}

impl Carbon {
    fn start() -> Carbon {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let ports: Vec<u16> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect::<Vec<_>>()
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        std::fs::write(
            dir.path().join("carbon.conf"),
            format!(
                "[cache]\nSTORAGE_DIR = {d}/storage/\nLOCAL_DATA_DIR = {d}/storage/whisper/\n\
                 CONF_DIR = {d}/\nLOG_DIR = {d}/log/\nPID_DIR = {d}/\nUSER =\n\
                 MAX_CACHE_SIZE = inf\nMAX_UPDATES_PER_SECOND = inf\nMAX_CREATES_PER_MINUTE = inf\n\
                 LINE_RECEIVER_INTERFACE = 127.0.0.1\nLINE_RECEIVER_PORT = {}\n\
                 PICKLE_RECEIVER_INTERFACE = 127.0.0.1\nPICKLE_RECEIVER_PORT = {}\n\
                 CACHE_QUERY_INTERFACE = 127.0.0.1\nCACHE_QUERY_PORT = {}\n\
                 ENABLE_UDP_LISTENER = False\nLOG_LISTENER_CONNECTIONS = False\n\
                 WHISPER_SPARSE_CREATE = True\n",
                ports[0], ports[1], ports[2]
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("storage-schemas.conf"),
            "[bench]\npattern = .*\nretentions = 1s:1h\n",
        )
        .unwrap();
        let pidfile: PathBuf = dir.path().join("carbon.pid");
        let status = Command::new("carbon-cache")
            .arg(format!("--config={d}/carbon.conf"))
            .arg(format!("--pidfile={}", pidfile.display()))
            .arg(format!("--logdir={d}/log"))
            .arg("start")
            .output()
            .unwrap();
        assert!(status.status.success(), "carbon-cache start failed");
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let pid = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            if let Some(pid) = pid
                && std::net::TcpStream::connect(("127.0.0.1", ports[1])).is_ok()
            {
                return Carbon {
                    _dir: dir,
                    line_port: ports[0],
                    pickle_port: ports[1],
                    pid,
                };
            }
            assert!(Instant::now() < until, "carbon-cache did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Carbon {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
        let until = Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{}", self.pid)).exists() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
