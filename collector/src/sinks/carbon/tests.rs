//! Component tests: the whole sink against a fake Carbon on 127.0.0.1 that
//! records what it receives, goes away and comes back.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::config::DEFAULT_PATH;
use super::path::Template;
use super::*;
use crate::sample::{Batch, Datapoint};
use crate::self_stats::Registry;

/// What a fake Carbon received: one byte string per connection.
type Received = Arc<Mutex<Vec<Vec<u8>>>>;

/// A listener that reads every connection to its end, like carbon-cache
/// (which closes its side when the client half-closes).
struct FakeCarbon {
    port: u16,
    task: JoinHandle<()>,
}

impl FakeCarbon {
    async fn start(port: u16, received: Received) -> FakeCarbon {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let sink = received;
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let index = {
                    let mut r = sink.lock().unwrap();
                    r.push(Vec::new());
                    r.len() - 1
                };
                let sink = Arc::clone(&sink);
                conns.spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => sink.lock().unwrap()[index].extend_from_slice(&buf[..n]),
                        }
                    }
                });
            }
        });
        FakeCarbon { port, task }
    }

    /// Stops listening and drops every connection (the task owns them).
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A sink with settings `s` and series nobody reports.
fn new_sink(s: Settings) -> CarbonSink {
    CarbonSink::new(s, &Registry::default()).unwrap()
}

/// The sink on the pipeline's batches alone, as the agent runs it.
async fn run(sink: CarbonSink, rx: mpsc::Receiver<Arc<Batch>>) -> anyhow::Result<()> {
    sink.run(Some(rx), None).await
}

fn settings(
    port: u16,
    protocol: Protocol,
    spool: Option<PathBuf>,
    queue_points: usize,
) -> Settings {
    Settings {
        name: "carbon",
        host: "127.0.0.1".into(),
        port,
        protocol,
        template: Template::parse(DEFAULT_PATH).unwrap(),
        prefix: "hyperstats".into(),
        node: "n1".into(),
        queue_points,
        spool: spool.map(|d| (d, 1 << 30)),
        replay_window: Duration::from_secs(30),
        filter: Filter::ALL,
    }
}

/// `n` datapoints of domain `d` at second `ts`, values `ts.i`.
fn batch(ts: i64, n: usize) -> Arc<Batch> {
    Arc::new(
        (0..n)
            .map(|i| Datapoint {
                ts: ts as f64 + 0.004,
                uuid: "u-1".into(),
                domain: "d".into(),
                metric: format!("m.{i}").into(),
                value: ts as f64 + i as f64 / 1000.0,
            })
            .collect(),
    )
}

/// Every plaintext line received, per connection.
fn lines(received: &Received) -> Vec<Vec<String>> {
    received
        .lock()
        .unwrap()
        .iter()
        .map(|c| {
            String::from_utf8(c.clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

/// (path, ts) of every plaintext line, all connections in order.
fn keys(received: &Received) -> Vec<(String, i64)> {
    lines(received)
        .into_iter()
        .flatten()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0].to_owned(), f[2].parse().unwrap())
        })
        .collect()
}

/// A free port on 127.0.0.1 with nothing listening.
async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + timeout;
    while !done() {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn plaintext_batches_arrive_as_exact_lines() {
    let received = Received::default();
    let carbon = FakeCarbon::start(0, Arc::clone(&received)).await;
    let sink = new_sink(settings(carbon.port, Protocol::Plaintext, None, 1000));
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::spawn(run(sink, rx));
    tx.send(batch(1764100001, 2)).await.unwrap();
    drop(tx);
    task.await.unwrap().unwrap();
    // The shutdown confirmation guarantees Carbon read everything.
    assert_eq!(
        lines(&received).concat(),
        vec![
            "hyperstats.n1.d.m.0 1764100001.0 1764100001",
            "hyperstats.n1.d.m.1 1764100001.001 1764100001",
        ]
    );
    carbon.stop().await;
}

/// Decodes the frames the pickle encoder writes (its own subset of
/// opcodes) into (path, ts, value).
fn decode_pickles(mut bytes: &[u8]) -> Vec<(String, i64, f64)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        let frame = &bytes[4..4 + len];
        bytes = &bytes[4 + len..];
        assert_eq!(&frame[..4], &[0x80, 2, b']', b'(']);
        let mut at = 4;
        while frame[at] == b'X' {
            let n = u32::from_le_bytes(frame[at + 1..at + 5].try_into().unwrap()) as usize;
            let path = String::from_utf8(frame[at + 5..at + 5 + n].to_vec()).unwrap();
            at += 5 + n;
            assert_eq!(frame[at], b'J');
            let ts = i32::from_le_bytes(frame[at + 1..at + 5].try_into().unwrap());
            at += 5;
            assert_eq!(frame[at], b'G');
            let value = f64::from_be_bytes(frame[at + 1..at + 9].try_into().unwrap());
            at += 9;
            assert_eq!(&frame[at..at + 2], &[0x86, 0x86]);
            at += 2;
            out.push((path, i64::from(ts), value));
        }
        assert_eq!(&frame[at..], b"e.");
    }
    out
}

#[tokio::test]
async fn pickle_batches_decode_to_the_same_points() {
    let received = Received::default();
    let carbon = FakeCarbon::start(0, Arc::clone(&received)).await;
    let sink = new_sink(settings(carbon.port, Protocol::Pickle, None, 10_000));
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::spawn(run(sink, rx));
    tx.send(batch(1764100001, 1200)).await.unwrap();
    drop(tx);
    task.await.unwrap().unwrap();
    let bytes = received.lock().unwrap().concat();
    let points = decode_pickles(&bytes);
    assert_eq!(points.len(), 1200);
    for (i, (path, ts, value)) in points.iter().enumerate() {
        assert_eq!(path, &format!("hyperstats.n1.d.m.{i}"));
        assert_eq!(*ts, 1764100001);
        assert_eq!(*value, 1764100001.0 + i as f64 / 1000.0);
    }
    carbon.stop().await;
}

#[tokio::test]
async fn carbon_going_away_and_back_loses_nothing_and_sends_oldest_first() {
    let received = Received::default();
    let carbon = FakeCarbon::start(0, Arc::clone(&received)).await;
    let port = carbon.port;
    let sink = new_sink(settings(port, Protocol::Plaintext, None, 100_000));
    // A small channel: if the sink stopped taking batches during the
    // outage, the sends below would time out.
    let (tx, rx) = mpsc::channel(2);
    let task = tokio::spawn(run(sink, rx));
    let send = |ts| {
        let tx = tx.clone();
        async move {
            tokio::time::timeout(Duration::from_millis(500), tx.send(batch(ts, 50)))
                .await
                .expect("the sink stopped taking batches")
                .unwrap();
        }
    };
    for ts in 0..5 {
        send(ts).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for("the first 250 points", Duration::from_secs(5), || {
        keys(&received).len() >= 250
    })
    .await;
    carbon.stop().await;
    for ts in 5..15 {
        send(ts).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first_connections = received.lock().unwrap().len();
    let carbon = FakeCarbon::start(port, Arc::clone(&received)).await;
    wait_for("all 750 points", Duration::from_secs(20), || {
        let mut k = keys(&received);
        k.sort();
        k.dedup();
        k.len() == 750
    })
    .await;
    // After the reconnect the queue went out oldest first (points written
    // just before the outage are replayed first, being older still).
    let after: Vec<i64> = lines(&received)[first_connections..]
        .concat()
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        after.windows(2).all(|w| w[0] <= w[1]),
        "out of order: {after:?}"
    );
    assert!(
        after.contains(&5),
        "the outage's points came after the reconnect"
    );
    drop(tx);
    task.await.unwrap().unwrap();
    carbon.stop().await;
}

#[tokio::test]
async fn spooled_points_survive_a_restart_and_go_first() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().await;
    let spooling = || {
        let spool = Some(dir.path().to_path_buf());
        new_sink(settings(port, Protocol::Plaintext, spool, 100_000))
    };
    // First run: Carbon is down the whole time; shutdown spools the queue.
    let sink = spooling();
    let (tx, rx) = mpsc::channel(8);
    let task = tokio::spawn(run(sink, rx));
    for ts in 1..=5 {
        tx.send(batch(ts, 10)).await.unwrap();
    }
    drop(tx);
    task.await.unwrap().unwrap();
    let spooled: usize = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .lines()
                .count()
        })
        .sum();
    assert_eq!(spooled, 50);

    // Second run: Carbon is back; the spool goes first, then new points.
    let received = Received::default();
    let carbon = FakeCarbon::start(port, Arc::clone(&received)).await;
    let sink = spooling();
    let (tx, rx) = mpsc::channel(8);
    let task = tokio::spawn(run(sink, rx));
    for ts in 6..=8 {
        tx.send(batch(ts, 10)).await.unwrap();
    }
    wait_for("80 points", Duration::from_secs(5), || {
        keys(&received).len() >= 80
    })
    .await;
    drop(tx);
    task.await.unwrap().unwrap();
    let ts: Vec<i64> = keys(&received).iter().map(|k| k.1).collect();
    assert_eq!(ts.len(), 80, "{ts:?}");
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{ts:?}");
    // Confirmed at shutdown: the spool is empty.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    carbon.stop().await;
}

#[tokio::test]
async fn acked_submissions_are_confirmed_by_carbon() {
    let received = Received::default();
    let carbon = FakeCarbon::start(0, Arc::clone(&received)).await;
    let sink = new_sink(settings(carbon.port, Protocol::Plaintext, None, 1000));
    let path = sink.agent_path("graphios.test");
    assert_eq!(&*path, "hyperstats.n1.agent.graphios.test");
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::spawn(sink.run(None, Some(rx)));
    for round in 0..3 {
        let (ack_tx, ack_rx) = oneshot::channel();
        let points = (0..5)
            .map(|i| CarbonPoint {
                path: format!("nagios.h.m{round}_{i}").into(),
                ts: 1764100000,
                value: i as f64,
            })
            .collect();
        tx.send(Submission {
            points,
            ack: Some(ack_tx),
        })
        .await
        .unwrap();
        tokio::time::timeout(Duration::from_secs(5), ack_rx)
            .await
            .expect("no ack")
            .expect("ack failed");
        // Acked means Carbon read them all already.
        assert_eq!(keys(&received).len(), 5 * (round + 1));
    }
    drop(tx);
    task.await.unwrap().unwrap();
    carbon.stop().await;
}

#[tokio::test]
async fn unreachable_carbon_fails_no_ack_until_points_are_dropped() {
    let port = free_port().await;
    let sink = new_sink(settings(port, Protocol::Plaintext, None, 10));
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::spawn(sink.run(None, Some(rx)));
    let point = |i: i64| CarbonPoint {
        path: "a.b".into(),
        ts: i,
        value: 0.0,
    };
    let (ack_tx, mut ack_rx) = oneshot::channel();
    tx.send(Submission {
        points: (0..5).map(point).collect(),
        ack: Some(ack_tx),
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(matches!(
        ack_rx.try_recv(),
        Err(oneshot::error::TryRecvError::Empty)
    ));
    // Over the limit of 10: the oldest (those five) are dropped.
    tx.send(Submission {
        points: (5..15).map(point).collect(),
        ack: None,
    })
    .await
    .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(2), ack_rx)
        .await
        .unwrap();
    assert!(r.is_err(), "ack of dropped points fired");
    drop(tx);
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn self_metrics_arrive_each_second_under_agent() {
    let received = Received::default();
    let carbon = FakeCarbon::start(0, Arc::clone(&received)).await;
    let s = settings(carbon.port, Protocol::Plaintext, None, 1000);
    let registry = Arc::new(Registry::default());
    let sink = CarbonSink::new(s, &registry).unwrap();
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::spawn(run(sink, rx));
    // The agent's reporter, as the pipeline runs it.
    let reporter = tokio::spawn(crate::self_stats::run(registry, tx.clone(), Arc::new));
    tx.send(batch(1764100001, 3)).await.unwrap();
    wait_for(
        "two seconds of self-metrics",
        Duration::from_secs(5),
        || {
            keys(&received)
                .iter()
                .filter(|k| k.0 == "hyperstats.n1.agent.carbon.sent_points")
                .count()
                >= 2
        },
    )
    .await;
    reporter.abort();
    let _ = reporter.await;
    drop(tx);
    task.await.unwrap().unwrap();
    let all = lines(&received).concat();
    let sent: f64 = all
        .iter()
        .filter(|l| l.starts_with("hyperstats.n1.agent.carbon.sent_points "))
        .map(|l| l.split(' ').nth(1).unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(sent >= 3.0, "sent_points summed to {sent}");
    for name in [
        "queued_points",
        "inflight_points",
        "spooled_points",
        "dropped_points",
        "reconnects",
        "connected",
    ] {
        let path = format!("hyperstats.n1.agent.carbon.{name} ");
        assert!(all.iter().any(|l| l.starts_with(&path)), "no {name}");
    }
    carbon.stop().await;
}

/// One second of a 2-vCPU guest, a metric of every family and shape, and
/// one agent series.
fn guest_second(ts: i64) -> Arc<Batch> {
    let metrics = [
        "state.code",
        "cpu.time_percent",
        "vcpu.current",
        "vcpu.0.delay_percent",
        "vcpu.1.runq_latency_us.p99",
        "vcpu.1.switches_voluntary_per_s",
        "balloon.rss_bytes",
        "block.vda.wr.latency_mean_ms",
        "net.vnet0.rx.bytes_per_s",
        "perf.cpu_cycles_per_s",
        "runq_latency_us.p99",
        "runq_latency_us.count",
        "oncpu_us.max",
    ];
    let mut points: Batch = metrics
        .iter()
        .map(|m| Datapoint {
            ts: ts as f64,
            uuid: "u-1".into(),
            domain: "web-1".into(),
            metric: (*m).into(),
            value: 1.0,
        })
        .collect();
    points.push(Datapoint::agent(
        ts as f64,
        "agent.libvirt.poll_failures".into(),
        0.0,
    ));
    Arc::new(points)
}

/// Sends `guest_second` through a sink configured as the `[carbon]`
/// section `config` says (its address pointed at a fake Carbon) and
/// returns the paths Carbon received, in order.
async fn paths_sent(config: config::CarbonConfig) -> Vec<String> {
    let received = Received::default();
    let carbon = FakeCarbon::start(0, Arc::clone(&received)).await;
    let config = config::CarbonConfig {
        address: Some(format!("127.0.0.1:{}", carbon.port)),
        host: Some("n1".into()),
        ..config
    };
    let settings = Settings::from_config(&config, "carbon").unwrap().unwrap();
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::spawn(run(new_sink(settings), rx));
    tx.send(guest_second(1764100001)).await.unwrap();
    drop(tx);
    task.await.unwrap().unwrap();
    carbon.stop().await;
    keys(&received)
        .into_iter()
        .inspect(|(_, ts)| assert_eq!(*ts, 1764100001))
        .map(|(path, _)| path)
        .collect()
}

#[tokio::test]
async fn the_default_sends_every_family_without_per_vcpu_detail() {
    let got = paths_sent(config::CarbonConfig::default()).await;
    let want = [
        "hyperstats.n1.web-1.state.code",
        "hyperstats.n1.web-1.cpu.time_percent",
        "hyperstats.n1.web-1.vcpu.current",
        "hyperstats.n1.web-1.balloon.rss_bytes",
        "hyperstats.n1.web-1.block.vda.wr.latency_mean_ms",
        "hyperstats.n1.web-1.net.vnet0.rx.bytes_per_s",
        "hyperstats.n1.web-1.perf.cpu_cycles_per_s",
        "hyperstats.n1.web-1.runq_latency_us.p99",
        "hyperstats.n1.web-1.runq_latency_us.count",
        "hyperstats.n1.web-1.oncpu_us.max",
        "hyperstats.n1.agent.libvirt.poll_failures",
    ];
    assert_eq!(got, want);
}

#[tokio::test]
async fn chosen_families_and_per_vcpu_detail_are_sent_histograms_and_agent_always() {
    let config = config::CarbonConfig {
        families: vec!["cpu".into(), "vcpu".into()],
        per_vcpu: true,
        ..Default::default()
    };
    let got = paths_sent(config).await;
    let want = [
        "hyperstats.n1.web-1.cpu.time_percent",
        "hyperstats.n1.web-1.vcpu.current",
        "hyperstats.n1.web-1.vcpu.0.delay_percent",
        "hyperstats.n1.web-1.vcpu.1.runq_latency_us.p99",
        "hyperstats.n1.web-1.vcpu.1.switches_voluntary_per_s",
        "hyperstats.n1.web-1.runq_latency_us.p99",
        "hyperstats.n1.web-1.runq_latency_us.count",
        "hyperstats.n1.web-1.oncpu_us.max",
        "hyperstats.n1.agent.libvirt.poll_failures",
    ];
    assert_eq!(got, want);
    // No family at all: the merged histograms and the agent still go.
    let config = config::CarbonConfig {
        families: Vec::new(),
        ..Default::default()
    };
    let got = paths_sent(config).await;
    assert_eq!(got, &want[5..]);
}
