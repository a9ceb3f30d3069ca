//! CLI golden files: the real `check_hyper_stats` binary against a fake
//! agent socket serving canned answers, its stdout and exit code compared
//! with `tests/output/<case>.txt`.
//!
//! Run with `UPDATE_GOLDEN=1` to rewrite the files after an intended
//! change, then review the diff.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hyper_stats_query::{
    ErrorCode, GaugeAnswer, GaugeDomain, GaugeSeries, HistogramAnswer, HistogramDomain,
    HistogramValues, Outcome, Query, Response, VcpuValues, parse_request,
};

/// The socket name every case uses, relative to the plugin's working
/// directory, so that no temporary path ends up in a golden file.
const SOCKET: &str = "agent.sock";

/// A fake agent answering every request with `answer`, until the test ends.
fn fake_agent(dir: &Path, answer: fn(&Query) -> Option<Response>) {
    let listener = UnixListener::bind(dir.join(SOCKET)).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).unwrap();
            let request = parse_request(line.trim_end().as_bytes()).unwrap();
            match answer(&request.query) {
                Some(r) => stream.write_all(r.to_line().as_bytes()).unwrap(),
                // Never answers: the plugin's timeout must fire.
                None => std::thread::sleep(Duration::from_secs(30)),
            }
        }
    });
}

fn histogram(q: &Query) -> Option<Response> {
    let Query::Histogram(q) = q else {
        panic!("{q:?}")
    };
    let domains = [
        ("hs-lab-1", 812.5, [700.0, 812.5]),
        ("hs-lab-2", 6400.0, [6400.0, 0.0]),
        ("db", 15000.0, [15000.0, 90.0]),
    ]
    .into_iter()
    .map(|(name, v, per)| HistogramDomain {
        uuid: format!("uuid-{name}"),
        domain: name.into(),
        age_s: Some(0.6),
        all: HistogramValues {
            count: 4321,
            values: vec![Some(v)],
            max: Some(v * 1.5),
        },
        vcpus: if q.per_vcpu {
            per.iter()
                .enumerate()
                .map(|(i, v)| VcpuValues {
                    vcpu: i as u32,
                    values: HistogramValues {
                        count: if *v > 0.0 { 2000 } else { 0 },
                        values: vec![(*v > 0.0).then_some(*v)],
                        max: (*v > 0.0).then_some(*v),
                    },
                })
                .collect()
        } else {
            vec![]
        },
    })
    .collect();
    Some(Response::new(Outcome::Histogram(HistogramAnswer {
        metric: q.metric.clone(),
        window_s: q.window_s,
        percentiles: q.percentiles.clone(),
        newest_age_s: Some(0.6),
        domains_total: 3,
        domains,
    })))
}

fn gauge(q: &Query) -> Option<Response> {
    let Query::Gauge(q) = q else { panic!("{q:?}") };
    let series = |vals: &[f64]| {
        vals.iter()
            .enumerate()
            .map(|(i, v)| GaugeSeries {
                metric: format!("vcpu.{i}.delay_percent"),
                samples: 300,
                avg: Some(*v),
                max: Some(v * 3.0),
                min: Some(0.0),
                last: *v,
                age_s: 0.4,
            })
            .collect()
    };
    Some(Response::new(Outcome::Gauge(GaugeAnswer {
        metric: q.metric.clone(),
        window_s: q.window_s,
        newest_age_s: Some(0.4),
        domains_total: 2,
        domains: vec![
            GaugeDomain {
                uuid: "u1".into(),
                domain: "hs-lab-1".into(),
                series: series(&[0.41, 12.5]),
            },
            GaugeDomain {
                uuid: "u2".into(),
                domain: "hs-lab-2".into(),
                series: series(&[3.25]),
            },
        ],
        agent: Vec::new(),
    })))
}

fn many(q: &Query) -> Option<Response> {
    let Query::Histogram(q) = q else {
        panic!("{q:?}")
    };
    Some(Response::new(Outcome::Histogram(HistogramAnswer {
        metric: q.metric.clone(),
        window_s: q.window_s,
        percentiles: q.percentiles.clone(),
        newest_age_s: Some(0.5),
        domains_total: 64,
        domains: (0..64)
            .map(|i| HistogramDomain {
                uuid: format!("u{i}"),
                domain: format!("compute-guest-{i:02}"),
                age_s: Some(0.5),
                all: HistogramValues {
                    count: 1000,
                    values: vec![Some(100.0 * f64::from(i))],
                    max: None,
                },
                vcpus: vec![],
            })
            .collect(),
    })))
}

fn stale(q: &Query) -> Option<Response> {
    let mut r = histogram(q)?;
    if let Outcome::Histogram(a) = &mut r.outcome {
        a.newest_age_s = Some(95.0);
    }
    Some(r)
}

/// libvirtd down while the eBPF source keeps the answer fresh: one
/// domain's libvirt series stopped 95 s ago.
fn stale_series(q: &Query) -> Option<Response> {
    let mut r = gauge(q)?;
    if let Outcome::Gauge(a) = &mut r.outcome {
        for s in &mut a.domains[0].series {
            s.age_s = 95.0;
        }
    }
    Some(r)
}

fn empty_window(q: &Query) -> Option<Response> {
    let mut r = histogram(q)?;
    if let Outcome::Histogram(a) = &mut r.outcome {
        for d in &mut a.domains {
            d.all = HistogramValues {
                count: 0,
                values: vec![None],
                max: None,
            };
        }
    }
    Some(r)
}

fn refuses(_: &Query) -> Option<Response> {
    Some(Response::error(
        ErrorCode::UnknownMetric,
        "no domain has a series matching \"cpu.nope\" (2 domains known; `list` shows their series)",
    ))
}

fn silent(_: &Query) -> Option<Response> {
    None
}

struct Case {
    name: &'static str,
    agent: Option<fn(&Query) -> Option<Response>>,
    args: &'static [&'static str],
    code: i32,
}

const CASES: &[Case] = &[
    Case {
        name: "help",
        agent: None,
        args: &["--help"],
        code: 0,
    },
    Case {
        name: "version",
        agent: None,
        args: &["-V"],
        code: 0,
    },
    Case {
        name: "no_args",
        agent: None,
        args: &[],
        code: 3,
    },
    Case {
        name: "ok",
        agent: Some(histogram),
        args: &[
            "-m",
            "runq_latency_us",
            "-p",
            "99",
            "--window",
            "5m",
            "-w",
            "20000",
            "-c",
            "30000",
        ],
        code: 0,
    },
    Case {
        name: "warning",
        agent: Some(histogram),
        args: &["-m", "runq_latency_us", "-w", "5000", "-c", "20000"],
        code: 1,
    },
    Case {
        name: "critical",
        agent: Some(histogram),
        args: &["-m", "runq_latency_us", "-w", "5000", "-c", "10000"],
        code: 2,
    },
    Case {
        name: "warning_per_vcpu",
        agent: Some(histogram),
        args: &[
            "-m",
            "runq_latency_us",
            "--per-vcpu",
            "-w",
            "5000",
            "-c",
            "10000",
            "-x",
            "db",
        ],
        code: 1,
    },
    Case {
        name: "warning_gauge",
        agent: Some(gauge),
        args: &[
            "-m",
            "vcpu.*.delay_percent",
            "--window",
            "5m",
            "-w",
            "10",
            "-c",
            "25",
        ],
        code: 1,
    },
    Case {
        name: "ok_domain_glob",
        agent: Some(histogram),
        args: &[
            "-m",
            "runq_latency_us",
            "-w",
            "5000",
            "-c",
            "10000",
            "--domain",
            "hs-lab-1",
        ],
        code: 0,
    },
    Case {
        name: "critical_cut_to_1023_bytes",
        agent: Some(many),
        args: &[
            "-m",
            "runq_latency_us",
            "-w",
            "3000",
            "-c",
            "5000",
            "--max-bytes",
            "1023",
        ],
        code: 2,
    },
    Case {
        name: "unknown_agent_not_running",
        agent: None,
        args: &["-m", "runq_latency_us", "-w", "5000"],
        code: 3,
    },
    Case {
        name: "unknown_stale",
        agent: Some(stale),
        args: &["-m", "runq_latency_us", "-w", "5000", "--max-age", "60s"],
        code: 3,
    },
    Case {
        name: "unknown_stale_series",
        agent: Some(stale_series),
        args: &[
            "-m",
            "vcpu.*.delay_percent",
            "-w",
            "10",
            "-c",
            "25",
            "--max-age",
            "60s",
        ],
        code: 3,
    },
    Case {
        name: "unknown_window_filling",
        agent: Some(empty_window),
        args: &["-m", "runq_latency_us", "-w", "5000", "--window", "15m"],
        code: 3,
    },
    Case {
        name: "unknown_metric",
        agent: Some(refuses),
        args: &["-m", "cpu.nope", "-w", "5"],
        code: 3,
    },
    Case {
        name: "unknown_bad_range",
        agent: Some(histogram),
        args: &["-m", "runq_latency_us", "-w", "10:5"],
        code: 3,
    },
    Case {
        name: "unknown_no_domain_matches",
        agent: Some(histogram),
        args: &["-m", "runq_latency_us", "-w", "5000", "-d", "web-*"],
        code: 3,
    },
    Case {
        name: "unknown_timeout",
        agent: Some(silent),
        args: &["-m", "runq_latency_us", "-w", "5000", "-t", "1"],
        code: 3,
    },
    Case {
        name: "unknown_bad_option_mix",
        agent: Some(gauge),
        args: &["-m", "vcpu.*.delay_percent", "--per-vcpu"],
        code: 3,
    },
];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/output")
}

#[test]
fn golden_outputs() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for case in CASES {
        let dir = tempfile::tempdir().unwrap();
        if let Some(agent) = case.agent {
            fake_agent(dir.path(), agent);
        }
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_check_hyper_stats"))
            .args(["-S", SOCKET])
            .args(case.args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let elapsed = started.elapsed();
        assert!(
            out.stderr.is_empty(),
            "{}: stderr {:?}",
            case.name,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.status.code(),
            Some(case.code),
            "{}: {}",
            case.name,
            String::from_utf8_lossy(&out.stdout)
        );
        if case.name == "unknown_timeout" {
            assert!(
                elapsed < Duration::from_millis(1800),
                "timeout took {elapsed:?}"
            );
        }
        let text = String::from_utf8(out.stdout).unwrap();
        let got = format!("{text}[exit {}]\n", case.code);
        let path = golden_dir().join(format!("{}.txt", case.name));
        if update {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if got != want {
            failures.push(format!("--- {}\n{}+++ got\n{got}", path.display(), want));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatch (UPDATE_GOLDEN=1 rewrites):\n{}",
        failures.join("\n")
    );
}

#[test]
fn cut_output_fits_nrpe_and_keeps_the_worst() {
    let text =
        std::fs::read_to_string(golden_dir().join("critical_cut_to_1023_bytes.txt")).unwrap();
    let output = text.rsplit_once("[exit").unwrap().0;
    assert!(output.len() <= 1023, "{} bytes", output.len());
    assert!(output.contains("'compute-guest-63.runq_latency_us.p99'=6300us"));
    assert!(output.contains("domains left out of this output to fit 1023 bytes"));
}
