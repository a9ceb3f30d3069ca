//! A loopback Carbon plaintext listener for the scale bench: counts every
//! line the agent pushes and keeps the few series the bench reads back.
//!
//! It keeps, per line, only a counter (so 25,000 lines a second cost the
//! bench little), plus:
//! - the agent's own series (`<prefix>.<host>.agent.<part>.<what>`), each
//!   point with its timestamp;
//! - the sampled vCPUs' run-queue sums (`<domain>.vcpu.<n>.runq_latency_us.sum`),
//!   each point with its timestamp and the unix time it arrived (the
//!   Carbon timestamp is floored to the second; the arrival bounds the
//!   agent's read time from above, see `schedstat.rs`);
//! - which per-vCPU `runq_latency_us.count` series appeared, to show that
//!   every thread was probed;
//! - the metric names of one chosen domain, to show what a source fills.
//!
//! A line that does not parse is counted in [`Seen::bad_lines`]. The
//! listener and its connection threads end with the bench process; the
//! agent's connections end when it exits.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

/// How often the accept loop looks for a new connection.
const ACCEPT_POLL: Duration = Duration::from_millis(50);

/// A point of a sampled series: Carbon timestamp (s), unix arrival time
/// (s), value.
pub type TimedPoint = (i64, f64, f64);

/// What the listener kept.
#[derive(Default)]
pub struct Seen {
    /// The agent's own series by metric (`agent.ebpf.slots`), with
    /// (timestamp, value) in arrival order.
    pub agent: BTreeMap<String, Vec<(i64, f64)>>,
    /// The sampled series by `<domain>.<metric>`, in arrival order.
    pub sampled: HashMap<String, Vec<TimedPoint>>,
    /// `<domain>.vcpu.<n>` of every per-vCPU run-queue count series seen.
    pub vcpu_series: BTreeSet<String>,
    /// Metric names seen of the domain named in [`Counter::start`].
    pub domain_metrics: BTreeSet<String>,
    /// Lines that were not `path value timestamp`.
    pub bad_lines: u64,
}

/// The running listener.
pub struct Counter {
    /// The port it listens on at 127.0.0.1.
    pub port: u16,
    /// Every line received so far.
    lines: Arc<AtomicU64>,
    /// What it kept.
    seen: Arc<Mutex<Seen>>,
}

/// What the connection threads share.
struct Shared {
    /// `<prefix>.<host>.`, stripped from domain paths.
    domain_prefix: String,
    /// The `<domain>.<metric>` keys to keep points of.
    sampled: BTreeSet<String>,
    /// The domain whose metric names are kept.
    domain: Option<String>,
    lines: Arc<AtomicU64>,
    seen: Arc<Mutex<Seen>>,
}

impl Counter {
    /// Listens on 127.0.0.1 (a free port) for an agent whose paths start
    /// with `domain_prefix` (`hyperstats.bench.`); keeps the points of
    /// `sampled` and the metric names of `domain`.
    pub fn start(
        domain_prefix: &str,
        sampled: BTreeSet<String>,
        domain: Option<String>,
    ) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("failed to listen on 127.0.0.1")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let lines = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = Arc::new(Shared {
            domain_prefix: domain_prefix.to_owned(),
            sampled,
            domain,
            lines: Arc::clone(&lines),
            seen: Arc::clone(&seen),
        });
        thread::spawn(move || {
            loop {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let shared = Arc::clone(&shared);
                        thread::spawn(move || read_lines(stream, &shared));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(ACCEPT_POLL);
                    }
                    Err(e) => {
                        eprintln!("bench: Carbon listener failed: {e}");
                        return;
                    }
                }
            }
        });
        Ok(Self { port, lines, seen })
    }

    /// Lines received so far.
    pub fn lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }

    /// Runs `f` on what was kept so far.
    pub fn with_seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Now as unix seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn read_lines(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nonblocking(false);
    let mut reader = BufReader::with_capacity(1 << 16, stream);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        shared.lines.fetch_add(1, Ordering::Relaxed);
        keep(line.trim_end(), shared);
    }
}

/// Keeps what [`Seen`] asks for of one line.
fn keep(line: &str, shared: &Shared) {
    let parse = || {
        let mut fields = line.split(' ');
        let (Some(path), Some(value), Some(ts), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return None;
        };
        Some((path, value.parse::<f64>().ok()?, ts.parse::<i64>().ok()?))
    };
    let Some((path, value, ts)) = parse() else {
        shared
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bad_lines += 1;
        return;
    };
    let Some(rest) = path.strip_prefix(shared.domain_prefix.as_str()) else {
        return;
    };
    if let Some(metric) = rest.strip_prefix("agent.") {
        let mut seen = shared.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.agent
            .entry(format!("agent.{metric}"))
            .or_default()
            .push((ts, value));
        return;
    }
    let Some((domain, metric)) = rest.split_once('.') else {
        return;
    };
    if shared.domain.as_deref() == Some(domain) {
        let mut seen = shared.seen.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.domain_metrics.contains(metric) {
            seen.domain_metrics.insert(metric.to_owned());
        }
    }
    if let Some(series) = rest.strip_suffix(".runq_latency_us.count")
        && metric.starts_with("vcpu.")
    {
        let mut seen = shared.seen.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.vcpu_series.contains(series) {
            seen.vcpu_series.insert(series.to_owned());
        }
    } else if rest.ends_with(".runq_latency_us.sum") && shared.sampled.contains(rest) {
        let arrival = unix_now();
        let mut seen = shared.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.sampled
            .entry(rest.to_owned())
            .or_default()
            .push((ts, arrival, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared {
            domain_prefix: "hyperstats.bench.".into(),
            sampled: ["synth-001.vcpu.2.runq_latency_us.sum".to_owned()].into(),
            domain: Some("synth-001".into()),
            lines: Arc::new(AtomicU64::new(0)),
            seen: Arc::new(Mutex::new(Seen::default())),
        }
    }

    #[test]
    fn keeps_agent_series_sampled_sums_and_vcpu_series() {
        let s = shared();
        keep("hyperstats.bench.agent.ebpf.slots 1024 1796000000", &s);
        keep(
            "hyperstats.bench.synth-001.vcpu.2.runq_latency_us.sum 12.5 1796000001",
            &s,
        );
        keep(
            "hyperstats.bench.synth-001.vcpu.3.runq_latency_us.sum 9 1796000001",
            &s,
        );
        keep(
            "hyperstats.bench.synth-002.vcpu.0.runq_latency_us.count 20 1796000001",
            &s,
        );
        keep("hyperstats.bench.synth-001.state.code 1 1796000001", &s);
        keep("garbage", &s);
        let seen = s.seen.lock().unwrap();
        assert_eq!(
            seen.agent["agent.ebpf.slots"],
            vec![(1_796_000_000, 1024.0)]
        );
        let sums = &seen.sampled["synth-001.vcpu.2.runq_latency_us.sum"];
        assert_eq!(sums.len(), 1);
        assert_eq!((sums[0].0, sums[0].2), (1_796_000_001, 12.5));
        assert_eq!(seen.sampled.len(), 1);
        assert!(seen.vcpu_series.contains("synth-002.vcpu.0"));
        assert!(seen.domain_metrics.contains("state.code"));
        assert!(seen.domain_metrics.contains("vcpu.2.runq_latency_us.sum"));
        assert_eq!(seen.bad_lines, 1);
    }
}
