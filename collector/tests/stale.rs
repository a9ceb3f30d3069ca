//! Stale libvirt data through the real agent and plugin: when libvirt
//! stops answering the agent, a gauge check (`cpu.time_percent`) turns
//! UNKNOWN within `--max-age` plus a few seconds, naming the stale series,
//! and OK again once libvirt answers.
//!
//! The agent reaches the lab's libvirtd through a Unix socket proxy this
//! test owns (`--connect qemu+unix:///system?socket=PROXY`), so
//! cutting the proxy (closing its listener and every connection through
//! it) makes libvirt unreachable for this agent alone: the lab's libvirtd,
//! its guests and any other test's agent go on untouched.
//!
//! While libvirt is cut, the eBPF source keeps delivering run-queue
//! histograms, so the answer's newest age stays fresh and only each
//! series' own age shows the gap: that is the case the plugin must name.
//! An agent without histogram data (no probes) goes stale as a whole; the
//! plugin then says so ("stale data: the agent's newest datapoint ..."),
//! which the test accepts, saying so on stderr.
//!
//! Needs the lab (`cargo xtask lab up`) and root (the lab's libvirtd
//! socket); run by `cargo xtask test`. Everything it starts (the agent,
//! the proxy's threads) is its own and stopped by the test.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::{Agent, Proxy, build_plugin, lab_guests};

/// The lab's libvirtd socket, what `qemu:///system` reaches as root.
const LIBVIRT_SOCKET: &str = "/run/libvirt/libvirt-sock";

/// The plugin's `--max-age` here: short, so that the test is; still five
/// polls of the default 1 s intervals, so a fresh series never trips it.
const MAX_AGE_S: u64 = 5;

/// "A few seconds" past `--max-age` within which the plugin must say
/// UNKNOWN: the last sample before the cut may be one poll old already,
/// plus one plugin run and a loaded 2-core lab.
const STALE_SLACK: Duration = Duration::from_secs(5);

/// How soon after the proxy is back the check must be OK again: the
/// agent's reconnect backoff is capped at 1 s (`RECONNECT_BACKOFF_MAX`),
/// then one poll at 1 s, plus slack for a loaded lab.
const BACK_WITHIN: Duration = Duration::from_secs(10);

/// How long a fresh agent may take to have every guest's series.
const WARM_UP_WITHIN: Duration = Duration::from_secs(30);

/// How often the plugin is run while waiting for a state.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// One run of the plugin: exit code and stdout.
fn plugin(bin: &Path, socket: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin)
        .arg("-S")
        .arg(socket)
        .args(args)
        .output()
        .expect("check_hyper_stats runs");
    assert!(
        out.stderr.is_empty(),
        "the plugin wrote to stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().expect("the plugin exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Runs the plugin every [`CHECK_EVERY`] until `done` accepts its result
/// or `within` has passed; the accepted result and when, or the last one.
fn wait_for(
    within: Duration,
    mut run: impl FnMut() -> (i32, String),
    done: impl Fn(i32, &str) -> bool,
) -> Result<(Duration, String), (i32, String)> {
    let start = Instant::now();
    loop {
        let (code, out) = run();
        if done(code, &out) {
            return Ok((start.elapsed(), out));
        }
        if start.elapsed() > within {
            return Err((code, out));
        }
        std::thread::sleep(CHECK_EVERY);
    }
}

#[test]
#[ignore = "needs the lab: cargo xtask test"]
fn gauge_check_names_stale_series_while_libvirt_is_unreachable() {
    let guests = lab_guests();
    assert!(
        Path::new(LIBVIRT_SOCKET).exists(),
        "{LIBVIRT_SOCKET} is missing: is the lab up (cargo xtask lab up)?"
    );
    let dir = tempfile::tempdir().unwrap();
    let bin = build_plugin(dir.path());
    let proxy_path = dir.path().join("libvirt-sock");
    let socket = dir.path().join("hyper-stats.sock");
    let mut proxy = Proxy::start(&proxy_path, Path::new(LIBVIRT_SOCKET));
    // Only the query socket is read; the log goes to the test's stderr.
    let _agent = Agent::json()
        .connect(&format!(
            "qemu+unix:///system?socket={}",
            proxy_path.display()
        ))
        .config_text(&format!("[query]\nsocket = \"{}\"\n", socket.display()))
        .discard_stdout()
        .start();

    let max_age = format!("{MAX_AGE_S}s");
    let check = || {
        plugin(
            &bin,
            &socket,
            &[
                "-m",
                "cpu.time_percent",
                "--window",
                "1m",
                "--max-age",
                &max_age,
            ],
        )
    };
    // Warm: OK, with every lab guest's series.
    let (_, out) = wait_for(WARM_UP_WITHIN, check, |code, out| {
        code == 0
            && guests
                .iter()
                .all(|g| out.contains(&format!("'{g}.cpu.time_percent.avg'=")))
    })
    .unwrap_or_else(|(code, out)| {
        panic!("not OK with every guest within {WARM_UP_WITHIN:?}: exit {code}\n{out}")
    });
    println!("warm: {out}");
    let (_, list) = plugin(&bin, &socket, &["--list"]);
    let has_histograms = !list.contains("histogram metrics: none");
    if !has_histograms {
        eprintln!(
            "the agent has no histogram data (no eBPF probes): it goes stale as a whole, \
             and the plugin is expected to say that instead of naming series"
        );
    }

    // Cut: UNKNOWN within --max-age plus a few seconds, naming every
    // guest's stale series (or the whole agent's staleness).
    proxy.cut();
    let within = Duration::from_secs(MAX_AGE_S) + STALE_SLACK;
    let (after, out) =
        wait_for(within, check, |code, _| code == 3).unwrap_or_else(|(code, out)| {
            panic!("not UNKNOWN within {within:?} of the cut: exit {code}\n{out}")
        });
    println!("UNKNOWN {after:.1?} after the cut: {out}");
    let first = out.lines().next().unwrap();
    if has_histograms {
        assert!(
            first.contains(&format!("series older than --max-age {MAX_AGE_S}s: ")),
            "{out}"
        );
        for g in &guests {
            assert!(
                first.contains(&format!("{g} cpu.time_percent ")),
                "{g} not named as stale: {out}"
            );
            assert!(
                out.contains(&format!("'{g}.cpu.time_percent.avg'=U;")),
                "{out}"
            );
        }
    } else {
        assert!(first.contains("stale data: "), "{out}");
    }
    // The age rule, not something else, made it UNKNOWN: a sample at most
    // one poll old at the cut is not stale before --max-age less that poll.
    assert!(
        after >= Duration::from_secs(MAX_AGE_S - 1) - CHECK_EVERY,
        "UNKNOWN already {after:?} after the cut: {out}"
    );

    // Back: OK again, nothing stale.
    proxy = Proxy::start(&proxy_path, Path::new(LIBVIRT_SOCKET));
    let (after, out) = wait_for(BACK_WITHIN, check, |code, out| {
        code == 0 && !out.contains("older than")
    })
    .unwrap_or_else(|(code, out)| {
        panic!("not OK within {BACK_WITHIN:?} of libvirt being back: exit {code}\n{out}")
    });
    println!("OK again {after:.1?} after libvirt was back: {out}");
    proxy.cut();
}
