//! The libvirt side of the scale bench: the agent against [`DOMAINS`]
//! running domains of libvirt's test driver, and against its one-domain
//! default for a baseline.
//!
//! # The test driver
//! `test:///<file>` loads a `<node>` document (a `<cpu>`, `<memory>` and
//! one inline `<domain type='test'>` per guest; domains start running)
//! into a fake hypervisor inside the agent's own process: no libvirtd, no
//! QEMU. Its bulk stats carry only the `state` group, so this measures the
//! agent's per-domain bookkeeping (listing, decoding, series, rollup,
//! Carbon) and libvirt's own per-call cost in process, not QEMU monitor
//! round trips (which `cargo xtask bench poll` measures on the lab), and
//! no vCPU threads (the domains have no QEMU pid).
//!
//! # What is measured
//! CPU (`utime + stime`) and RSS every [`super::SAMPLE_RSS_EVERY`], printed
//! once a minute; CPU per poll per domain after the warm-up, gross and net
//! of the baseline; the metric names the test driver gave one domain.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{AgentProc, BASE_CONFIG, CARBON_PREFIX, carbon, emit};

/// Domains in the test-driver file: the dense node.
pub const DOMAINS: u32 = 250;

/// Minutes of the 250-domain run by default: enough for an RSS trend over
/// the rollup's first windows.
pub const MINUTES: f64 = 3.0;

/// Minutes of the one-domain baseline (`test:///default`).
const BASELINE_MINUTES: f64 = 1.0;

/// The largest RSS slope (KiB per minute, over the run's second half)
/// still called flat: RSS moves by a few pages as allocator arenas settle,
/// while a leak of even 100 bytes per domain and poll is 1.4 MiB a minute.
const FLAT_KIB_PER_MIN: f64 = 16.0;

/// Polls per second with the default intervals (every group at 1 s, one
/// shared poll).
const POLLS_PER_S: f64 = 1.0;

/// The test-driver `<node>` document with `domains` running domains named
/// `tdom-NNN`, 2 vCPUs and 1 GiB each.
pub fn node_xml(domains: u32) -> String {
    let mut xml = String::from(
        "<node>\n  <cpu><mhz>2000</mhz><model>x86_64</model><active>2</active><nodes>1</nodes>\
         <sockets>1</sockets><cores>2</cores><threads>1</threads></cpu>\n  <memory>25165824</memory>\n",
    );
    for i in 0..domains {
        let _ = writeln!(
            xml,
            "  <domain type='test'><name>tdom-{i:03}</name>\
             <uuid>6873d000-0000-4000-8000-{i:012}</uuid>\
             <memory unit='KiB'>1048576</memory><vcpu>2</vcpu><os><type>hvm</type></os></domain>"
        );
    }
    xml.push_str("</node>\n");
    xml
}

/// Runs the libvirt side and returns its part of the report.
pub fn run(agent_bin: &Path, dir: &Path, minutes: f64) -> Result<String> {
    let mut out = String::new();
    emit(
        &mut out,
        &format!("\n## libvirt side: {DOMAINS} test-driver domains\n"),
    );
    let file = dir.join(format!("node-{DOMAINS}.xml"));
    fs::write(&file, node_xml(DOMAINS))
        .with_context(|| format!("failed to write {}", file.display()))?;
    let uri = format!("test://{}", file.display());
    emit(
        &mut out,
        "the test driver runs in the agent's process (no libvirtd, no QEMU); its bulk stats carry \
         only the state group (no cpu, balloon, vcpu, net, block, perf), and its domains have no \
         QEMU pid, so no vCPU threads are probed",
    );
    let full = one_run(agent_bin, dir, &uri, DOMAINS, minutes, &mut out)?;
    let base = one_run(
        agent_bin,
        dir,
        "test:///default",
        1,
        BASELINE_MINUTES,
        &mut out,
    )?;
    let per_domain_gross = full.cpu_ms_per_s / POLLS_PER_S / f64::from(DOMAINS) * 1000.0;
    let per_domain_net =
        (full.cpu_ms_per_s - base.cpu_ms_per_s) / POLLS_PER_S / f64::from(DOMAINS - 1) * 1000.0;
    emit(
        &mut out,
        &format!(
            "\nagent CPU per poll per domain: {per_domain_gross:.1} µs gross ({:.2} ms/s / {DOMAINS}), \
             {per_domain_net:.1} µs net of the 1-domain baseline ({:.2} ms/s)",
            full.cpu_ms_per_s, base.cpu_ms_per_s
        ),
    );
    emit(
        &mut out,
        &format!(
            "RSS: {:.1} MiB at the end with {DOMAINS} domains, trend over the second half {} \
             (flat is the goal: {})",
            full.rss_end_kib as f64 / 1024.0,
            full.trend
                .map_or("n/a".to_owned(), |t| format!("{t:+.1} KiB/min")),
            match full.trend {
                Some(t) if t.abs() <= FLAT_KIB_PER_MIN => "met",
                Some(_) => "NOT met",
                None => "not judged",
            }
        ),
    );
    emit(
        &mut out,
        &format!(
            "series of one domain (tdom-000): {}",
            full.metrics.iter().cloned().collect::<Vec<_>>().join(", ")
        ),
    );
    Ok(out)
}

/// What one run measured.
struct Run {
    /// Agent CPU after the warm-up, ms per second.
    cpu_ms_per_s: f64,
    /// RSS at the end, KiB.
    rss_end_kib: u64,
    /// RSS slope over the second half, KiB per minute.
    trend: Option<f64>,
    /// The first domain's metric names.
    metrics: BTreeSet<String>,
}

fn one_run(
    agent_bin: &Path,
    dir: &Path,
    uri: &str,
    domains: u32,
    minutes: f64,
    out: &mut String,
) -> Result<Run> {
    let config = dir.join("libvirt.toml");
    fs::write(&config, BASE_CONFIG)?;
    let watch = if domains == 1 { "test" } else { "tdom-000" };
    let counter = carbon::Counter::start(CARBON_PREFIX, BTreeSet::new(), Some(watch.to_owned()))?;
    let log_path = dir.join(format!("agent-libvirt-{domains}.log"));
    let child = Command::new(agent_bin)
        .arg("--config")
        .arg(&config)
        .args(["run", "--connect", uri, "--carbon"])
        .arg(format!("127.0.0.1:{}", counter.port))
        .arg("--duration")
        .arg(super::agent_duration(Duration::from_secs_f64(
            minutes * 60.0,
        )))
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log_path)?)
        .spawn()
        .context("failed to start hyper-stats")?;
    let mut agent = AgentProc { child };
    emit(
        out,
        &format!(
            "\n### {domains} domain(s), {minutes} min (agent pid {})\n{:>5} {:>9} {:>12} {:>10}",
            agent.pid(),
            "min",
            "RSS MiB",
            "CPU ms/s",
            "points/s"
        ),
    );
    let hz = super::super::probes::clock_ticks_per_s()?;
    let total = Duration::from_secs_f64(minutes * 60.0);
    let start = Instant::now();
    let mut samples: Vec<(f64, u64, u64)> = Vec::new();
    let mut at_warm: Option<(Instant, u64)> = None;
    let mut mark = (start, 0u64, 0u64);
    let mut next_print = start + Duration::from_secs(60);
    while start.elapsed() < total {
        if let Some(status) = agent.child.try_wait()? {
            bail!(
                "hyper-stats exited early with {status}:\n{}",
                fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        let now = Instant::now();
        let ticks = super::super::probes::cpu_ticks(agent.pid())?;
        samples.push((
            start.elapsed().as_secs_f64(),
            super::rss_kib(agent.pid())?,
            ticks,
        ));
        if at_warm.is_none() && start.elapsed() >= super::WARMUP.min(total / 2) {
            at_warm = Some((now, ticks));
        }
        // A row each minute, and one at the end of a run that does not end
        // on a whole minute.
        let last_round = start.elapsed() + super::SAMPLE_RSS_EVERY >= total;
        if now >= next_print || (last_round && now.duration_since(mark.0) > Duration::from_secs(5))
        {
            let span = now.duration_since(mark.0).as_secs_f64();
            let lines = counter.lines();
            emit(
                out,
                &format!(
                    "{:>5.1} {:>9.1} {:>12.2} {:>10.0}",
                    start.elapsed().as_secs_f64() / 60.0,
                    samples.last().map_or(0, |s| s.1) as f64 / 1024.0,
                    (ticks - mark.1) as f64 / hz * 1000.0 / span,
                    (lines - mark.2) as f64 / span
                ),
            );
            mark = (now, ticks, lines);
            next_print += Duration::from_secs(60);
        }
        thread::sleep(super::SAMPLE_RSS_EVERY.min(total.saturating_sub(start.elapsed())));
    }
    let ticks_end = super::super::probes::cpu_ticks(agent.pid())?;
    let rss_end = super::rss_kib(agent.pid())?;
    let end = Instant::now();
    agent.stop();
    let (warm_at, warm_ticks) = at_warm.unwrap_or((start, 0));
    let cpu_ms_per_s =
        (ticks_end - warm_ticks) as f64 / hz * 1000.0 / end.duration_since(warm_at).as_secs_f64();
    let metrics = counter.with_seen(|s| s.domain_metrics.clone());
    Ok(Run {
        cpu_ms_per_s,
        rss_end_kib: rss_end,
        trend: super::rss_trend_kib_per_min(&samples),
        metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_xml_has_every_domain_with_a_unique_uuid() {
        let xml = node_xml(250);
        assert_eq!(xml.matches("<domain type='test'>").count(), 250);
        assert!(xml.contains("<name>tdom-249</name>"));
        let uuids: BTreeSet<&str> = xml
            .match_indices("<uuid>")
            .map(|(i, _)| &xml[i + 6..i + 42])
            .collect();
        assert_eq!(uuids.len(), 250);
        assert!(xml.contains("<uuid>6873d000-0000-4000-8000-000000000249</uuid>"));
    }
}
