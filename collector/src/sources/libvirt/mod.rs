//! The libvirt source: polls bulk stats of every running domain, each stats
//! group at its own interval, and turns the raw counters into datapoints.
//!
//! # What it owns
//! One [`conn::Conn`] (a libvirt connection on its own thread, with a
//! deadline per call and reconnection with backoff) and, per domain UUID and
//! group, the previous record, from which rates and percentages are derived.
//!
//! # Schedule
//! Every group has an interval (1 s by default). Ticks are aligned to whole
//! multiples of the interval in wall-clock time, so 1 s samples of every
//! host land on the same second. The groups due at one tick share a single
//! bulk call. A tick that is missed (a slow call) is skipped, never
//! replayed in a burst.
//!
//! # Domains coming and going
//! A domain's identity is its UUID; its name is a label that can change.
//! A domain that appears is picked up at its first poll (gauges at once,
//! rates from its second sample); a domain absent from a poll is retired
//! with its previous records, so a restart never yields a rate across the
//! gap, and a [`Sample::Retired`] tells the rollup to end its series. Both
//! are logged once at info.
//!
//! # Failures
//! A failed or timed-out poll yields no datapoints for that tick and is
//! logged once per change of state (the connection layer logs losing and
//! regaining libvirtd); sampling resumes on the next tick.

pub(crate) mod balloon;
pub(crate) mod block;
pub(crate) mod config;
pub mod conn;
pub(crate) mod counter;
pub(crate) mod cpu;
pub(crate) mod derive;
pub mod ffi;
pub mod groups;
pub(crate) mod monitor;
pub(crate) mod net;
pub mod params;
pub(crate) mod perf;
pub(crate) mod state;
pub(crate) mod vcpu;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::sample::{Batch, Datapoint, Sample, Samples};
use crate::self_stats::{Counter, Registry};
use conn::{Conn, PollError};
use derive::Derived;
use groups::{Group, Groups};
use monitor::MonitorPool;
use params::DomainRecord;

/// The previous sample of one group of one domain.
struct Previous {
    /// The whole record of the call that sampled this group (it may hold
    /// other groups' fields too; only this group's are read).
    record: Arc<DomainRecord>,
    /// When the call was made (its midpoint), for the interval length.
    at: Instant,
}

/// What the source remembers about one domain between polls.
#[derive(Default)]
struct Domain {
    /// The name seen last, to notice renames.
    name: Arc<str>,
    /// The UUID as shared by all of its datapoints.
    uuid: Arc<str>,
    /// Previous sample per group.
    previous: HashMap<Group, Previous>,
}

/// How many of its intervals a group's previous sample may be old and
/// still be differenced: past it (a guest whose QEMU did not answer for a
/// while), the next sample starts the rates afresh instead of averaging
/// over the gap.
pub(crate) const MAX_GAP_INTERVALS: u32 = 3;

/// Derivation state: everything but the connection, so it can be driven
/// from tests with hand-made records.
#[derive(Default)]
pub(crate) struct Deriver {
    /// Known running domains by UUID.
    domains: HashMap<String, Domain>,
    /// Each group's poll interval (1 s when not set), for the gap rule.
    intervals: BTreeMap<Group, Duration>,
    /// Domains retired since [`Deriver::take_retired`] was last called.
    retired: Vec<Arc<str>>,
}

impl Deriver {
    /// A deriver for groups polled at `intervals`.
    pub(crate) fn new(intervals: BTreeMap<Group, Duration>) -> Deriver {
        Deriver {
            intervals,
            ..Deriver::default()
        }
    }

    /// Turns the records of one poll of `groups`, made at `at` (monotonic)
    /// and `ts` (unix seconds), into datapoints; retires domains absent from
    /// the poll.
    pub(crate) fn derive(
        &mut self,
        records: Vec<DomainRecord>,
        groups: Groups,
        at: Instant,
        ts: f64,
    ) -> Batch {
        let mut batch = Batch::new();
        let seen: std::collections::HashSet<String> =
            records.iter().map(|r| r.uuid.to_owned()).collect();
        let retired = &mut self.retired;
        self.domains.retain(|uuid, d| {
            let keep = seen.contains(uuid);
            if !keep {
                info!(message = "Domain is gone; retiring its series.", domain = %d.name, uuid = %uuid);
                retired.push(Arc::clone(&d.uuid));
            }
            keep
        });
        for record in records {
            let record = Arc::new(record);
            let domain = self.domains.entry(record.uuid.to_owned()).or_insert_with(|| {
                info!(message = "Domain found; sampling it.", domain = %record.name, uuid = %record.uuid);
                Domain {
                    name: record.name.as_str().into(),
                    uuid: record.uuid.as_str().into(),
                    previous: HashMap::new(),
                }
            });
            if *domain.name != *record.name {
                info!(message = "Domain renamed.", from = %domain.name, to = %record.name, uuid = %record.uuid);
                domain.name = record.name.as_str().into();
            }
            let mut out = Derived::default();
            for group in groups.iter() {
                let every = self
                    .intervals
                    .get(&group)
                    .copied()
                    .unwrap_or(Duration::from_secs(1));
                let prev = domain
                    .previous
                    .get(&group)
                    .filter(|p| at.saturating_duration_since(p.at) <= every * MAX_GAP_INTERVALS);
                let dt_s = prev.map_or(0.0, |p| at.saturating_duration_since(p.at).as_secs_f64());
                let prev_record = prev.map(|p| &*p.record);
                let derive_group = match group {
                    Group::State => state::derive,
                    Group::Cpu => cpu::derive,
                    Group::Balloon => balloon::derive,
                    Group::Vcpu => vcpu::derive,
                    Group::Net => net::derive,
                    Group::Block => block::derive,
                    Group::Perf => perf::derive,
                };
                let interval = derive::Interval {
                    prev: prev_record,
                    cur: &record,
                    dt_s,
                };
                derive_group(&interval, &mut out);
                domain.previous.insert(
                    group,
                    Previous {
                        record: Arc::clone(&record),
                        at,
                    },
                );
            }
            batch.extend(out.values.into_iter().map(|(metric, value)| Datapoint {
                ts,
                uuid: Arc::clone(&domain.uuid),
                domain: Arc::clone(&domain.name),
                metric: metric.into(),
                value,
            }));
        }
        batch
    }

    /// The domains retired by polls since the last call: the rollup ends
    /// their series.
    pub(crate) fn take_retired(&mut self) -> Vec<Arc<str>> {
        std::mem::take(&mut self.retired)
    }

    /// Number of domains currently known.
    #[cfg(test)]
    pub(crate) fn domain_count(&self) -> usize {
        self.domains.len()
    }

    /// The known domains, sorted by UUID.
    pub(crate) fn domain_refs(&self) -> Vec<DomainRef> {
        let mut refs: Vec<DomainRef> = self
            .domains
            .values()
            .map(|d| DomainRef {
                uuid: Arc::clone(&d.uuid),
                name: Arc::clone(&d.name),
            })
            .collect();
        refs.sort();
        refs
    }
}

/// A running domain as other parts of the agent (the eBPF source) need
/// it: identity and current name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DomainRef {
    /// The domain's UUID.
    pub uuid: Arc<str>,
    /// Its name now (the QEMU driver's run files are named after it).
    pub name: Arc<str>,
}

/// The libvirt source: a connection, a schedule and the derivation state.
pub struct LibvirtSource {
    /// The bulk calls: the domain list and the groups that never ask QEMU.
    conn: Conn,
    /// Per-domain calls for the groups that ask QEMU over its monitor.
    monitor: MonitorPool,
    /// How long a poll may take.
    call_timeout: Duration,
    intervals: BTreeMap<Group, Duration>,
    deriver: Deriver,
    /// Publishes the running domains whenever the set changes.
    domains_tx: watch::Sender<Arc<[DomainRef]>>,
    /// Polls that failed or timed out (`agent.libvirt.poll_failures`).
    poll_failures: Counter,
    /// Per-domain monitor calls that failed, timed out or were skipped
    /// because the domain's previous call had not returned
    /// (`agent.libvirt.domain_call_failures`).
    domain_call_failures: Counter,
}

impl LibvirtSource {
    /// A source polling `intervals` at the libvirt `uri`, each call given
    /// `call_timeout`, counting its failures in `stats`.
    pub fn new(
        uri: &str,
        call_timeout: Duration,
        intervals: BTreeMap<Group, Duration>,
        stats: &Registry,
    ) -> LibvirtSource {
        LibvirtSource {
            conn: Conn::spawn(uri, call_timeout),
            monitor: MonitorPool::spawn(uri),
            call_timeout,
            deriver: Deriver::new(intervals.clone()),
            intervals,
            domains_tx: watch::Sender::new(Arc::from(Vec::new())),
            poll_failures: stats.counter("libvirt.poll_failures"),
            domain_call_failures: stats.counter("libvirt.domain_call_failures"),
        }
    }

    /// The running domains, updated after every poll that changes them. A
    /// lost libvirtd leaves the last list in place: its domains keep
    /// running without it.
    pub fn domains(&self) -> watch::Receiver<Arc<[DomainRef]>> {
        self.domains_tx.subscribe()
    }

    /// Polls until `out` is closed, sending one batch per poll: the
    /// domains gone since the last poll, then the datapoints.
    pub async fn run(mut self, out: mpsc::Sender<Samples>) {
        if self.intervals.is_empty() {
            warn!(message = "Every libvirt stats group is off; the libvirt source does nothing.");
            return;
        }
        let start = Instant::now();
        let mut next_due: BTreeMap<Group, Instant> = self
            .intervals
            .iter()
            .map(|(g, every)| (*g, start + until_aligned(SystemTime::now(), *every)))
            .collect();
        let mut failing = crate::episode::Episode::default();
        loop {
            let wake = *next_due.values().min().expect("at least one group");
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = out.closed() => return,
            }
            let now = Instant::now();
            let due: Groups = next_due
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(g, _)| *g)
                .collect();
            for (group, t) in next_due.iter_mut() {
                if *t <= now {
                    let every = self.intervals[group];
                    *t += every;
                    if *t <= now {
                        // A slow poll made us miss ticks: skip them.
                        *t = now + until_aligned(SystemTime::now(), every);
                    }
                }
            }
            let (wall, t0) = (SystemTime::now(), Instant::now());
            let result = self.poll(due).await;
            let half = t0.elapsed() / 2;
            let ts = crate::clock::unix_secs(wall + half);
            match result {
                Ok(records) => {
                    if failing.recover() {
                        info!(message = "Libvirt polls succeed again.");
                    }
                    let points = self.deriver.derive(records, due, t0 + half, ts);
                    let mut batch: Samples = self
                        .deriver
                        .take_retired()
                        .into_iter()
                        .map(Sample::Retired)
                        .collect();
                    batch.extend(points.into_iter().map(Sample::Gauge));
                    let now: Vec<DomainRef> = self.deriver.domain_refs();
                    self.domains_tx.send_if_modified(|old| {
                        let changed = **old != *now;
                        if changed {
                            *old = Arc::from(now);
                        }
                        changed
                    });
                    if !batch.is_empty() && out.send(batch).await.is_err() {
                        return;
                    }
                }
                // The connection layer logs losing and regaining libvirtd.
                Err(PollError::Disconnected { .. }) => {
                    self.poll_failures.add(1);
                    failing.fail();
                }
                Err(e) => {
                    self.poll_failures.add(1);
                    if failing.fail() {
                        warn!(message = "Libvirt poll failed; retrying on the next tick.", groups = %due, error = %e);
                    }
                }
            }
        }
    }
}

impl LibvirtSource {
    /// One poll of `due`: a bulk call for the domain list (`state`, always)
    /// and the groups that never ask QEMU, then one call per domain for
    /// the groups that do, merged into one record per domain. A domain
    /// whose QEMU does not answer comes back without those groups.
    async fn poll(&mut self, due: Groups) -> Result<Vec<DomainRecord>, PollError> {
        let mut bulk: Groups = due.iter().filter(|g| g.is_cheap()).collect();
        bulk.insert(Group::State);
        let monitor: Groups = due.iter().filter(|g| !g.is_cheap()).collect();
        let mut records = self.conn.poll(bulk).await?;
        if monitor == Groups::NONE || records.is_empty() {
            return Ok(records);
        }
        // Within the tick: a late answer is no use to this poll.
        let fastest = monitor.iter().filter_map(|g| self.intervals.get(&g)).min();
        let deadline = fastest.map_or(self.call_timeout, |every| {
            self.call_timeout.min(*every * 4 / 5)
        });
        let uuids = records.iter().map(|r| Arc::<str>::from(r.uuid.as_str()));
        let polled = self
            .monitor
            .poll(uuids.collect::<Vec<_>>(), monitor, deadline)
            .await;
        self.domain_call_failures
            .add((polled.failed + polled.stuck) as u64);
        for extra in polled.records {
            if let Some(r) = records.iter_mut().find(|r| r.uuid == extra.uuid) {
                r.params.extend(extra.params);
            }
        }
        Ok(records)
    }
}

/// How long from `now` until the next whole multiple of `every` since the
/// unix epoch (so every host's 1 s samples fall on the same second).
fn until_aligned(now: SystemTime, every: Duration) -> Duration {
    let since = crate::clock::since_epoch(now).as_nanos();
    let every_ns = every.as_nanos().max(1);
    let rem = since % every_ns;
    Duration::from_nanos((every_ns - rem) as u64)
}

#[cfg(test)]
mod tests {
    use super::derive::testutil::record;
    use super::*;

    fn with_uuid(mut r: DomainRecord, uuid: &str, name: &str) -> DomainRecord {
        r.uuid = uuid.into();
        r.name = name.into();
        r
    }

    #[test]
    fn rates_start_at_second_sample_and_restart_retires() {
        let mut d = Deriver::default();
        let groups: Groups = [Group::Cpu, Group::State].into_iter().collect();
        let t0 = Instant::now();
        let a1 = with_uuid(
            record(&[("cpu.time", 0), ("state.state", 1)], &[]),
            "u-a",
            "a",
        );
        let b = d.derive(vec![a1], groups, t0, 100.0);
        assert!(b.iter().all(|p| p.metric.starts_with("state.")), "{b:?}");

        let a2 = with_uuid(
            record(&[("cpu.time", 500_000_000), ("state.state", 1)], &[]),
            "u-a",
            "a-renamed",
        );
        let b = d.derive(vec![a2], groups, t0 + Duration::from_secs(1), 101.0);
        let cpu: Vec<_> = b
            .iter()
            .filter(|p| &*p.metric == "cpu.time_percent")
            .collect();
        assert_eq!(cpu.len(), 1);
        assert!((cpu[0].value - 50.0).abs() < 1e-9);
        assert_eq!(&*cpu[0].domain, "a-renamed");
        assert_eq!(&*cpu[0].uuid, "u-a");
        assert_eq!(cpu[0].ts, 101.0);

        // The domain is absent from one poll (stopped), then back with a
        // restarted counter: no rate across the gap.
        let b = d.derive(vec![], groups, t0 + Duration::from_secs(2), 102.0);
        assert!(b.is_empty());
        assert_eq!(d.domain_count(), 0);
        assert_eq!(d.take_retired(), [Arc::from("u-a")]);
        assert!(d.take_retired().is_empty());
        let a3 = with_uuid(
            record(&[("cpu.time", 900_000_000), ("state.state", 1)], &[]),
            "u-a",
            "a",
        );
        let b = d.derive(vec![a3], groups, t0 + Duration::from_secs(3), 103.0);
        assert!(!b.iter().any(|p| &*p.metric == "cpu.time_percent"), "{b:?}");
    }

    /// A sample more than MAX_GAP_INTERVALS intervals after the previous
    /// one (its QEMU did not answer meanwhile) starts the rates afresh.
    #[test]
    fn no_rate_across_a_gap() {
        let every = Duration::from_secs(1);
        let mut d = Deriver::new(BTreeMap::from([(Group::Cpu, every)]));
        let cpu: Groups = [Group::Cpu].into_iter().collect();
        let t0 = Instant::now();
        let rec = |ns: u64| with_uuid(record(&[("cpu.time", ns)], &[]), "u", "n");
        d.derive(vec![rec(0)], cpu, t0, 0.0);
        let b = d.derive(vec![rec(500_000_000)], cpu, t0 + every * 3, 3.0);
        assert_eq!(b.len(), 1, "3 intervals is no gap yet: {b:?}");
        let b = d.derive(vec![rec(900_000_000)], cpu, t0 + every * 7, 7.0);
        assert!(b.is_empty(), "4 intervals later: {b:?}");
        let b = d.derive(vec![rec(1_000_000_000)], cpu, t0 + every * 8, 8.0);
        assert!((b[0].value - 10.0).abs() < 1e-9, "{b:?}");
    }

    #[test]
    fn groups_keep_their_own_previous_sample() {
        let mut d = Deriver::default();
        let t0 = Instant::now();
        let net: Groups = [Group::Net].into_iter().collect();
        let all: Groups = [Group::Net, Group::Cpu].into_iter().collect();
        let rec = |tx: u64, cpu: u64| {
            with_uuid(
                record(
                    &[("net.count", 1), ("net.0.tx.bytes", tx), ("cpu.time", cpu)],
                    &[("net.0.name", "vnet0")],
                ),
                "u",
                "n",
            )
        };
        d.derive(vec![rec(0, 0)], all, t0, 0.0);
        // Net polled alone 0.5 s later: its rate uses 0.5 s.
        let b = d.derive(vec![rec(500, 0)], net, t0 + Duration::from_millis(500), 0.5);
        let tx = b
            .iter()
            .find(|p| &*p.metric == "net.vnet0.tx.bytes_per_s")
            .unwrap();
        assert!((tx.value - 1000.0).abs() < 1e-6);
        // Then both at 1 s: cpu's interval is the full second.
        let b = d.derive(
            vec![rec(1000, 100_000_000)],
            all,
            t0 + Duration::from_secs(1),
            1.0,
        );
        let cpu = b.iter().find(|p| &*p.metric == "cpu.time_percent").unwrap();
        assert!((cpu.value - 10.0).abs() < 1e-6, "{}", cpu.value);
    }

    #[test]
    fn alignment_lands_on_interval_multiples() {
        let now = std::time::UNIX_EPOCH + Duration::from_millis(10_250);
        assert_eq!(
            until_aligned(now, Duration::from_secs(1)),
            Duration::from_millis(750)
        );
        assert_eq!(
            until_aligned(now, Duration::from_millis(100)),
            Duration::from_millis(50)
        );
        let exact = std::time::UNIX_EPOCH + Duration::from_secs(10);
        assert_eq!(
            until_aligned(exact, Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }
}
