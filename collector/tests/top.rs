//! `hyper-stats top` on the lab, as a person sees it: the real agent on the
//! lab guests with its query socket in a temporary directory, `top` in a
//! tmux pane of 80x24 on a tmux server of the test's own, and its screen
//! read back with `tmux capture-pane -p`.
//!
//! One case walks through what the issue asks of `top`: every lab guest
//! has a row; the rows are in the order of the run-queue p99 the query
//! socket answers for the same window, and the printed p99s are the
//! socket's (within printing and a second's drift); the 5-minute window
//! key does the same over 300 s; a guest expanded with Enter shows one row
//! per vCPU the socket knows; when the agent stops, `top` says so naming
//! the socket, keeps running, and picks up a new agent on the same socket;
//! `q` exits with status 0 and leaves the terminal as it was (canonical
//! mode and echo back on, the table gone with the alternate screen).
//!
//! Needs the lab (`cargo xtask lab up`), tmux (`cargo xtask setup`), root
//! (the agent's eBPF probes: the run-queue columns are the point of the
//! tool) and an agent built with its eBPF object; run by `cargo xtask
//! test`. The agent is stopped by its pid, the tmux server by its own
//! socket.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hyper_stats_query::{
    GaugeQuery, HistogramAnswer, HistogramQuery, Outcome, Query, Request, client,
};

mod common;

use common::{Agent, lab_guests, wait_for};

/// The terminal `top` runs in: the width the issue asks it to be
/// readable in.
const COLS: u16 = 80;
const ROWS: u16 = 24;

/// How far a printed value may be from the socket's: printing keeps two
/// or three significant digits (at most 5% off, `9.5ms` for 9.74 ms).
const PRINT_TOLERANCE: f64 = 0.05;

/// How long each screen may take to show what is expected: `top`
/// refreshes every second; a loaded CI machine gets a few more.
const SCREEN_TIMEOUT: Duration = Duration::from_secs(15);

/// A tmux server of this test's own (its socket in the test's directory),
/// with one session running `top`; killed when dropped.
struct Tmux {
    /// The server's socket.
    socket: PathBuf,
}

impl Tmux {
    /// Starts a detached 80x24 session running `command` with `sh -c`.
    fn start(socket: &Path, command: &str) -> Tmux {
        let status = Command::new("tmux")
            .arg("-S")
            .arg(socket)
            .args(["-f", "/dev/null", "new-session", "-d", "-s", "top"])
            .args(["-x", &COLS.to_string(), "-y", &ROWS.to_string()])
            .args(["sh", "-c", command])
            .status()
            .expect("tmux is missing: run `cargo xtask setup`");
        assert!(status.success(), "tmux new-session failed");
        Tmux {
            socket: socket.to_path_buf(),
        }
    }

    fn tmux(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket);
        c
    }

    /// The pane's text, one string per line, trailing blanks cut.
    fn screen(&self) -> Vec<String> {
        let out = self
            .tmux()
            .args(["capture-pane", "-p", "-t", "top"])
            .output()
            .unwrap();
        assert!(out.status.success(), "tmux capture-pane failed");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.trim_end().to_owned())
            .collect()
    }

    /// Types `keys` (tmux key names, e.g. `Enter`, or literal text).
    fn keys(&self, keys: &[&str]) {
        let status = self
            .tmux()
            .args(["send-keys", "-t", "top"])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success(), "tmux send-keys {keys:?} failed");
    }

    /// Waits until `ok` holds for the screen; panics with the last screen.
    fn wait_screen(&self, what: &str, ok: impl Fn(&[String]) -> bool) -> Vec<String> {
        let until = Instant::now() + SCREEN_TIMEOUT;
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < until,
                "timed out waiting for {what}; the screen:\n{}",
                screen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").status();
    }
}

/// Asks the socket, as the reference `top` must agree with.
fn ask(socket: &Path, query: Query) -> Outcome {
    client::query(socket, &Request::new(query), Duration::from_secs(5))
        .expect("the agent answers")
        .outcome
}

/// The run-queue p50 and p99 (µs) per guest and vCPU over `window_s`, or
/// the socket's answer when it has none.
fn try_runq(socket: &Path, window_s: u32) -> Result<HistogramAnswer, Outcome> {
    match ask(
        socket,
        Query::Histogram(HistogramQuery {
            metric: "runq_latency_us".into(),
            window_s,
            percentiles: vec![50.0, 99.0],
            per_vcpu: true,
        }),
    ) {
        Outcome::Histogram(h) => Ok(h),
        other => Err(other),
    }
}

/// As [`try_runq`], once the agent has them.
fn runq(socket: &Path, window_s: u32) -> HistogramAnswer {
    try_runq(socket, window_s).unwrap_or_else(|e| panic!("no runq_latency_us histograms: {e:?}"))
}

fn p99(h: &HistogramAnswer, guest: &str) -> f64 {
    h.domains
        .iter()
        .find(|d| d.domain == guest)
        .and_then(|d| d.all.values[1])
        .unwrap_or_else(|| panic!("the socket has no run-queue p99 for {guest}"))
}

/// A printed latency back in µs: `850µ`, `2.5ms`, `1.2s`; `None` for `-`.
fn micros(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('µ') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    Some(number.parse::<f64>().ok()? * factor)
}

/// The table's rows: the header's words and, per row below it up to the
/// first blank line, its words; `None` before the header is drawn.
fn table(screen: &[String]) -> Option<(Vec<String>, Vec<Vec<String>>)> {
    let at = screen.iter().position(|l| l.starts_with("GUEST"))?;
    let words = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let rows = screen[at + 1..]
        .iter()
        .take_while(|l| !l.is_empty())
        .map(|l| words(l))
        .collect();
    Some((words(&screen[at]), rows))
}

/// The guest rows (not vCPU rows) in screen order, each with its RQ99;
/// `None` before the table is drawn.
fn guest_p99s(screen: &[String]) -> Option<Vec<(String, Option<f64>)>> {
    let (header, rows) = table(screen)?;
    let col = header.iter().position(|h| h == "RQ99")?;
    let rows = rows
        .iter()
        .filter(|r| r[0] != "vcpu")
        .map(|r| {
            assert_eq!(r.len(), header.len(), "row {r:?} under {header:?}");
            (r[0].clone(), micros(&r[col]))
        })
        .collect();
    Some(rows)
}

/// Whether every guest has a row with a run-queue p99.
fn all_rows(screen: &[String], guests: &[String]) -> bool {
    let rows = guest_p99s(screen).unwrap_or_default();
    guests
        .iter()
        .all(|g| rows.iter().any(|(n, v)| n == g && v.is_some()))
}

/// The screen's order and printed p99s against the socket's over
/// `window_s`, asked every 100 ms from 1.5 s before the capture until
/// just after it (`top`'s snapshot on screen, at most a second old, was
/// taken in that span; a young window's p99 moves each second): each
/// printed value lies within the socket's lowest and highest answer
/// (plus printing's rounding), the printed values fall down the rows, and
/// no guest is above one whose p99 the socket put clearly higher in every
/// answer.
fn check_order(tmux: &Tmux, socket: &Path, guests: &[String], window_s: u32) -> Vec<String> {
    let mut answers = Vec::new();
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        answers.push(runq(socket, window_s));
        std::thread::sleep(Duration::from_millis(100));
    }
    let screen = tmux.screen();
    answers.push(runq(socket, window_s));
    // Per guest, the lowest and highest p99 the socket answered.
    let range = |guest: &str| {
        answers
            .iter()
            .map(|h| p99(h, guest))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            })
    };
    let shown = |s: &[String]| s.join("\n");
    let rows =
        guest_p99s(&screen).unwrap_or_else(|| panic!("no table with RQ99:\n{}", shown(&screen)));
    assert_eq!(
        rows.len(),
        guests.len(),
        "one row per guest:\n{}",
        shown(&screen)
    );
    for (name, value) in &rows {
        let value = value.unwrap_or_else(|| panic!("{name} has no RQ99:\n{}", shown(&screen)));
        let (lo, hi) = range(name);
        assert!(
            value >= lo * (1.0 - PRINT_TOLERANCE) && value <= hi * (1.0 + PRINT_TOLERANCE),
            "{name}: RQ99 printed as {value} µs, the socket said {lo} to {hi} µs over {window_s} s:\n{}",
            shown(&screen)
        );
    }
    for pair in rows.windows(2) {
        assert!(
            pair[0].1 >= pair[1].1,
            "rows not sorted by RQ99 ({} above {}):\n{}",
            pair[0].0,
            pair[1].0,
            shown(&screen)
        );
        let ((up, _), (down, _)) = (&pair[0], &pair[1]);
        let (up_range, down_range) = (range(up), range(down));
        assert!(
            down_range.0 <= up_range.1 * (1.0 + 2.0 * PRINT_TOLERANCE),
            "{up} is above {down}, but the socket's p99 over {window_s} s was {up_range:?} vs {down_range:?} µs:\n{}",
            shown(&screen)
        );
    }
    screen
}

/// The screen's text as one line with single spaces: wrapped status
/// lines read as the sentence they are.
fn flat(screen: &[String]) -> String {
    screen
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Starts the agent with its query socket at `socket` and waits until the
/// socket has every lab guest's CPU and run-queue histogram.
fn start_agent(config: &str, socket: &Path, guests: &[String]) -> Agent {
    let agent = Agent::json().config_text(config).discard_stdout().start();
    let started = Instant::now();
    wait_for(
        "the agent's socket to have every lab guest's run-queue waits (an agent built without its eBPF object has none: build with HYPER_STATS_EBPF=require, as cargo xtask test does)",
        Duration::from_secs(60),
        || {
            client::query(socket, &Request::new(Query::List), Duration::from_secs(2)).ok()?;
            let h = try_runq(socket, 60).ok()?;
            let ready = guests.iter().all(|g| {
                h.domains
                    .iter()
                    .any(|d| &d.domain == g && d.all.values[1].is_some())
            });
            (ready && started.elapsed() > Duration::from_secs(3)).then_some(())
        },
    );
    agent
}

#[test]
#[ignore = "needs the lab: cargo xtask test"]
fn top_shows_the_lab_guests_sorted_and_survives_the_agent() {
    let started = Instant::now();
    let guests = lab_guests();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run").join("hyper-stats.sock");
    let config = format!("[query]\nsocket = {:?}\n", socket.display().to_string());
    let mut agent = start_agent(&config, &socket, &guests);

    // `top` in a shell that reports how it ended and the terminal's modes
    // afterwards, then waits to be captured.
    let bin = env!("CARGO_BIN_EXE_hyper-stats");
    let tmux = Tmux::start(
        &dir.path().join("tmux.sock"),
        &format!(
            "{bin} top --socket '{}'; echo \"top exited: $?\"; stty -a; sleep 600",
            socket.display()
        ),
    );

    // Every guest's row, under the 1-minute window.
    let screen = tmux.wait_screen("a row with RQ99 for every lab guest", |s| {
        all_rows(s, &guests)
    });
    assert!(
        screen[0].contains("window 1m") && screen[0].contains("sort rq-p99 desc"),
        "{}",
        screen[0]
    );
    for line in &screen {
        assert!(line.chars().count() <= usize::from(COLS), "{line}");
    }
    let first = check_order(&tmux, &socket, &guests, 60);
    eprintln!("top at 80x24, window 1m:\n{}", first.join("\n"));

    // The vCPU column is the socket's vcpu.current.
    let Outcome::Gauge(vcpus) = ask(
        &socket,
        Query::Gauge(GaugeQuery {
            metric: "vcpu.current".into(),
            window_s: 60,
        }),
    ) else {
        panic!("no vcpu.current")
    };
    let (header, rows) = table(&first).expect("the table");
    let col = header.iter().position(|h| h == "vCPU").unwrap();
    for d in &vcpus.domains {
        let row = rows.iter().find(|r| r[0] == d.domain).unwrap();
        assert_eq!(
            row[col],
            format!("{:.0}", d.series[0].last),
            "{}: {row:?}",
            d.domain
        );
    }

    // Expand the guest with the most vCPUs: filter to it, Enter on it,
    // clear the filter. Its vCPU rows follow it, the others stay.
    let h = runq(&socket, 60);
    let big = h
        .domains
        .iter()
        .filter(|d| guests.contains(&d.domain))
        .max_by_key(|d| d.vcpus.len())
        .unwrap();
    let ids: Vec<String> = big.vcpus.iter().map(|v| v.vcpu.to_string()).collect();
    assert!(!ids.is_empty(), "no per-vCPU values for {}", big.domain);
    tmux.keys(&["/"]);
    tmux.keys(&["-l", &big.domain]);
    tmux.keys(&["Enter", "Enter", "Escape"]);
    let expanded = tmux.wait_screen("the expanded guest's vCPU rows", |s| {
        let Some((_, rows)) = table(s) else {
            return false;
        };
        let Some(at) = rows.iter().position(|r| r[0] == big.domain) else {
            return false;
        };
        let below: Vec<&str> = rows[at + 1..]
            .iter()
            .take_while(|r| r[0] == "vcpu")
            .map(|r| r[1].as_str())
            .collect();
        below == ids && rows.iter().filter(|r| r[0] != "vcpu").count() == guests.len()
    });
    eprintln!("{} expanded:\n{}", big.domain, expanded.join("\n"));

    // The 5-minute window: the title says so, the values follow 300 s.
    tmux.keys(&["w"]);
    tmux.wait_screen("the 5-minute window", |s| {
        s[0].contains("window 5m") && s[0].contains(" data ")
    });
    check_order(&tmux, &socket, &guests, 300);

    // The agent stops: `top` says so, naming the socket, and keeps
    // running.
    let status = agent.terminate();
    assert!(status.success(), "the agent exited with {status}");
    drop(agent);
    let want = format!("agent not answering at {}:", socket.display());
    let gone = tmux.wait_screen("the agent-gone message", |s| {
        let f = flat(s);
        f.contains(&want) && f.contains("; retrying")
    });
    assert!(!flat(&gone).contains("top exited"), "{}", gone.join("\n"));
    assert!(gone[0].contains("no answer"), "{}", gone[0]);
    eprintln!("agent stopped:\n{}", gone.join("\n"));

    // A new agent on the same socket: `top` carries on by itself.
    let agent = start_agent(&config, &socket, &guests);
    tmux.wait_screen("top to pick up the new agent", |s| {
        !flat(s).contains("agent not answering") && s[0].contains(" data ") && all_rows(s, &guests)
    });

    // q: exit status 0, the table gone with the alternate screen, the
    // terminal back in canonical mode with echo.
    tmux.keys(&["q"]);
    let after = tmux.wait_screen("top to exit", |s| {
        let f = flat(s);
        f.contains("top exited:") && f.contains("icanon")
    });
    eprintln!("after q:\n{}", after.join("\n"));
    let f = flat(&after);
    assert!(f.contains("top exited: 0"), "{}", after.join("\n"));
    let modes: Vec<&str> = f.split(' ').collect();
    for mode in ["icanon", "echo", "icrnl", "opost"] {
        assert!(
            modes.contains(&mode),
            "terminal mode {mode} not restored:\n{}",
            after.join("\n")
        );
    }
    assert!(
        !after.iter().any(|l| l.starts_with("GUEST")),
        "the table is still on screen:\n{}",
        after.join("\n")
    );
    drop(agent);
    eprintln!("top test took {:.1?}", started.elapsed());
}
