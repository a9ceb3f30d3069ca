//! The libvirt connection layer against the lab: a real libvirtd at
//! `qemu:///system` with QEMU/TCG guests named `hs-lab-N`, started by
//! `cargo xtask lab up`.
//!
//! `#[ignore]`d so that a plain `cargo test` needs no daemon. Run them with
//! `cargo test -p hyper-stats --test libvirt_conn -- --ignored --nocapture`
//! (or through `cargo xtask test`). They only read stats: they never start
//! or stop guests or libvirtd.

use std::time::{Duration, Instant};

use hyper_stats::sources::libvirt::conn::Conn;
use hyper_stats::sources::libvirt::ffi::Connection;
use hyper_stats::sources::libvirt::groups::{Group, Groups};
use hyper_stats::sources::libvirt::params::DomainRecord;

const URI: &str = "qemu:///system";

/// Prefix of the lab's guest names.
const LAB_PREFIX: &str = "hs-lab-";

/// Bulk calls made before the first RSS reading, so that libvirt's and
/// the allocator's one-time growth (caches, arenas, the event loop) is not
/// counted as a leak.
const WARMUP_CALLS: usize = 200;

/// Bulk calls whose RSS growth is measured.
const MEASURED_CALLS: usize = 10_000;

/// Largest RSS growth accepted over [`MEASURED_CALLS`]. The `virt` crate's
/// own `all_domain_stats` leaks about 12 KB a call, which would be about
/// 120 MB here; allocator noise stays well under this.
const MAX_RSS_GROWTH_KIB: u64 = 1024;

fn all_groups() -> Groups {
    Group::ALL.into_iter().collect()
}

fn lab_records(records: &[DomainRecord]) -> Vec<&DomainRecord> {
    records
        .iter()
        .filter(|r| r.name.starts_with(LAB_PREFIX))
        .collect()
}

/// This process's resident set size in KiB, from /proc/self/status.
fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmRSS line in /proc/self/status")
}

#[tokio::test]
#[ignore = "needs the lab: cargo xtask test"]
async fn lab_guests_have_every_group_through_conn() {
    let conn = Conn::spawn(URI, Duration::from_secs(10));
    let records = conn
        .poll(all_groups())
        .await
        .unwrap_or_else(|e| panic!("poll {URI}: {e}\nis the lab up? cargo xtask lab up"));
    let lab = lab_records(&records);
    println!(
        "{} domains, {} lab guests: {:?}",
        records.len(),
        lab.len(),
        lab.iter().map(|r| r.name.as_str()).collect::<Vec<_>>()
    );
    assert!(
        !lab.is_empty(),
        "no running domain named {LAB_PREFIX}* on {URI}\nis the lab up? cargo xtask lab up"
    );
    let required = [
        "state.state",
        "cpu.time",
        "vcpu.0.time",
        "vcpu.0.delay",
        "block.0.wr.bytes",
        "net.0.tx.bytes",
        "balloon.current",
    ];
    for rec in lab {
        println!(
            "{} {}: {} fields, cpu.time={:?} vcpu.0.delay={:?} net.0.tx.bytes={:?}",
            rec.name,
            rec.uuid,
            rec.params.len(),
            rec.u64("cpu.time"),
            rec.u64("vcpu.0.delay"),
            rec.u64("net.0.tx.bytes"),
        );
        assert_eq!(rec.uuid.len(), 36, "uuid of {}: {:?}", rec.name, rec.uuid);
        for field in required {
            assert!(
                rec.u64(field).is_some(),
                "{}: field {field} missing or not an integer; fields: {:?}",
                rec.name,
                rec.params.iter().map(|(k, _)| k).collect::<Vec<_>>()
            );
        }
        assert!(
            rec.str("block.0.name").is_some(),
            "{}: block.0.name",
            rec.name
        );
        assert!(rec.str("net.0.name").is_some(), "{}: net.0.name", rec.name);
    }
}

#[test]
#[ignore = "needs the lab: cargo xtask test"]
fn ten_thousand_bulk_calls_do_not_leak() {
    let conn =
        Connection::open(URI).unwrap_or_else(|e| panic!("{e}\nis the lab up? cargo xtask lab up"));
    let groups = all_groups();
    let mut domains = 0;
    let mut fields = 0;
    for _ in 0..WARMUP_CALLS {
        let recs = conn.all_domain_stats(groups).expect("bulk stats");
        domains = recs.len();
        fields = recs.iter().map(|r| r.params.len()).sum::<usize>();
    }
    assert!(domains > 0, "no running domains on {URI}");
    let (mut min_domains, mut max_domains) = (domains, domains);
    let mut empty_calls = 0;
    let before = vm_rss_kib();
    let start = Instant::now();
    for i in 0..MEASURED_CALLS {
        let recs = conn
            .all_domain_stats(groups)
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
        // Other lab users may start or stop guests meanwhile: allowed, but
        // counted, since calls with no domain exercise less of the path.
        if recs.is_empty() {
            empty_calls += 1;
        }
        min_domains = min_domains.min(recs.len());
        max_domains = max_domains.max(recs.len());
        if i % 2000 == 0 {
            println!("call {i:>5}: VmRSS {} KiB", vm_rss_kib());
        }
    }
    let elapsed = start.elapsed();
    let after = vm_rss_kib();
    let growth = after.saturating_sub(before);
    println!(
        "{MEASURED_CALLS} all-groups calls ({min_domains}-{max_domains} domains, about {fields} \
         fields a call) in {:.1} s \
         ({:.2} ms a call): VmRSS {before} KiB -> {after} KiB, growth {growth} KiB \
         ({:.1} bytes a call); {empty_calls} calls found no domain",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / MEASURED_CALLS as f64,
        growth as f64 * 1024.0 / MEASURED_CALLS as f64,
    );
    assert!(
        empty_calls < MEASURED_CALLS / 10,
        "{empty_calls} of {MEASURED_CALLS} calls found no domain: was the lab torn down meanwhile?"
    );
    assert!(
        growth < MAX_RSS_GROWTH_KIB,
        "VmRSS grew {growth} KiB over {MEASURED_CALLS} calls (limit {MAX_RSS_GROWTH_KIB} KiB)"
    );
}
