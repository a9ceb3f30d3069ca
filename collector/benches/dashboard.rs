//! The dashboard's fleet view at fleet size: 2,000 synthetic guests on 50
//! hosts in graphite-web, shown in headless Chromium. Run with `cargo
//! xtask bench dashboard` (keeps the report in `bench/runs/`); needs no
//! lab, only `cargo xtask setup`'s graphite-web, chromium and
//! chromium-driver.
//!
//! Each guest gets the six series the fleet view reads (run-queue p99 and
//! sum, disk write latency, network rx and tx, CPU) for the last hour at
//! 1 s, written straight into whisper files (sparse, one archive of
//! `1s:6h` as the README's schema starts with; a query within 6 h reads
//! only that archive either way) in the tree of an empty carbon-cache.
//! graphite-web (asking that carbon-cache for unwritten points, as in
//! production) and the dashboard serve them; Chromium loads the fleet
//! view, fresh each time, for its default range (the last 15 min) and for
//! the last hour.
//!
//! Measured: the time from navigation start to the `hs-fleet-ready` mark,
//! which the page sets once the worst-guests table with its values and
//! sparklines has been painted (its first useful paint), and to
//! `hs-fleet-all` (the list of every host and guest too). The goal is a
//! first useful paint under 2 s for the default range.

use std::path::Path;
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

use common::graphite::{Carbon, Dashboard, GraphiteWeb};
use common::webdriver::Browser;
use common::whisper::{self, Aggregation};

/// Hosts, and guests on each: 2,000 guests.
const HOSTS: u32 = 50;
const GUESTS_PER_HOST: u32 = 40;

/// The data written: the last hour.
const RANGE_S: u32 = 3600;

/// The ranges measured: the fleet view's default (the last 15 min, which
/// the goal is for) and the last hour.
const RANGES_S: [u32; 2] = [900, 3600];

/// Slots of the one archive (1 s for 6 h, as the README's schema).
const SLOTS: u32 = 6 * 3600;

/// Page loads measured per range.
const RUNS: usize = 4;

/// The goal for the first useful paint.
const GOAL_MS: f64 = 2000.0;

/// A small deterministic generator (xorshift64*), so every run writes the
/// same fleet.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn write_fleet(root: &Path, start: u32) -> usize {
    let mut files = 0;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for h in 0..HOSTS {
        for g in 0..GUESTS_PER_HOST {
            let dir = root.join(format!("hyperstats/node{h:02}/guest-{h:02}-{g:02}"));
            // A guest's typical p99 wait: 50 us to 20 ms, log-spread.
            let base = 50.0 * (400f64).powf(rng.next());
            let n = RANGE_S as usize;
            let mut series = |rel: &str, agg, f: &mut dyn FnMut(&mut Rng) -> f64| {
                let values: Vec<f64> = (0..n).map(|_| f(&mut rng)).collect();
                whisper::write(&dir.join(rel), agg, 1, SLOTS, start, &values).unwrap();
                files += 1;
            };
            series("runq_latency_us/p99.wsp", Aggregation::Max, &mut |r| {
                base * (0.5 + r.next() * r.next() * 4.0)
            });
            series("runq_latency_us/sum.wsp", Aggregation::Sum, &mut |r| {
                base * 40.0 * (0.5 + r.next())
            });
            series(
                "block/vda/wr/latency_mean_ms.wsp",
                Aggregation::Average,
                &mut |r| 0.5 + 3.0 * r.next(),
            );
            series(
                "net/tap0/rx/bytes_per_s.wsp",
                Aggregation::Average,
                &mut |r| 1e5 * r.next(),
            );
            series(
                "net/tap0/tx/bytes_per_s.wsp",
                Aggregation::Average,
                &mut |r| 5e4 * r.next(),
            );
            series("cpu/time_percent.wsp", Aggregation::Average, &mut |r| {
                100.0 * r.next()
            });
        }
    }
    files
}

/// The machine's load average, for the report: other work on a 2-core
/// machine moves these numbers more than anything the page does.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    println!("load average at start: {}", loadavg());
    let dir = tempfile::tempdir().unwrap();
    // A carbon-cache as in production, empty: graphite-web asks it for
    // unwritten points of each series (without one, graphite-web logs a
    // traceback per series, which alone costs it about a second here).
    let carbon = Carbon::start(&dir.path().join("carbon"));
    let until = common::now_unix() as u32;
    let start = until - RANGE_S + 1;
    let t = Instant::now();
    let files = write_fleet(&carbon.whisper, start);
    println!(
        "fleet: {} guests on {HOSTS} hosts, {files} whisper files of 1 s points for the last {RANGE_S} s, written in {:.1} s",
        HOSTS * GUESTS_PER_HOST,
        t.elapsed().as_secs_f64()
    );

    let web = GraphiteWeb::start(
        &dir.path().join("web"),
        &carbon.whisper,
        Some(carbon.query_port),
    );
    let dash = Dashboard::start(Path::new(env!("CARGO_BIN_EXE_hyper-stats")), web.port);
    let browser = Browser::start(1400, 1000);

    let mut summary = Vec::new();
    for range in RANGES_S {
        let mut paints = Vec::new();
        for run in 0..RUNS {
            // A new query string each run: a full page load, nothing cached.
            let url = format!(
                "http://127.0.0.1:{}/?run={range}-{run}#view=fleet&range={range}&until={until}",
                dash.port
            );
            browser.goto(&url);
            let marks = browser.wait_for(
                "the fleet view",
                Duration::from_secs(120),
                "const s = document.getElementById('status');\
                 if (s.className === 'error') throw new Error('the page says: ' + s.textContent);\
                 const m = (n) => performance.getEntriesByName(n)[0];\
                 return m('hs-fleet-all') && [m('hs-fleet-ready').startTime, m('hs-fleet-all').startTime,\
                   document.querySelectorAll('table.fleet tbody tr[data-guest]').length,\
                   document.querySelectorAll('.hosts li').length];",
            );
            let (paint, all) = (marks[0].as_f64().unwrap(), marks[1].as_f64().unwrap());
            let (rows, listed) = (marks[2].as_u64().unwrap(), marks[3].as_u64().unwrap());
            assert_eq!(listed, u64::from(HOSTS * GUESTS_PER_HOST), "guests listed");
            assert_eq!(rows, 20, "worst-guests rows");
            println!(
                "range {range} s, load {}: first useful paint {paint:.0} ms (worst {rows} guests), every host and guest listed {all:.0} ms ({listed} guests)",
                run + 1
            );
            paints.push(paint);
        }
        paints.sort_by(f64::total_cmp);
        summary.push((range, paints[paints.len() / 2], paints[paints.len() - 1]));
    }
    let severe: Vec<_> = browser
        .console()
        .into_iter()
        .filter(|(l, _)| l == "SEVERE")
        .collect();
    assert!(
        severe.is_empty(),
        "errors in the browser console: {severe:?}"
    );
    println!("load average at end: {}", loadavg());
    for (range, median, worst) in summary {
        let goal = if range == RANGES_S[0] {
            format!(
                "goal < {GOAL_MS:.0} ms: {}",
                if worst < GOAL_MS { "met" } else { "NOT MET" }
            )
        } else {
            "not the default range; no goal".to_owned()
        };
        println!(
            "fleet view first useful paint, {} guests on {HOSTS} hosts, last {range} s: median {median:.0} ms, worst {worst:.0} ms of {RUNS} loads; {goal}",
            HOSTS * GUESTS_PER_HOST,
        );
    }
}
