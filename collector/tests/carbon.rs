//! The Carbon sink end to end, with a real carbon-cache (Debian's
//! graphite-carbon, run by hand with its own config, ports and pid file on
//! 127.0.0.1, 1 s retention) and the real agent on the lab guests. What
//! Carbon stored is read back from whisper with `whisper-fetch --json` and
//! compared, value for value, with what the same agent printed with
//! `--output json`.
//!
//! - every second of every series reaches whisper, equal to the JSON;
//! - carbon-cache stopped for 60 s mid-run: nothing lost, sampling never
//!   paused;
//! - the same with the agent restarted while Carbon is down, a disk spool
//!   configured;
//! - `hyper-stats graphios`: Nagios perfdata spool files (written as Nagios
//!   does with the Graphios template) end up in whisper, files deleted;
//! - the same with the spool files a real Nagios 4 core wrote (common's
//!   [`Nagios`] fixture running check_hyper_stats against the agent).
//!
//! Needs the lab (`cargo xtask lab up`) and `cargo xtask setup`'s
//! graphite-carbon and python3-whisper (and nagios4-core for the last);
//! run by `cargo xtask test`. Every carbon-cache here is started and
//! stopped by this file, by its pid.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

mod common;

use common::graphite::write_carbon_config;
use common::{Agent, Finished, NAGIOS, Nagios, Point, build_plugin, lab_guests, nagios_ids};

/// The path component the agent is told to use for this node.
const NODE: &str = "labhost";

/// How long carbon-cache may take to write what it holds to whisper.
const WHISPER_SETTLE: Duration = Duration::from_secs(30);

/// A carbon-cache of our own.
struct Carbon {
    dir: PathBuf,
    line_port: u16,
    pickle_port: u16,
    pid: Option<u32>,
}

impl Carbon {
    /// Writes a config (1 s retention, no rate limits, 127.0.0.1 only)
    /// under `dir` and starts carbon-cache.
    fn start(dir: &Path) -> Carbon {
        for tool in ["/usr/bin/carbon-cache", "/usr/bin/whisper-fetch"] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: run `cargo xtask setup` (installs graphite-carbon, python3-whisper)"
            );
        }
        let [line_port, pickle_port, _] = write_carbon_config(dir);
        let mut c = Carbon {
            dir: dir.to_path_buf(),
            line_port,
            pickle_port,
            pid: None,
        };
        c.restart();
        c
    }

    /// Starts carbon-cache (again, on the same ports and storage).
    fn restart(&mut self) {
        assert!(self.pid.is_none(), "carbon-cache is running");
        let pidfile = self.dir.join("carbon.pid");
        let out = Command::new("carbon-cache")
            .arg(format!(
                "--config={}",
                self.dir.join("carbon.conf").display()
            ))
            .arg(format!("--pidfile={}", pidfile.display()))
            .arg(format!("--logdir={}", self.dir.join("log").display()))
            .arg("start")
            .output()
            .expect("carbon-cache runs");
        assert!(
            out.status.success(),
            "carbon-cache start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let pid = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            if let Some(pid) = pid
                && TcpStream::connect(("127.0.0.1", self.line_port)).is_ok()
                && TcpStream::connect(("127.0.0.1", self.pickle_port)).is_ok()
            {
                self.pid = Some(pid);
                return;
            }
            assert!(
                Instant::now() < until,
                "carbon-cache did not start listening"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops carbon-cache with SIGTERM (it writes its cache out first) and
    /// waits until it has exited.
    fn stop(&mut self) {
        let Some(pid) = self.pid.take() else { return };
        signal(pid, "TERM");
        let until = Instant::now() + Duration::from_secs(60);
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(Instant::now() < until, "carbon-cache {pid} did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn whisper_file(&self, path: &str) -> PathBuf {
        let mut f = self.dir.join("storage/whisper");
        for c in path.split('.') {
            f.push(c);
        }
        f.set_extension("wsp");
        f
    }

    /// `whisper-fetch --json` of `path` for seconds `from..=until`: the
    /// seconds holding a value.
    fn fetch(&self, path: &str, from: i64, until: i64) -> BTreeMap<i64, f64> {
        #[derive(Deserialize)]
        struct Fetched {
            start: i64,
            step: i64,
            values: Vec<Option<f64>>,
        }
        let file = self.whisper_file(path);
        if !file.exists() {
            return BTreeMap::new();
        }
        let out = Command::new("whisper-fetch")
            .arg("--json")
            .arg(format!("--from={}", from - 1))
            .arg(format!("--until={until}"))
            .arg(&file)
            .output()
            .expect("whisper-fetch runs");
        assert!(
            out.status.success(),
            "whisper-fetch {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let f: Fetched = serde_json::from_slice(&out.stdout).unwrap();
        f.values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (f.start + i as i64 * f.step, v)))
            .collect()
    }
}

impl Drop for Carbon {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// The agent with `--output json --carbon 127.0.0.1:PORT` and `extra`
/// arguments, its stdout collected and its log kept (and echoed).
fn start_agent(config: &Path, carbon_port: u16, extra: &[&str]) -> Agent {
    Agent::json()
        .config(config)
        .args(&["--carbon".to_owned(), format!("127.0.0.1:{carbon_port}")])
        .args(extra)
        .keep_log()
        .start()
}

/// A config for the agent: this node named `labhost`, no query socket,
/// and `extra` TOML in the `[carbon]` section.
fn agent_config(dir: &Path, carbon_extra: &str) -> PathBuf {
    let path = dir.join("hyper-stats.toml");
    std::fs::write(
        &path,
        format!("[query]\nenabled = false\n\n[carbon]\nhost = \"{NODE}\"\n{carbon_extra}\n"),
    )
    .unwrap();
    path
}

/// The JSON points as series → second → value (the last one printed for
/// a second, which is what whisper keeps).
fn series(points: &[Point]) -> BTreeMap<(String, String), BTreeMap<i64, f64>> {
    let mut out: BTreeMap<(String, String), BTreeMap<i64, f64>> = BTreeMap::new();
    for p in points {
        out.entry((p.domain.clone(), p.metric.clone()))
            .or_default()
            .insert(p.ts.floor() as i64, p.value);
    }
    out
}

/// The whisper path of a lab guest's series (lab names need no sanitizing).
fn carbon_path(domain: &str, metric: &str) -> String {
    format!("hyperstats.{NODE}.{domain}.{metric}")
}

/// Whether the agent sends `metric` to Carbon with the default `[carbon]`
/// settings: everything but the per-vCPU detail (`vcpu.N.*`, off unless
/// `per_vcpu = true`) and the heatmap buckets (`*_us.buckets.N`, off
/// unless `heatmap = true`), which the JSON output has.
fn sent_by_default(metric: &str) -> bool {
    let vcpu_index = metric
        .strip_prefix("vcpu.")
        .and_then(|rest| rest.split('.').next());
    vcpu_index.is_none_or(|n| n.parse::<u32>().is_err()) && !metric.contains("_us.buckets.")
}

/// Waits until whisper holds every JSON point of every lab guest that the
/// default settings send to Carbon, with the same value, and none of the
/// per-vCPU detail they hold back; panics with the differences after
/// [`WHISPER_SETTLE`].
fn assert_whisper_matches(carbon: &Carbon, points: &[Point]) -> usize {
    // Every lab guest the agent saw (guests may come and go meanwhile);
    // at least one must be running now.
    assert!(!lab_guests().is_empty());
    let all = series(points);
    let (wanted, withheld): (Vec<_>, Vec<_>) = all
        .iter()
        .filter(|((d, _), _)| d.starts_with("hs-lab-"))
        .partition(|((_, m), _)| sent_by_default(m));
    assert!(
        !withheld.is_empty(),
        "the agent printed no per-vCPU series of a lab guest"
    );
    assert!(
        withheld
            .iter()
            .any(|((_, m), _)| m.contains("_us.buckets.")),
        "the agent printed no heatmap bucket of a lab guest"
    );
    assert!(
        !wanted.is_empty(),
        "the agent printed no point of a lab guest"
    );
    let until = Instant::now() + WHISPER_SETTLE;
    loop {
        let mut missing = Vec::new();
        let mut differ = Vec::new();
        let mut checked = 0;
        for ((domain, metric), seconds) in &wanted {
            let path = carbon_path(domain, metric);
            let first = *seconds.keys().next().unwrap();
            let last = *seconds.keys().last().unwrap();
            let stored = carbon.fetch(&path, first, last);
            for (ts, value) in seconds.iter() {
                checked += 1;
                match stored.get(ts) {
                    None => missing.push(format!("{path} @{ts}")),
                    Some(v) if v.to_bits() != value.to_bits() => {
                        differ.push(format!("{path} @{ts}: json {value} whisper {v}"))
                    }
                    Some(_) => {}
                }
            }
        }
        if missing.is_empty() && differ.is_empty() {
            let stored: Vec<_> = withheld
                .iter()
                .map(|((d, m), _)| carbon_path(d, m))
                .filter(|path| carbon.whisper_file(path).exists())
                .collect();
            assert!(
                stored.is_empty(),
                "per-vCPU series or heatmap buckets reached whisper with per_vcpu and heatmap off: {:?}",
                &stored[..stored.len().min(5)]
            );
            eprintln!(
                "whisper matches the JSON: {checked} points in {} series; {} per-vCPU and heatmap series held back",
                wanted.len(),
                withheld.len()
            );
            return checked;
        }
        if Instant::now() >= until {
            panic!(
                "after {WHISPER_SETTLE:?}: {} of {checked} points missing from whisper (first: {:?}), {} differ (first: {:?})",
                missing.len(),
                missing.iter().take(10).collect::<Vec<_>>(),
                differ.len(),
                differ.iter().take(10).collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The longest stretch without a sample the agent may have on a loaded
/// 2-core machine (a poll slower than its interval skips a tick); a
/// sampling loop that waited on Carbon would show the whole outage.
const MAX_SAMPLING_GAP_S: i64 = 5;

/// The agent sampled throughout `from..=to`: a lab guest's `state.code`
/// at least every [`MAX_SAMPLING_GAP_S`], and the pipeline never had to
/// drop batches for the Carbon sink. Returns the share of seconds sampled.
fn assert_never_paused(points: &[Point], log: &[String], from: i64, to: i64) -> f64 {
    let seconds: BTreeSet<i64> = points
        .iter()
        .filter(|p| p.domain.starts_with("hs-lab-") && p.metric == "state.code")
        .map(|p| p.ts.floor() as i64)
        .filter(|s| (from..=to).contains(s))
        .collect();
    let mut last = from - 1;
    for s in seconds.iter().copied().chain([to + 1]) {
        assert!(
            s - last <= MAX_SAMPLING_GAP_S,
            "no sample from {last} to {s}: sampling paused for {}s",
            s - last - 1
        );
        last = s;
    }
    let behind: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("falling behind") && l.contains("carbon"))
        .collect();
    assert!(behind.is_empty(), "the Carbon sink fell behind: {behind:?}");
    seconds.len() as f64 / (to - from + 1) as f64
}

/// The sum of the agent's own `agent.carbon.<metric>` over its whisper
/// file.
fn agent_sum(carbon: &Carbon, metric: &str, from: i64, to: i64) -> f64 {
    carbon
        .fetch(
            &format!("hyperstats.{NODE}.agent.carbon.{metric}"),
            from,
            to,
        )
        .values()
        .sum()
}

/// Runs `hyper-stats --config CONFIG graphios --once` over `spool` to the
/// Carbon at `port`.
fn graphios_once(config: &Path, spool: &Path, port: u16) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hyper-stats"))
        .arg("--config")
        .arg(config)
        .args(["graphios", "--once", "--spool"])
        .arg(spool)
        .arg("--carbon")
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .unwrap()
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn first_last(points: &[Point]) -> (i64, i64) {
    let ts = points.iter().map(|p| p.ts.floor() as i64);
    (ts.clone().min().unwrap(), ts.max().unwrap())
}

#[test]
#[ignore = "needs the lab: cargo xtask test"]
fn whisper_holds_every_second_the_json_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let carbon = Carbon::start(&tmp.path().join("carbon"));
    let config = agent_config(tmp.path(), "");
    let agent = start_agent(&config, carbon.line_port, &["--duration", "30s"]);
    let Finished { points, log } = agent.wait();
    let (first, last) = first_last(&points);
    assert!(last - first >= 28, "the agent ran {}s", last - first);
    let checked = assert_whisper_matches(&carbon, &points);
    // Whisper has a point in exactly the seconds the JSON has one, for
    // every series Carbon gets: one per second wherever the agent sampled.
    for ((domain, metric), seconds) in series(&points) {
        if !domain.starts_with("hs-lab-") || !sent_by_default(&metric) {
            continue;
        }
        let stored = carbon.fetch(&carbon_path(&domain, &metric), first, last);
        let stored: Vec<i64> = stored.into_keys().collect();
        let printed: Vec<i64> = seconds.into_keys().collect();
        assert_eq!(stored, printed, "{domain} {metric}");
    }
    let sampled = assert_never_paused(&points, &log, first, last);
    assert_eq!(agent_sum(&carbon, "dropped_points", first, now_s()), 0.0);
    eprintln!(
        "30 s: {checked} points checked; {:.0}% of the seconds sampled",
        sampled * 100.0
    );
}

#[test]
#[ignore = "needs the lab: cargo xtask test"]
fn pickle_protocol_stores_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let carbon = Carbon::start(&tmp.path().join("carbon"));
    let config = agent_config(tmp.path(), "protocol = \"pickle\"");
    let agent = start_agent(&config, carbon.pickle_port, &["--duration", "10s"]);
    let points = agent.wait().points;
    assert_whisper_matches(&carbon, &points);
}

#[test]
#[ignore = "needs the lab: cargo xtask test"]
fn carbon_outage_of_60s_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut carbon = Carbon::start(&tmp.path().join("carbon"));
    let config = agent_config(tmp.path(), "");
    let agent = start_agent(&config, carbon.line_port, &[]);
    std::thread::sleep(Duration::from_secs(20));
    let down_at = now_s();
    carbon.stop();
    eprintln!("carbon-cache stopped at {down_at}");
    std::thread::sleep(Duration::from_secs(60));
    carbon.restart();
    let up_at = now_s();
    eprintln!("carbon-cache started at {up_at}");
    std::thread::sleep(Duration::from_secs(30));
    let Finished { points, log } = agent.stop();
    let (first, last) = first_last(&points);
    // Sampling never paused, outage included.
    let sampled = assert_never_paused(&points, &log, first, last);
    let sampled_in_outage = assert_never_paused(&points, &log, down_at, up_at);
    let checked = assert_whisper_matches(&carbon, &points);
    let outage: usize = points
        .iter()
        .filter(|p| (down_at..up_at).contains(&(p.ts as i64)))
        .count();
    assert!(outage > 0);
    assert!(agent_sum(&carbon, "reconnects", first, now_s()) >= 1.0);
    assert_eq!(agent_sum(&carbon, "dropped_points", first, now_s()), 0.0);
    eprintln!(
        "outage: {checked} points checked, {outage} of them sampled while carbon-cache was down; \
         {:.0}% of the seconds sampled ({:.0}% during the outage)",
        sampled * 100.0,
        sampled_in_outage * 100.0
    );
}

#[test]
#[ignore = "needs the lab: cargo xtask test"]
fn agent_restarted_during_an_outage_sends_its_spool() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let mut carbon = Carbon::start(&tmp.path().join("carbon"));
    let config = agent_config(
        tmp.path(),
        &format!(
            "spool_dir = \"{}\"\nspool_max_size = \"64MiB\"",
            spool.display()
        ),
    );
    let first_agent = start_agent(&config, carbon.line_port, &[]);
    std::thread::sleep(Duration::from_secs(15));
    carbon.stop();
    std::thread::sleep(Duration::from_secs(20));
    // A clean stop while Carbon is down: the queue goes to the spool.
    let mut points = first_agent.stop().points;
    let spooled: usize = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .lines()
                .count()
        })
        .sum();
    eprintln!("first agent stopped; {spooled} points spooled");
    assert!(spooled > 0, "nothing was spooled");
    let second_agent = start_agent(&config, carbon.line_port, &[]);
    std::thread::sleep(Duration::from_secs(15));
    carbon.restart();
    std::thread::sleep(Duration::from_secs(25));
    let Finished {
        points: second,
        log,
    } = second_agent.stop();
    let (from, to) = first_last(&second);
    assert_never_paused(&second, &log, from, to);
    points.extend(second);
    let checked = assert_whisper_matches(&carbon, &points);
    let left: Vec<_> = std::fs::read_dir(&spool).unwrap().collect();
    assert!(
        left.is_empty(),
        "the spool still holds {} files",
        left.len()
    );
    eprintln!("restart with spool: {checked} points checked");
}

/// A Nagios perfdata spool line in the Graphios template of the README.
fn perfdata_line(
    timet: i64,
    host: &str,
    desc: &str,
    perfdata: &str,
    prefix: &str,
    postfix: &str,
) -> String {
    format!(
        "DATATYPE::SERVICEPERFDATA\tTIMET::{timet}\tHOSTNAME::{host}\tSERVICEDESC::{desc}\t\
         SERVICEPERFDATA::{perfdata}\tSERVICECHECKCOMMAND::check_hyper_stats_nrpe!x\t\
         HOSTSTATE::UP\tHOSTSTATETYPE::HARD\tSERVICESTATE::OK\tSERVICESTATETYPE::HARD\t\
         GRAPHITEPREFIX::{prefix}\tGRAPHITEPOSTFIX::{postfix}\n"
    )
}

#[test]
#[ignore = "needs the lab: cargo xtask test"]
fn graphios_moves_perfdata_spool_files_into_whisper() {
    let tmp = tempfile::tempdir().unwrap();
    let mut carbon = Carbon::start(&tmp.path().join("carbon"));
    let spool = tmp.path().join("graphios");
    std::fs::create_dir_all(&spool).unwrap();
    let config = agent_config(tmp.path(), "");
    let t0 = now_s() - 60;
    // Six files as Nagios leaves them, 10 s apart, each with two checks of
    // the lab node plus one service without prefix/postfix (not for
    // Graphite) and a malformed line.
    let mut want: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    for f in 0..6 {
        let t = t0 + f * 10;
        let mut text = String::new();
        for (i, guest) in ["hs-lab-1", "hs-lab-2"].iter().enumerate() {
            let p99 = 0.25 * (f as f64 + 1.0) + i as f64;
            let delay = 1.5 + f as f64 / 8.0;
            text += &perfdata_line(
                t,
                "lab-node.example.com",
                "VM vCPU run-queue p99",
                &format!(
                    "'{guest}_rq_p99'={p99}ms;5;10;0; '{guest}.vcpu.0.delay_percent.avg'={delay}%;20;50;0;"
                ),
                "nagios.dc1",
                "hyperstats",
            );
            want.entry(format!(
                "nagios.dc1.lab-node_example_com.hyperstats.{guest}_rq_p99"
            ))
            .or_default()
            .insert(t, p99);
            want.entry(format!(
                "nagios.dc1.lab-node_example_com.hyperstats.{guest}.vcpu.0.delay_percent.avg"
            ))
            .or_default()
            .insert(t, delay);
        }
        text += &perfdata_line(
            t,
            "lab-node.example.com",
            "Other",
            "x=1",
            "$_SERVICEGRAPHITEPREFIX$",
            "",
        );
        text += "DATATYPE::SERVICEPERFDATA\tTIMET\tbroken\n";
        let file = spool.join(format!("service-perfdata.{t}"));
        std::fs::write(&file, text).unwrap();
    }
    // The file Nagios is appending to is left alone.
    std::fs::write(
        spool.join("service-perfdata"),
        perfdata_line(t0, "h", "S", "y=1", "p", ""),
    )
    .unwrap();

    // Carbon down: nothing confirmed, every file stays.
    carbon.stop();
    let out = Command::new(env!("CARGO_BIN_EXE_hyper-stats"))
        .arg("--config")
        .arg(&config)
        .args(["graphios", "--once", "--timeout", "3s", "--spool"])
        .arg(&spool)
        .arg("--carbon")
        .arg(format!("127.0.0.1:{}", carbon.line_port))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "graphios --once succeeded with Carbon down"
    );
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 7);

    carbon.restart();
    let out = graphios_once(&config, &spool, carbon.line_port);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(out.status.success(), "graphios --once failed: {stderr}");
    // Only the file Nagios appends to is left.
    let left: Vec<String> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["service-perfdata"]);
    // Each malformed line was logged with its file and line number.
    for f in 0..6 {
        let name = format!("service-perfdata.{}", t0 + f * 10);
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("malformed") && l.contains(&name) && l.contains("line=4")),
            "no log of {name}'s malformed line 4"
        );
    }
    // Carbon confirmed before the files went: the values are in its
    // cache, and reach whisper soon after.
    let until = Instant::now() + WHISPER_SETTLE;
    for (path, points) in &want {
        loop {
            let stored = carbon.fetch(path, t0, t0 + 60);
            if &stored == points {
                break;
            }
            assert!(
                Instant::now() < until,
                "{path}: whisper has {stored:?}, want {points:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    // The service without prefix or postfix was not for Graphite.
    assert!(!carbon.whisper_file("lab-node_example_com.x").exists());
}

/// (path, TIMET, value) of every perfdata value in Graphios spool files,
/// named the way the README documents for this test's service (prefix
/// `nagios.lab`, postfix `cpu`, host `lab-node.example.com`); read
/// independently of the code under test, for the labels and values
/// check_hyper_stats writes (`'label'=12.5%;...`).
fn expected_from_spool(files: &[PathBuf]) -> BTreeMap<String, BTreeMap<i64, f64>> {
    let mut want: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    for f in files {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            let field = |name: &str| {
                line.split('\t')
                    .find_map(|kv| kv.strip_prefix(&format!("{name}::")))
                    .unwrap_or_default()
                    .to_owned()
            };
            let timet: i64 = field("TIMET").parse().unwrap();
            for item in field("SERVICEPERFDATA").split_whitespace() {
                let (label, data) = item.split_once('=').unwrap();
                let label = label.trim_matches('\'');
                let value = data
                    .split(';')
                    .next()
                    .unwrap()
                    .trim_end_matches(|c: char| !c.is_ascii_digit());
                let path = format!("nagios.lab.lab-node_example_com.cpu.{label}");
                want.entry(path)
                    .or_default()
                    .insert(timet, value.parse().unwrap());
            }
        }
    }
    want
}

#[test]
#[ignore = "needs the lab: cargo xtask test"]
fn graphios_forwards_what_a_real_nagios_core_wrote() {
    use std::os::unix::fs::PermissionsExt;
    assert!(
        Path::new(NAGIOS).exists(),
        "{NAGIOS} is missing: run `cargo xtask setup` (installs nagios4-core)"
    );
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path();
    // User nagios runs the plugin from here and reaches the socket.
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    let plugin = build_plugin(tmp);
    let carbon = Carbon::start(&tmp.join("carbon"));

    // The agent, with its query socket for the plugin.
    let socket = tmp.join("run").join("hyper-stats.sock");
    let config = tmp.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[query]\nsocket = {:?}\ngroup = \"nagios\"\n\n[carbon]\nhost = \"{NODE}\"\n",
            socket.display().to_string()
        ),
    )
    .unwrap();
    let agent = start_agent(&config, carbon.line_port, &[]);
    let until = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(Instant::now() < until, "the agent made no query socket");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let the agent's windows fill a little.
    std::thread::sleep(Duration::from_secs(5));

    // Nagios 4: one host, one service running check_hyper_stats every
    // 2 s with Graphios's custom variables; perfdata in the Graphios
    // template, moved into the spool every 5 s as Graphios's README says.
    let (uid, gid) = nagios_ids();
    let spool = tmp.join("graphios");
    std::fs::create_dir_all(&spool).unwrap();
    std::os::unix::fs::chown(&spool, Some(uid), Some(gid)).unwrap();
    let sp = spool.display();
    let nagios = Nagios::config(&tmp.join("nagios"))
        .command(
            "check_hs_cpu",
            &format!(
                "{} -S {} -m cpu.time_percent -W 60s -w 1000 -c 2000",
                plugin.display(),
                socket.display()
            ),
        )
        .command(
            "graphios_perf_service",
            &format!("/bin/mv {sp}/service-perfdata {sp}/service-perfdata.$TIMET$"),
        )
        .host(
            "lab-node.example.com",
            &[
                ("max_check_attempts", "1"),
                ("check_interval", "60"),
                ("check_period", "24x7"),
            ],
        )
        .service(
            "lab-node.example.com",
            "VM CPU",
            "check_hs_cpu",
            &[
                ("max_check_attempts", "1"),
                ("check_interval", "2"),
                ("retry_interval", "2"),
                ("process_perf_data", "1"),
                ("_graphiteprefix", "nagios.lab"),
                ("_graphitepostfix", "cpu"),
            ],
        )
        .set("max_service_check_spread", "1")
        .set("max_host_check_spread", "1")
        .perfdata(
            &spool.join("service-perfdata"),
            "DATATYPE::SERVICEPERFDATA\\tTIMET::$TIMET$\\tHOSTNAME::$HOSTNAME$\\t\
             SERVICEDESC::$SERVICEDESC$\\tSERVICEPERFDATA::$SERVICEPERFDATA$\\tSERVICECHECKCOMMAND::$SERVICECHECKCOMMAND$\\t\
             HOSTSTATE::$HOSTSTATE$\\tHOSTSTATETYPE::$HOSTSTATETYPE$\\tSERVICESTATE::$SERVICESTATE$\\t\
             SERVICESTATETYPE::$SERVICESTATETYPE$\\tGRAPHITEPREFIX::$_SERVICEGRAPHITEPREFIX$\\t\
             GRAPHITEPOSTFIX::$_SERVICEGRAPHITEPOSTFIX$",
        )
        .set("service_perfdata_file_processing_interval", "5")
        .set(
            "service_perfdata_file_processing_command",
            "graphios_perf_service",
        )
        .start();
    let moved = || -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&spool)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("service-perfdata.")
            })
            .collect();
        v.sort();
        v
    };
    let until = Instant::now() + Duration::from_secs(90);
    while moved().len() < 3 {
        assert!(
            Instant::now() < until,
            "Nagios moved {} perfdata files in 90 s; its log:\n{}",
            moved().len(),
            nagios.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Stopped, and gone, before its files are read.
    nagios.stop();
    let files = moved();
    let want = expected_from_spool(&files);
    let values: usize = want.values().map(BTreeMap::len).sum();
    eprintln!(
        "Nagios wrote {} spool files, {values} perfdata values in {} series",
        files.len(),
        want.len()
    );
    assert!(values > 0, "the spool files hold no perfdata");

    let out = graphios_once(&config, &spool, carbon.line_port);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "graphios --once failed: {stderr}");
    assert!(!stderr.contains("WARN"), "graphios warned: {stderr}");
    for f in &files {
        assert!(!f.exists(), "{} was not deleted", f.display());
    }
    let until = Instant::now() + WHISPER_SETTLE;
    for (path, points) in &want {
        let (first, last) = (
            *points.keys().next().unwrap(),
            *points.keys().last().unwrap(),
        );
        loop {
            let stored = carbon.fetch(path, first, last);
            if &stored == points {
                break;
            }
            assert!(
                Instant::now() < until,
                "{path}: whisper has {stored:?}, the perfdata {points:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    drop(agent);
}
