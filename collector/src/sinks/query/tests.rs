//! Component tests: the query sink on a real Unix socket in a temporary
//! directory, answering from a rollup filled in-process.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_stats_query::{
    ErrorCode, GaugeQuery, HistogramQuery, MAX_REQUEST_BYTES, Outcome, Query, Request, Response,
};
use tokio::sync::mpsc;

use super::*;
use crate::sample::{Datapoint, Latency, Sample};

fn now() -> f64 {
    crate::clock::now_unix()
}

/// Sends raw bytes, returns the raw answer.
fn exchange(path: &Path, request: &[u8]) -> String {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // An oversized request may be answered (and the socket closed) before
    // all of it is written.
    let _ = s.write_all(request);
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn ask(path: &Path, query: Query) -> Outcome {
    let line = exchange(path, Request::new(query).to_line().as_bytes());
    let r: Response = serde_json::from_str(&line).unwrap();
    r.outcome
}

fn error_of(answer: &str) -> (ErrorCode, String) {
    let r: Response = serde_json::from_str(answer).unwrap_or_else(|e| panic!("{answer:?}: {e}"));
    match r.outcome {
        Outcome::Error(e) => (e.code, e.message),
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn wait_for_socket(path: &Path) {
    for _ in 0..200 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} never appeared", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_gauges_histograms_and_survives_bad_clients() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run").join("q.sock");
    let settings = Settings {
        socket: path.clone(),
        // Root's group always exists, so the chown is exercised too.
        group: Some("0".into()),
    };
    let rollup: SharedRollup = Arc::default();
    let (tx, rx) = mpsc::channel(8);
    let sink = tokio::spawn(run(settings, Arc::clone(&rollup), rx));
    wait_for_socket(&path).await;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660);
    let dir_mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o750);

    // A histogram filled the way the eBPF source fills it, and a libvirt
    // series next to it, through the rollup stage's ingest.
    let t = now();
    let latency = |vcpu, value_ns: u64, count: u64| {
        Sample::Latency(Latency {
            ts: t,
            uuid: "u1".into(),
            domain: "web-1".into(),
            vcpu,
            metric: "runq_latency",
            values: vec![(value_ns, count)],
            sum_ns: value_ns * count,
        })
    };
    let mut batch = vec![latency(0, 20_000, 100), latency(1, 2_000_000, 2)];
    for (i, v) in [1.5, 2.5].into_iter().enumerate() {
        batch.push(Sample::Gauge(Datapoint {
            ts: t - 1.0 + i as f64,
            uuid: "u1".into(),
            domain: "web-1".into(),
            metric: "vcpu.0.delay_percent".into(),
            value: v,
        }));
    }
    rollup.write().unwrap().ingest(batch);

    let path2 = path.clone();
    tokio::task::spawn_blocking(move || {
        let path = path2;
        // Bad clients first: each gets an error line, nothing else changes.
        let cases: Vec<(Vec<u8>, ErrorCode)> = vec![
            (b"hello\n".to_vec(), ErrorCode::BadRequest),
            (b"{\"v\":1,\"op\":\"list\"".to_vec(), ErrorCode::BadRequest),
            (
                b"{\"v\":9,\"op\":\"list\"}\n".to_vec(),
                ErrorCode::UnsupportedVersion,
            ),
            (vec![b'x'; MAX_REQUEST_BYTES * 4], ErrorCode::TooLarge),
            (vec![0xff, 0xfe, b'\n'], ErrorCode::BadRequest),
            (b"\n".to_vec(), ErrorCode::BadRequest),
        ];
        for (request, code) in cases {
            let (got, message) = error_of(&exchange(&path, &request));
            assert_eq!(got, code, "{message}");
        }
        // A client that connects and says nothing is cut off in time.
        let mut idle = UnixStream::connect(&path).unwrap();
        let started = std::time::Instant::now();
        let mut out = String::new();
        idle.read_to_string(&mut out).unwrap();
        assert!(started.elapsed() < server::IO_TIMEOUT + Duration::from_secs(1));
        assert!(out.contains("no request line"), "{out}");

        let Outcome::List(list) = ask(&path, Query::List) else {
            panic!()
        };
        assert_eq!(list.histograms, ["runq_latency_us"]);
        assert_eq!(list.domains.len(), 1);
        assert_eq!(list.domains[0].metrics, ["vcpu.0.delay_percent"]);

        let Outcome::Gauge(g) = ask(
            &path,
            Query::Gauge(GaugeQuery {
                metric: "vcpu.*.delay_percent".into(),
                window_s: 60,
            }),
        ) else {
            panic!()
        };
        let s = &g.domains[0].series[0];
        assert_eq!((s.avg, s.max, s.samples), (Some(2.0), Some(2.5), 2));

        let Outcome::Histogram(h) = ask(
            &path,
            Query::Histogram(HistogramQuery {
                metric: "runq_latency_us".into(),
                window_s: 60,
                percentiles: vec![50.0, 99.0],
                per_vcpu: true,
            }),
        ) else {
            panic!()
        };
        let d = &h.domains[0];
        assert_eq!(d.all.count, 102);
        let p50 = d.all.values[0].unwrap();
        let p99 = d.all.values[1].unwrap();
        assert!((p50 - 20.0).abs() < 0.5, "{p50}");
        assert!((p99 - 2000.0).abs() < 25.0, "{p99}");
        assert_eq!(d.vcpus.len(), 2);
        assert!(d.age_s.unwrap() < 5.0);
    })
    .await
    .unwrap();

    // Many clients at once, all answered.
    let mut clients = Vec::new();
    for _ in 0..100 {
        let path = path.clone();
        clients.push(tokio::task::spawn_blocking(move || {
            matches!(ask(&path, Query::List), Outcome::List(_))
        }));
    }
    for c in clients {
        assert!(c.await.unwrap());
    }

    // Stopping the stream stops the sink and removes the socket.
    drop(tx);
    sink.await.unwrap().unwrap();
    assert!(!path.exists());
}

#[tokio::test]
async fn replaces_a_stale_socket_but_not_a_live_one_or_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sock");
    // A stale socket: bound, then its listener dropped.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(
        std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket()
    );
    let bound = server::bind(&path, None).unwrap();
    // Now live: a second agent must not take it over.
    let err = format!("{:#}", server::bind(&path, None).err().unwrap());
    assert!(err.contains("another process is listening"), "{err}");
    drop(bound);
    assert!(!path.exists());

    std::fs::write(&path, "not a socket").unwrap();
    let err = format!("{:#}", server::bind(&path, None).err().unwrap());
    assert!(err.contains("is not a socket"), "{err}");
    assert!(path.exists());
}

#[tokio::test]
async fn a_socket_that_cannot_be_created_does_not_stop_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        socket: dir.path().join("q.sock"),
        group: Some("no-such-group-hyper-stats".into()),
    };
    let (tx, rx) = mpsc::channel(8);
    let sink = tokio::spawn(run(settings, SharedRollup::default(), rx));
    for _ in 0..20 {
        tx.send(Arc::new(Vec::new())).await.unwrap();
    }
    assert!(!sink.is_finished(), "the sink runs on without its socket");
    drop(tx);
    sink.await.unwrap().unwrap();
    assert!(!dir.path().join("q.sock").exists());
}
