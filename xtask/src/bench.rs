//! `cargo xtask bench poll|probes|scale`: benchmarks, run in sequence,
//! with their output kept in `bench/runs/`.
//!
//! `poll` runs the per-group bulk-stats bench (`collector/benches/poll.rs`)
//! against 2 and then 8 lab guests, so the cost per domain can be compared
//! at both sizes in one run on one machine. `probes` (`bench/probes.rs`)
//! runs the agent with its eBPF probes and libbpf-tools
//! `runqlat` side by side on 8 guests and a busy loop, and compares their
//! cost per event. Afterwards the lab runs 2 guests, or is down again if it
//! was down before. `scale` (`bench/scale.rs`) needs no lab: it watches
//! a synthetic load of 256 and then 1,024 vCPU threads and measures the
//! agent's memory, CPU and output at that size, and the libvirt side
//! against 250 test-driver domains. `dashboard`
//! (`collector/benches/dashboard.rs`) needs no lab either: the fleet view
//! over 2,000 synthetic guests in graphite-web, in headless Chromium.
//!
//! Each run's output goes to `bench/runs/<unix time>-<bench>.txt`, headed
//! with the date, kernel and CPU, so numbers from different days and
//! machines are never mixed up.

use std::fs;
use std::process::Command;

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::lab;
use crate::util::workspace_root;

mod probes;
mod scale;

/// A benchmark suite.
#[derive(Subcommand)]
pub enum Suite {
    /// Bulk-stats poll cost per group, with 2 and 8 guests.
    Poll,
    /// eBPF probe cost per event against runqlat, and the agent's CPU, with
    /// 8 guests.
    Probes,
    /// Agent memory, CPU and output with 256 and 1,024 watched vCPU
    /// threads of a synthetic load, and with 250 libvirt test domains (no
    /// lab needed).
    Scale(scale::Args),
    /// The dashboard's fleet view over 2,000 synthetic guests on 50 hosts
    /// (whisper files written directly, graphite-web, headless Chromium):
    /// time to first useful paint, against its 2 s goal (no lab needed).
    Dashboard,
}

/// Lab sizes the poll bench runs at.
const POLL_GUESTS: [u32; 2] = [2, 8];

pub fn run(suite: Suite) -> Result<()> {
    match suite {
        Suite::Poll => poll(),
        Suite::Probes => probes::run(),
        Suite::Scale(args) => scale::run(&args),
        Suite::Dashboard => {
            let out = cargo_bench("dashboard")?;
            print!("{out}");
            save("dashboard", &format!("{}\n{out}", header()?))
        }
    }
}

fn poll() -> Result<()> {
    let was_up = lab::is_up()?;
    let mut report = header()?;
    for guests in POLL_GUESTS {
        lab::run(lab::Action::Up { guests })?;
        let out = cargo_bench("poll")?;
        report.push_str(&format!("\n## {guests} guests\n\n{out}"));
        print!("{out}");
    }
    lab::run(lab::Action::Up {
        guests: POLL_GUESTS[0],
    })?;
    if !was_up {
        lab::run(lab::Action::Down)?;
    }
    save("poll", &report)
}

/// Runs one bench target of the collector and returns its stdout.
fn cargo_bench(name: &str) -> Result<String> {
    let out = Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args(["bench", "--package", "hyper-stats", "--bench", name])
        .output()
        .with_context(|| format!("failed to run the {name} bench"))?;
    if !out.status.success() {
        anyhow::bail!(
            "the {name} bench failed with {}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Date, kernel and CPU of this run.
fn header() -> Result<String> {
    let uname = Command::new("uname")
        .arg("-srm")
        .output()
        .context("failed to run uname")?;
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .context("failed to run date")?;
    Ok(format!(
        "# date: {}# kernel: {}# cpu: {cpu}, {} cores\n",
        String::from_utf8_lossy(&date.stdout),
        String::from_utf8_lossy(&uname.stdout),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ))
}

/// Writes `report` to `bench/runs/<unix time>-<name>.txt`.
fn save(name: &str, report: &str) -> Result<()> {
    let dir = workspace_root().join("bench").join("runs");
    fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let path = dir.join(format!("{secs}-{name}.txt"));
    fs::write(&path, report).with_context(|| format!("failed to write {}", path.display()))?;
    println!("bench: report saved to {}", path.display());
    Ok(())
}
