//! The stats groups libvirt answers by asking QEMU over its monitor (cpu,
//! balloon, vcpu, block), one call per domain on a small pool of threads,
//! so that a QEMU that stops answering costs only its own samples.
//!
//! # Why per domain
//! A bulk call walks the domains one after another: one frozen QEMU (a
//! stopped process, I/O stuck in D state, a long job) holds the call, and
//! with it every other domain's samples, for as long as it does not
//! answer. Here each domain's call is a job of its own, taken by the next
//! free worker; a stuck call holds one worker and its domain only.
//!
//! # What it owns
//! [`WORKERS`] threads, each with its own libvirt connection, opened by
//! the first job that needs it and dropped when a call says it is lost
//! (calls sharing one connection were seen to wait behind a stuck one in
//! the lab); and the set of domains with a call in flight. A domain whose
//! previous call has not returned is skipped (not queued again), so a
//! frozen QEMU costs one worker, not one per tick.
//!
//! # When things fail
//! A poll waits until every job it queued answered or its deadline passed;
//! what comes later is dropped. A failed call, or a domain that stopped
//! since it was listed, leaves that domain out. Failures are the caller's
//! to log (it counts them as poll failures once per episode).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::mpsc as async_mpsc;

use super::ffi::{Connection, LibvirtError};
use super::groups::Groups;
use super::params::DomainRecord;

/// Worker threads: enough that a few frozen guests leave the others the
/// rest, few enough to stay a handful of libvirtd clients' worth of load.
pub(crate) const WORKERS: usize = 4;

/// How long after a failed open the next one is tried: at most one open a
/// second while libvirtd is down.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

/// One domain's stats, as the pool needs them from libvirt; one per
/// worker.
pub(crate) trait DomainStats: Send + 'static {
    /// The stats of `uuid` for `groups`; `None` if it no longer runs. May
    /// block.
    fn domain_stats(&mut self, uuid: &str, groups: Groups) -> anyhow::Result<Option<DomainRecord>>;
}

/// Makes one worker's backend.
pub(crate) type Factory = Arc<dyn Fn() -> Box<dyn DomainStats> + Send + Sync>;

/// The real backend: a worker's own connection, (re)opened on demand.
struct Libvirt {
    uri: String,
    conn: Option<Connection>,
    /// When an open may be tried again after one failed.
    retry_at: Option<Instant>,
}

impl Libvirt {
    /// The open connection, opening one if it is time to.
    fn connection(&mut self) -> Result<&Connection, LibvirtError> {
        if self.conn.is_none() {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                return Err(LibvirtError::new(format!(
                    "libvirt at {} is unreachable; retrying",
                    self.uri
                )));
            }
            match Connection::open(&self.uri) {
                Ok(conn) => {
                    self.conn = Some(conn);
                    self.retry_at = None;
                }
                Err(e) => {
                    self.retry_at = Some(Instant::now() + REOPEN_AFTER);
                    return Err(e);
                }
            }
        }
        Ok(self.conn.as_ref().expect("opened above"))
    }
}

impl DomainStats for Libvirt {
    fn domain_stats(&mut self, uuid: &str, groups: Groups) -> anyhow::Result<Option<DomainRecord>> {
        let result = self.connection()?.domain_stats(uuid, groups);
        if let Err(e) = &result
            && e.is_connection_lost()
        {
            self.conn = None;
        }
        Ok(result?)
    }
}

/// One domain's call, as queued for the workers.
struct Job {
    uuid: Arc<str>,
    groups: Groups,
    reply: async_mpsc::UnboundedSender<anyhow::Result<Option<DomainRecord>>>,
}

/// The pool.
pub(crate) struct MonitorPool {
    jobs: mpsc::Sender<Job>,
    /// Domains with a call in flight (queued or running).
    busy: Arc<Mutex<HashSet<Arc<str>>>>,
}

/// What one poll of the pool gave.
#[derive(Debug, Default)]
pub(crate) struct Polled {
    /// The records that came back in time.
    pub(crate) records: Vec<DomainRecord>,
    /// Domains skipped because their previous call is still running.
    pub(crate) stuck: usize,
    /// Calls that failed or did not answer within the deadline.
    pub(crate) failed: usize,
}

impl MonitorPool {
    /// A pool asking the libvirt at `uri`.
    pub(crate) fn spawn(uri: &str) -> MonitorPool {
        let uri = uri.to_owned();
        MonitorPool::with_backends(Arc::new(move || {
            Box::new(Libvirt {
                uri: uri.clone(),
                conn: None,
                retry_at: None,
            })
        }))
    }

    /// A pool whose workers ask what `factory` makes (fakes in tests).
    pub(crate) fn with_backends(factory: Factory) -> MonitorPool {
        let (jobs, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let busy: Arc<Mutex<HashSet<Arc<str>>>> = Arc::default();
        for i in 0..WORKERS {
            let (rx, busy) = (Arc::clone(&rx), Arc::clone(&busy));
            let mut backend = factory();
            let worker = move || {
                loop {
                    // The lock is held only while waiting for the next job.
                    let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    let Ok(job) = next else { return };
                    let result = backend.domain_stats(&job.uuid, job.groups);
                    busy.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&job.uuid);
                    // The poll may have stopped waiting: then this is late.
                    let _ = job.reply.send(result);
                }
            };
            // A pool short of a thread still works; none at all polls nothing.
            let _ = thread::Builder::new()
                .name(format!("libvirt-domain-{i}"))
                .spawn(worker);
        }
        MonitorPool { jobs, busy }
    }

    /// The stats of `domains` for `groups`, as many as answer within
    /// `deadline`.
    pub(crate) async fn poll(
        &self,
        domains: impl IntoIterator<Item = Arc<str>>,
        groups: Groups,
        deadline: Duration,
    ) -> Polled {
        let mut polled = Polled::default();
        let (reply, mut replies) = async_mpsc::unbounded_channel();
        let mut queued = 0usize;
        for uuid in domains {
            let fresh = self
                .busy
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(Arc::clone(&uuid));
            if !fresh {
                polled.stuck += 1;
                continue;
            }
            let job = Job {
                uuid: Arc::clone(&uuid),
                groups,
                reply: reply.clone(),
            };
            if self.jobs.send(job).is_err() {
                self.busy
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&uuid);
                polled.failed += 1;
                continue;
            }
            queued += 1;
        }
        drop(reply);
        let until = tokio::time::Instant::now() + deadline;
        while queued > 0 {
            match tokio::time::timeout_at(until, replies.recv()).await {
                Ok(Some(Ok(Some(record)))) => polled.records.push(record),
                Ok(Some(Ok(None))) => {}
                Ok(Some(Err(_))) => polled.failed += 1,
                Ok(None) => break,
                Err(_) => {
                    polled.failed += queued;
                    break;
                }
            }
            queued = queued.saturating_sub(1);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::super::derive::testutil::record;
    use super::*;
    use crate::sources::libvirt::groups::Group;

    /// Answers every domain at once, except `frozen` while `frozen_now`.
    struct Fake {
        frozen: &'static str,
        frozen_now: AtomicBool,
    }

    impl DomainStats for Arc<Fake> {
        fn domain_stats(&mut self, uuid: &str, _: Groups) -> anyhow::Result<Option<DomainRecord>> {
            if uuid == self.frozen {
                while self.frozen_now.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(5));
                }
            }
            let mut r = record(&[("balloon.current", 1)], &[]);
            r.uuid = uuid.to_owned();
            Ok(Some(r))
        }
    }

    #[tokio::test]
    async fn a_frozen_domain_costs_only_its_own_stats() {
        let fake = Arc::new(Fake {
            frozen: "u-frozen",
            frozen_now: AtomicBool::new(true),
        });
        let shared = Arc::clone(&fake);
        let pool = MonitorPool::with_backends(Arc::new(move || Box::new(Arc::clone(&shared))));
        let groups: Groups = [Group::Balloon].into_iter().collect();
        let domains = || -> Vec<Arc<str>> {
            ["u-1", "u-frozen", "u-2", "u-3", "u-4", "u-5"]
                .into_iter()
                .map(Arc::from)
                .collect()
        };
        let deadline = Duration::from_millis(300);
        for tick in 0..3 {
            let polled = pool.poll(domains(), groups, deadline).await;
            let mut got: Vec<&str> = polled.records.iter().map(|r| r.uuid.as_str()).collect();
            got.sort_unstable();
            assert_eq!(got, ["u-1", "u-2", "u-3", "u-4", "u-5"], "tick {tick}");
            // The first tick waits for it; later ones skip it at once.
            assert_eq!(
                (polled.failed, polled.stuck),
                (usize::from(tick == 0), usize::from(tick > 0))
            );
        }
        fake.frozen_now.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let polled = pool.poll(domains(), groups, deadline).await;
        assert_eq!(polled.records.len(), 6, "back once it answers");
        assert_eq!((polled.failed, polled.stuck), (0, 0));
    }
}
