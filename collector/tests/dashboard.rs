//! The browser dashboard end to end: the agent on the lab guests pushes to
//! a carbon-cache of this test's own, graphite-web serves it, `hyper-stats
//! dashboard` proxies it, and real Chromium (Debian's, through
//! chromedriver's WebDriver) shows it. Checked, against graphite-web's
//! render API asked directly for the same range:
//!
//! - the fleet view lists every lab guest (in the worst-guests table and
//!   under its host), and each row's values (p99 run-queue wait max, steal
//!   mean, disk write latency mean, network mean) equal what the render
//!   API's raw points give for the same range;
//! - clicking a guest opens its view (URL and content);
//! - the heatmaps' counts (run-queue waits, on-CPU slices, merged and of
//!   vCPU 0) for one whole minute sum to that minute's `count` series;
//!   hovering a cell shows its bucket's count and a cumulative percent;
//! - the browser console holds no error.
//!
//! With `HYPER_STATS_SCREENSHOTS=DIR` the two views are saved there as
//! `fleet.png` and `guest.png`; the README's were made with
//! `HYPER_STATS_DASHBOARD_MINUTES=8` (the agent runs 8 whole minutes
//! before the views are checked, instead of one).
//!
//! Needs the lab (`cargo xtask lab up`) and `cargo xtask setup`'s
//! graphite-carbon, graphite-web, chromium and chromium-driver, and the
//! dashboard's npm packages; run by `cargo xtask test`. Takes about 3
//! minutes: the agent must fill one whole minute.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

mod common;

use common::graphite::{Carbon, Dashboard, GraphiteWeb, Series};
use common::webdriver::Browser;
use common::{Agent, lab_guests, now_unix};

/// The path component the agent is told to use for this node.
const NODE: &str = "labhost";

/// The range the views are asked for, seconds.
const RANGE_S: i64 = 900;

/// How long after a window's last second every point of it is in
/// carbon-cache: the agent sends each second's points within about a
/// second, plus margin.
const SETTLE_S: i64 = 6;

/// How long a view may take to be complete in the browser.
const VIEW_TIMEOUT: Duration = Duration::from_secs(60);

/// Relative difference allowed between the page's numbers and the ones
/// computed here from raw points: the same sums in another order (Python's
/// and Rust's float additions), nothing more.
const FLOAT_TOLERANCE: f64 = 1e-9;

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= FLOAT_TOLERANCE * a.abs().max(b.abs()).max(1e-12),
        _ => false,
    }
}

/// What the fleet view should show for one guest, from raw points.
struct Expected {
    p99: Option<f64>,
    steal: Option<f64>,
    disk: Option<f64>,
    net: Option<f64>,
}

/// Per timestamp, `f` over the series' non-null values at it; then the
/// mean over timestamps that had any.
fn mean_of_combined(series: &[Series], f: fn(&[f64]) -> f64) -> Option<f64> {
    let mut by_t: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for (_, points) in series {
        for (t, v) in points {
            if let Some(v) = v {
                by_t.entry(*t).or_default().push(*v);
            }
        }
    }
    let vals: Vec<f64> = by_t.values().map(|vs| f(vs)).collect();
    (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64)
}

fn expected(web: &GraphiteWeb, guest: &str, from: i64, until: i64) -> Expected {
    let p = format!("hyperstats.{NODE}.{guest}");
    let one = |metric: &str| -> Vec<f64> {
        web.render(&format!("{p}.{metric}"), from, until)
            .into_iter()
            .flat_map(|(_, pts)| pts.into_iter().filter_map(|(_, v)| v))
            .collect()
    };
    let p99 = one("runq_latency_us.p99").into_iter().reduce(f64::max);
    let sums: Vec<f64> = one("runq_latency_us.sum")
        .into_iter()
        .map(|v| v * 0.0001)
        .collect();
    let steal = (!sums.is_empty()).then(|| sums.iter().sum::<f64>() / sums.len() as f64);
    let disk = mean_of_combined(
        &web.render(&format!("{p}.block.*.wr.latency_mean_ms"), from, until),
        |vs| vs.iter().copied().fold(f64::MIN, f64::max),
    );
    let net = mean_of_combined(
        &web.render(&format!("{p}.net.*.*.bytes_per_s"), from, until),
        |vs| vs.iter().sum(),
    );
    Expected {
        p99,
        steal,
        disk,
        net,
    }
}

fn wait_ready(browser: &Browser, ready: &str) {
    browser.wait_for(
        &format!("the page to be {ready}"),
        VIEW_TIMEOUT,
        &format!(
            "const s = document.getElementById('status'); \
             if (s && s.className === 'error') throw new Error('the page says: ' + s.textContent); \
             return document.body.dataset.ready === '{ready}';"
        ),
    );
}

fn save_screenshot(browser: &Browser, name: &str) {
    if let Some(dir) = std::env::var_os("HYPER_STATS_SCREENSHOTS") {
        let dir = Path::new(&dir);
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), browser.screenshot()).unwrap();
    }
}

/// Checks that heatmap `key`'s cells for minute `[minute, minute + 60)`
/// sum to the `count` series of that minute; returns the sum.
fn check_minute(
    web: &GraphiteWeb,
    browser: &Browser,
    key: &str,
    count_path: &str,
    minute: i64,
    until: i64,
) -> f64 {
    let hm = browser.eval(
        &format!("const h = window.hyperStats.heatmaps['{key}']; return h && {{step: h.step, columns: h.columns}};"),
        json!([]),
    );
    let step = hm["step"]
        .as_i64()
        .unwrap_or_else(|| panic!("no heatmap {key}: {hm}"));
    assert_eq!(
        60 % step,
        0,
        "heatmap {key}'s step {step} s does not divide a minute"
    );
    let shown: f64 = hm["columns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| (minute..minute + 60).contains(&c["t"].as_i64().unwrap()))
        .map(|c| c["total"].as_f64().unwrap())
        .sum();
    let counted: f64 = web
        .render(count_path, until - RANGE_S, until)
        .into_iter()
        .flat_map(|(_, pts)| pts)
        .filter(|(t, _)| (minute..minute + 60).contains(t))
        .filter_map(|(_, v)| v)
        .sum();
    eprintln!("{key} ({count_path}): heatmap {shown}, count series {counted} in minute {minute}");
    assert!(
        counted > 0.0,
        "{count_path} has no counts in minute {minute}"
    );
    assert_eq!(
        shown, counted,
        "heatmap {key} for minute {minute} vs {count_path}"
    );
    counted
}

#[test]
#[ignore = "needs the lab (cargo xtask lab up), graphite-web and chromium (cargo xtask setup)"]
fn dashboard_shows_what_graphite_holds() {
    let guests = lab_guests();
    let dir = tempfile::tempdir().unwrap();
    let carbon = Carbon::start(&dir.path().join("carbon"));
    let web = GraphiteWeb::start(
        &dir.path().join("web"),
        &carbon.whisper,
        Some(carbon.query_port),
    );
    let dash = Dashboard::start(Path::new(env!("CARGO_BIN_EXE_hyper-stats")), web.port);
    let browser = Browser::start(1400, 1100);

    // The agent with the heatmap buckets (off by default) and per-vCPU
    // series, so the guest view has vCPUs to show.
    let started = now_unix() as i64;
    let _agent = Agent::json()
        .config_text(&format!(
            "[carbon]\naddress = \"127.0.0.1:{}\"\nhost = \"{NODE}\"\nper_vcpu = true\nheatmap = true\n",
            carbon.line_port
        ))
        .discard_stdout()
        .keep_log()
        .start();
    // Whole minutes the agent covered from their first second to their
    // last (one, or HYPER_STATS_DASHBOARD_MINUTES for fuller
    // screenshots); the last of them is checked. The views end 4 s after
    // it, and are asked for once every point of their window has reached
    // carbon-cache (the agent sends a second's summaries after it ends):
    // the page and the render API must see the same points.
    let minutes: i64 = std::env::var("HYPER_STATS_DASHBOARD_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(1)
        .clamp(1, 14);
    let minute = (started + 5 + 59) / 60 * 60 + (minutes - 1) * 60;
    let until = minute + 64;
    while (now_unix() as i64) < until + SETTLE_S {
        std::thread::sleep(Duration::from_millis(500));
    }
    let from = until - RANGE_S;

    // Fleet view: every lab guest, with the render API's numbers.
    browser.goto(&dash.url(&format!("view=fleet&range={RANGE_S}&until={until}")));
    wait_ready(&browser, "fleet-all");
    let rows = browser.eval(
        "return Array.from(document.querySelectorAll('table.fleet tbody tr[data-guest]')).map(tr => ({\
           host: tr.dataset.host, guest: tr.dataset.guest,\
           values: Object.fromEntries(Array.from(tr.querySelectorAll('td[data-metric]')).map(td => [td.dataset.metric, td.dataset.value])),\
           text: Object.fromEntries(Array.from(tr.querySelectorAll('td[data-metric]')).map(td => [td.dataset.metric, td.textContent])) }));",
        json!([]),
    );
    let listed = browser.eval(
        &format!("return Array.from(document.querySelectorAll('.host[data-host=\"{NODE}\"] li')).map(li => li.dataset.guest);"),
        json!([]),
    );
    let value = |row: &Value, k: &str| -> Option<f64> {
        row["values"][k]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
    };
    for guest in &guests {
        assert!(
            listed.as_array().unwrap().iter().any(|g| g == guest),
            "{guest} not listed under host {NODE}: {listed}"
        );
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["guest"] == json!(guest))
            .unwrap_or_else(|| panic!("{guest} not in the fleet table: {rows}"));
        assert_eq!(row["host"], json!(NODE));
        let want = expected(&web, guest, from, until);
        eprintln!(
            "{guest}: page {}, render API p99 {:?} steal {:?} disk {:?} net {:?}",
            row["values"], want.p99, want.steal, want.disk, want.net
        );
        assert!(
            want.p99.is_some(),
            "{guest} has no run-queue p99 in Graphite"
        );
        for (k, want) in [
            ("p99", want.p99),
            ("steal", want.steal),
            ("disk", want.disk),
            ("net", want.net),
        ] {
            let got = value(row, k);
            assert!(
                close(got, want),
                "{guest} {k}: page {got:?}, render API {want:?}"
            );
            let text = row["text"][k].as_str().unwrap();
            assert!(
                want.is_none() || text.chars().any(|c| c.is_ascii_digit()),
                "{guest} {k} shows {text:?}"
            );
        }
    }
    if std::env::var_os("HYPER_STATS_SCREENSHOTS").is_some() {
        // Only the part with content.
        browser.resize(1400, 520);
        std::thread::sleep(Duration::from_millis(300));
        save_screenshot(&browser, "fleet.png");
        browser.resize(1400, 1100);
    }

    // One click to a guest.
    let guest = &guests[0];
    browser.click(&format!("tr[data-guest=\"{guest}\"] a.guest-link"));
    wait_ready(&browser, "guest-all");
    let url = browser.url();
    assert!(
        url.contains("view=guest")
            && url.contains(&format!("guest={guest}"))
            && url.contains(&format!("until={until}")),
        "clicking {guest} opened {url}"
    );
    let title = browser.eval(
        "return document.querySelector('main h1').textContent;",
        json!([]),
    );
    assert!(
        title.as_str().unwrap().starts_with(guest.as_str()),
        "guest view titled {title}"
    );
    let p = format!("hyperstats.{NODE}.{guest}");
    let runq = check_minute(
        &web,
        &browser,
        "runq",
        &format!("{p}.runq_latency_us.count"),
        minute,
        until,
    );
    check_minute(
        &web,
        &browser,
        "oncpu",
        &format!("{p}.oncpu_us.count"),
        minute,
        until,
    );

    // Hover the minute's fullest cell: the tooltip names its count.
    let cell = browser.eval(
        &format!(
            "const h = window.hyperStats.heatmaps.runq;\
             let best = null;\
             for (const c of h.columns) if (c.t >= {minute} && c.t < {minute} + 60)\
               c.counts.forEach((n, i) => {{ if (!best || n > best.n) best = {{t: c.t, i, n}}; }});\
             return {{...best, ...h.cellCenter(best.t, best.i)}};"
        ),
        json!([]),
    );
    browser.hover(cell["x"].as_f64().unwrap(), cell["y"].as_f64().unwrap());
    let tip = browser.wait_for(
        "the heatmap's tooltip",
        Duration::from_secs(5),
        "const t = document.getElementById('tooltip'); return !t.hidden && t.textContent;",
    );
    let tip = tip.as_str().unwrap();
    assert!(
        tip.contains(&format!("count {} of", cell["n"])) && tip.contains("cumulative"),
        "hovering {cell} shows {tip:?}"
    );
    if std::env::var_os("HYPER_STATS_SCREENSHOTS").is_some() {
        // Tall enough for the libvirt panels under the heatmaps; the
        // pointer stays on the cell, so the tooltip shows.
        browser.resize(1400, 1750);
        std::thread::sleep(Duration::from_millis(300));
        save_screenshot(&browser, "guest.png");
        browser.resize(1400, 1100);
    }

    // vCPU 0's own heatmap.
    browser.click("nav.vcpus a[href*=\"vcpu=0\"]");
    wait_ready(&browser, "guest-all");
    let vcpu0 = check_minute(
        &web,
        &browser,
        "runq",
        &format!("{p}.vcpu.0.runq_latency_us.count"),
        minute,
        until,
    );
    assert!(
        vcpu0 <= runq,
        "vCPU 0 waited {vcpu0} times, the guest {runq}"
    );

    let errors: Vec<_> = browser
        .console()
        .into_iter()
        .filter(|(level, _)| level == "SEVERE")
        .collect();
    assert!(
        errors.is_empty(),
        "errors in the browser console: {errors:?}"
    );
}
