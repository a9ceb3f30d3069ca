//! A libvirt connection driven from async code: calls run on a dedicated
//! thread with a deadline, and the connection is reopened with backoff when
//! libvirtd dies or restarts.
//!
//! # What this module owns
//!
//! [`Conn`] owns one worker thread, which owns one backend (a
//! [`StatsBackend`]; in the agent an [`ffi::Connection`], in tests a fake)
//! and the factory that (re)creates it. [`Conn::poll`] sends one request
//! over a channel and awaits the reply for at most the deadline. It never
//! blocks the async runtime: libvirt calls, which may block for seconds,
//! happen only on the worker thread.
//!
//! # Connection states
//!
//! - *Connecting*: the first open is under way. A poll waits for it (within
//!   its deadline), so the agent's first tick is not lost to start-up.
//! - *Up*: polls are answered by the backend.
//! - *Down*: the connection was lost, or could not be opened. The worker
//!   retries the factory with exponential backoff ([`RECONNECT_BACKOFF_INITIAL`]
//!   doubling up to [`RECONNECT_BACKOFF_MAX`]), so the agent resumes within
//!   about a second of libvirtd being back. Polls return
//!   [`PollError::Disconnected`] at once, without touching the worker.
//!
//! Logging is per state change, never per tick: one `warn` when the
//! connection is lost ("Lost connection to libvirt; reconnecting.") or the
//! first open fails, one `info` when it is (re)established. Failed retries
//! log at `debug`.
//!
//! # When a call hangs
//!
//! A call that outlives its deadline makes that poll return
//! [`PollError::Timeout`]; the call itself keeps running on the worker (a
//! thread blocked in libvirt cannot be cancelled) and its late result is
//! dropped. Until it returns, later polls are *rejected at once* with
//! `Timeout` (carrying how long the call has been stuck) instead of queueing
//! behind it. Rejecting rather than piling new calls onto a struggling
//! libvirtd is what an operator wants: a stuck call usually waits on a busy
//! or wedged domain, and every new bulk call would wait on the same one.
//! Two libvirt mechanisms end most hangs on their own: keepalive (in
//! [`ffi`]) fails calls to a dead or stopped daemon within about 8 s, and
//! libvirt gives up waiting for a busy domain's job after 30 s.
//!
//! If a call is still stuck after `abandon_after` ([`STUCK_CALL_ABANDON_AFTER`]
//! by default), the next poll abandons that worker thread and starts a
//! fresh one with a fresh connection: this recovers from a wedged client
//! connection that keepalive did not catch. An abandoned thread exits, and
//! closes its connection, as soon as its call returns. At most
//! `max_abandoned` ([`MAX_ABANDONED_WORKERS`]) abandoned threads may be
//! alive at once; past that, polls keep being rejected (logged once at
//! `error`), so a call that never returns costs a bounded number of
//! threads and connections.
//!
//! # Shutdown
//!
//! Dropping the [`Conn`] closes the request channel; the worker exits (and
//! closes its connection) when its current call or wait ends. It is not
//! joined, since it may be stuck in libvirt.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use super::ffi::{self, LibvirtError};
use super::groups::Groups;
use super::params::DomainRecord;
use crate::backoff::Backoff;
use crate::episode::Episode;

/// First wait before retrying a failed open. Short, because a restarting
/// libvirtd usually accepts connections again within a fraction of a second.
pub(crate) const RECONNECT_BACKOFF_INITIAL: Duration = Duration::from_millis(100);

/// Longest wait between retries: caps how late the agent notices that
/// libvirtd is back (under 2 s including the open itself) while a dead
/// daemon costs at most one failed connect per second.
pub(crate) const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How long a call may stay stuck before its worker is abandoned for a
/// fresh one. Longer than libvirt's own ways of ending a hang (keepalive
/// after about 8 s, a busy domain's job wait after 30 s), so that this only
/// acts when those did not.
pub(crate) const STUCK_CALL_ABANDON_AFTER: Duration = Duration::from_secs(60);

/// Most abandoned (still stuck) worker threads alive at once; bounds the
/// threads and libvirt connections a call that never returns can cost.
pub(crate) const MAX_ABANDONED_WORKERS: usize = 2;

/// What the poller needs from a connection; the real one is
/// [`super::ffi::Connection`], tests use fakes.
pub(crate) trait StatsBackend: Send + 'static {
    /// Bulk stats of every active domain for `groups`. May block.
    fn all_domain_stats(&mut self, groups: Groups) -> anyhow::Result<Vec<DomainRecord>>;

    /// Whether `err`, returned by [`StatsBackend::all_domain_stats`], means
    /// the connection is gone and must be reopened. By default: a
    /// [`LibvirtError`] in the chain says so.
    fn is_connection_lost(&self, err: &anyhow::Error) -> bool {
        err.chain().any(|cause| {
            cause
                .downcast_ref::<LibvirtError>()
                .is_some_and(LibvirtError::is_connection_lost)
        })
    }
}

impl StatsBackend for ffi::Connection {
    fn all_domain_stats(&mut self, groups: Groups) -> anyhow::Result<Vec<DomainRecord>> {
        Ok(ffi::Connection::all_domain_stats(self, groups)?)
    }
}

/// Creates (or re-creates) the backend; called on the worker thread.
type Factory = Arc<dyn Fn() -> anyhow::Result<Box<dyn StatsBackend>> + Send + Sync>;

/// The result a poll gets back from the worker.
type Reply = Result<Vec<DomainRecord>, PollError>;

/// Settings of a [`Conn`]; [`ConnOptions::new`] gives the agent's defaults.
#[derive(Debug, Clone)]
pub(crate) struct ConnOptions {
    /// The libvirt URI, used to open the connection and in logs and errors.
    pub(crate) uri: String,
    /// How long one poll waits for its answer.
    pub(crate) deadline: Duration,
    /// First wait between reconnect attempts.
    pub(crate) backoff_initial: Duration,
    /// Cap of the doubling wait between reconnect attempts.
    pub(crate) backoff_max: Duration,
    /// How long a call may be stuck before its worker is replaced.
    pub(crate) abandon_after: Duration,
    /// Most abandoned workers alive at once.
    pub(crate) max_abandoned: usize,
}

impl ConnOptions {
    /// The defaults: the backoff and abandonment constants of this module.
    pub(crate) fn new(uri: &str, deadline: Duration) -> ConnOptions {
        ConnOptions {
            uri: uri.to_owned(),
            deadline,
            backoff_initial: RECONNECT_BACKOFF_INITIAL,
            backoff_max: RECONNECT_BACKOFF_MAX,
            abandon_after: STUCK_CALL_ABANDON_AFTER,
            max_abandoned: MAX_ABANDONED_WORKERS,
        }
    }
}

/// Handle to a connection running on its own thread.
pub struct Conn {
    /// Settings, shared with the workers.
    opts: Arc<ConnOptions>,
    /// Creates backends; shared with every worker this handle starts.
    factory: Factory,
    /// The current worker. Locked only briefly, never across an await.
    worker: Mutex<Worker>,
    /// Abandoned workers whose stuck call has not returned yet.
    abandoned_alive: Arc<AtomicUsize>,
    /// Whether hitting `max_abandoned` was logged since the last good poll,
    /// so that it is logged once per episode.
    cap_logged: AtomicBool,
}

/// Why a poll gave no records.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// Not connected; a reconnect is under way.
    #[error("not connected to {uri}: {reason}")]
    Disconnected { uri: String, reason: String },
    /// The call did not answer within the deadline (or a previous call has
    /// been stuck for this long and this poll was not attempted).
    #[error("libvirt call did not return within {0:?}")]
    Timeout(Duration),
    /// The call failed.
    #[error("{0}")]
    Failed(String),
}

impl Conn {
    /// Starts the connection thread for `uri`; connects lazily, never fails.
    pub fn spawn(uri: &str, deadline: Duration) -> Conn {
        let owned = uri.to_owned();
        Conn::with_backend(ConnOptions::new(uri, deadline), move || {
            Ok(ffi::Connection::open(&owned)?)
        })
    }

    /// Starts a connection thread whose backend `factory` creates, and
    /// re-creates after a lost connection; never fails. Tests pass fakes.
    pub(crate) fn with_backend<B, F>(opts: ConnOptions, factory: F) -> Conn
    where
        B: StatsBackend,
        F: Fn() -> anyhow::Result<B> + Send + Sync + 'static,
    {
        let factory: Factory =
            Arc::new(move || factory().map(|b| Box::new(b) as Box<dyn StatsBackend>));
        let opts = Arc::new(opts);
        let abandoned_alive = Arc::new(AtomicUsize::new(0));
        let worker = Worker::spawn(&opts, &factory, &abandoned_alive, false);
        Conn {
            opts,
            factory,
            worker: Mutex::new(worker),
            abandoned_alive,
            cap_logged: AtomicBool::new(false),
        }
    }

    /// Whether the connection is up right now (false while connecting,
    /// reconnecting, or after the first open failed).
    #[cfg(test)]
    pub(crate) fn is_connected(&self) -> bool {
        let worker = lock(&self.worker);
        matches!(lock(&worker.state).link, Link::Up)
    }

    /// One bulk-stats call with the deadline.
    pub async fn poll(&self, groups: Groups) -> Result<Vec<DomainRecord>, PollError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let sent_at = Instant::now();
        let state = self.submit(Request {
            groups,
            reply: reply_tx,
        })?;
        match tokio::time::timeout(self.opts.deadline, reply_rx).await {
            Ok(Ok(reply)) => {
                if reply.is_ok() {
                    self.cap_logged.store(false, Ordering::Relaxed);
                }
                reply
            }
            Ok(Err(_)) => Err(PollError::Failed(format!(
                "the libvirt worker thread for {} stopped before answering",
                self.opts.uri
            ))),
            Err(_) => {
                // Mark the worker stalled, so later polls do not queue
                // behind the call; only if it is still busy, or a reply that
                // raced the timeout would leave it marked forever.
                let mut st = lock(&state);
                if st.busy {
                    st.stalled_since.get_or_insert(sent_at);
                }
                Err(PollError::Timeout(self.opts.deadline))
            }
        }
    }

    /// Hands `req` to the worker, or answers it at once: disconnected,
    /// stuck, or a dead worker that cannot be restarted. Returns the state
    /// of the worker that took the request.
    fn submit(&self, req: Request) -> Result<Arc<Mutex<WorkerState>>, PollError> {
        let mut worker = lock(&self.worker);
        let stuck_for = {
            let st = lock(&worker.state);
            match (&st.link, st.stalled_since) {
                (Link::Down { reason }, _) => {
                    return Err(self.disconnected(reason.clone()));
                }
                (Link::Connecting, Some(since)) => {
                    return Err(
                        self.disconnected(format!("still connecting after {:?}", since.elapsed()))
                    );
                }
                (Link::Up, Some(since)) => Some(since.elapsed()),
                (_, None) => None,
            }
        };
        if let Some(stuck_for) = stuck_for
            && (stuck_for < self.opts.abandon_after || !self.abandon(&mut worker, stuck_for))
        {
            return Err(PollError::Timeout(stuck_for));
        }
        if let Err(mpsc::SendError(req)) = worker.tx.send(req) {
            // The worker thread is gone (it panicked, or could not start):
            // start another and give it the request.
            error!(
                message = "Libvirt worker thread died; starting a new one.",
                uri = %self.opts.uri,
            );
            *worker = Worker::spawn(&self.opts, &self.factory, &self.abandoned_alive, true);
            if worker.tx.send(req).is_err() {
                return Err(PollError::Failed(format!(
                    "cannot start a libvirt worker thread for {}",
                    self.opts.uri
                )));
            }
        }
        Ok(Arc::clone(&worker.state))
    }

    /// Replaces a worker whose call has been stuck for `stuck_for` with a
    /// fresh one, unless too many abandoned workers are still alive.
    fn abandon(&self, worker: &mut MutexGuard<'_, Worker>, stuck_for: Duration) -> bool {
        if self.abandoned_alive.load(Ordering::SeqCst) >= self.opts.max_abandoned {
            if !self.cap_logged.swap(true, Ordering::Relaxed) {
                error!(
                    message = "Libvirt call stuck and too many stuck threads already; waiting for it.",
                    uri = %self.opts.uri,
                    stuck_ms = duration_ms(stuck_for),
                    abandoned = self.opts.max_abandoned,
                );
            }
            return false;
        }
        {
            let mut st = lock(&worker.state);
            if st.stalled_since.is_none() {
                // The call returned in the meantime: nothing to abandon.
                return true;
            }
            st.abandoned = true;
        }
        self.abandoned_alive.fetch_add(1, Ordering::SeqCst);
        warn!(
            message = "Libvirt call stuck; abandoning its thread and opening a fresh connection.",
            uri = %self.opts.uri,
            stuck_ms = duration_ms(stuck_for),
        );
        **worker = Worker::spawn(&self.opts, &self.factory, &self.abandoned_alive, true);
        true
    }

    fn disconnected(&self, reason: String) -> PollError {
        PollError::Disconnected {
            uri: self.opts.uri.clone(),
            reason,
        }
    }
}

/// One poll's request to the worker.
struct Request {
    /// The groups to ask for.
    groups: Groups,
    /// Where the answer goes; closed if the poll gave up waiting.
    reply: oneshot::Sender<Reply>,
}

/// The async side's handle on one worker thread.
struct Worker {
    /// Requests to the worker; dropping it tells the worker to exit.
    tx: mpsc::Sender<Request>,
    /// State shared with the worker.
    state: Arc<Mutex<WorkerState>>,
}

/// What the async side needs to know about a worker without asking it.
struct WorkerState {
    /// The connection state, as the worker last set it.
    link: Link,
    /// Whether the worker is in a call or opening the connection.
    busy: bool,
    /// Set by a poll that gave up waiting while the worker was busy (the
    /// time that poll was sent); cleared by the worker when it is idle.
    stalled_since: Option<Instant>,
    /// Set when this worker was replaced; it exits after its current call.
    abandoned: bool,
}

/// Connection state, see the module doc.
enum Link {
    Connecting,
    Up,
    Down { reason: String },
}

impl Worker {
    /// Starts a worker thread. `reconnect` says whether an open is a
    /// reconnection, for the log wording.
    fn spawn(
        opts: &Arc<ConnOptions>,
        factory: &Factory,
        abandoned_alive: &Arc<AtomicUsize>,
        reconnect: bool,
    ) -> Worker {
        let (tx, rx) = mpsc::channel();
        let state = Arc::new(Mutex::new(WorkerState {
            link: Link::Connecting,
            busy: true,
            stalled_since: None,
            abandoned: false,
        }));
        let run = WorkerThread {
            opts: Arc::clone(opts),
            factory: Arc::clone(factory),
            state: Arc::clone(&state),
            rx,
            abandoned_alive: Arc::clone(abandoned_alive),
            reconnect,
        };
        // Log through the subscriber of whoever created the Conn (the global
        // one in the agent, a test's scoped one in tests).
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let spawned = thread::Builder::new()
            .name("libvirt-conn".into())
            .spawn(move || tracing::dispatcher::with_default(&dispatch, || run.run()));
        if let Err(e) = spawned {
            // The closure (and its receiver) is dropped: the next poll's send
            // fails and restarts the worker. Until then, report why.
            lock(&state).link = Link::Down {
                reason: format!("cannot start the libvirt worker thread: {e}"),
            };
        }
        Worker { tx, state }
    }
}

/// The worker thread's own data.
struct WorkerThread {
    opts: Arc<ConnOptions>,
    factory: Factory,
    state: Arc<Mutex<WorkerState>>,
    rx: mpsc::Receiver<Request>,
    abandoned_alive: Arc<AtomicUsize>,
    /// Whether the first open is a reconnection (a replacement worker).
    reconnect: bool,
}

impl WorkerThread {
    fn run(self) {
        let mut backend: Option<Box<dyn StatsBackend>> = None;
        // No jitter: one agent per host retries against its own libvirtd.
        let mut backoff = Backoff::new(self.opts.backoff_initial, self.opts.backoff_max, 0.0);
        let mut delay = backoff.next_delay();
        // The current outage, logged at warn when it starts.
        let mut outage = Episode::default();
        let mut down_since: Option<Instant> = None;
        let mut ever_up = self.reconnect;
        loop {
            let Some(conn) = backend.as_mut() else {
                // Not connected: try to open, then wait out the backoff.
                self.set_busy(true);
                match (self.factory)() {
                    Ok(b) => {
                        if self.is_abandoned() {
                            return;
                        }
                        backend = Some(b);
                        backoff.reset();
                        delay = backoff.next_delay();
                        if ever_up {
                            info!(
                                message = "Reconnected to libvirt.",
                                uri = %self.opts.uri,
                                down_ms = down_since.map(|t| duration_ms(t.elapsed())),
                            );
                        } else {
                            info!(message = "Connected to libvirt.", uri = %self.opts.uri);
                        }
                        ever_up = true;
                        outage.recover();
                        down_since = None;
                        self.set_link(Link::Up);
                        continue;
                    }
                    Err(e) => {
                        let reason = format!("{e:#}");
                        if outage.fail() {
                            warn!(
                                message = "Cannot connect to libvirt; retrying.",
                                uri = %self.opts.uri,
                                error = %reason,
                            );
                        } else {
                            debug!(
                                message = "Reconnect attempt failed.",
                                uri = %self.opts.uri,
                                error = %reason,
                                next_attempt_ms = duration_ms(delay),
                            );
                        }
                        down_since.get_or_insert_with(Instant::now);
                        self.set_link(Link::Down { reason });
                        if !self.wait_backoff(delay) {
                            return;
                        }
                        delay = backoff.next_delay();
                        continue;
                    }
                }
            };

            // Connected: serve one request.
            let Ok(req) = self.rx.recv() else {
                return; // the Conn is gone
            };
            if req.reply.is_closed() {
                continue; // its poll gave up while it was queued
            }
            self.set_busy(true);
            let reply = match conn.all_domain_stats(req.groups) {
                Ok(records) => Ok(records),
                Err(e) if conn.is_connection_lost(&e) => {
                    let reason = format!("{e:#}");
                    if !self.is_abandoned() {
                        warn!(
                            message = "Lost connection to libvirt; reconnecting.",
                            uri = %self.opts.uri,
                            error = %reason,
                        );
                    }
                    outage.fail();
                    down_since = Some(Instant::now());
                    backend = None; // closes it
                    self.set_link(Link::Down {
                        reason: reason.clone(),
                    });
                    Err(PollError::Disconnected {
                        uri: self.opts.uri.clone(),
                        reason,
                    })
                }
                Err(e) => Err(PollError::Failed(format!("{e:#}"))),
            };
            self.set_busy(false);
            let _ = req.reply.send(reply);
            if self.is_abandoned() {
                return;
            }
        }
    }

    /// Waits `backoff` while answering requests with `Disconnected`
    /// (normally none arrive: polls see the Down state first). Returns
    /// false if the worker must exit.
    fn wait_backoff(&self, backoff: Duration) -> bool {
        let until = Instant::now() + backoff;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(req) => {
                    let reason = match &lock(&self.state).link {
                        Link::Down { reason } => reason.clone(),
                        _ => "reconnecting".to_owned(),
                    };
                    let _ = req.reply.send(Err(PollError::Disconnected {
                        uri: self.opts.uri.clone(),
                        reason,
                    }));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return !self.is_abandoned(),
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    fn set_link(&self, link: Link) {
        let mut st = lock(&self.state);
        st.link = link;
        st.busy = false;
        st.stalled_since = None;
    }

    fn set_busy(&self, busy: bool) {
        let mut st = lock(&self.state);
        st.busy = busy;
        if !busy {
            st.stalled_since = None;
        }
    }

    fn is_abandoned(&self) -> bool {
        lock(&self.state).abandoned
    }
}

impl Drop for WorkerThread {
    fn drop(&mut self) {
        if lock(&self.state).abandoned {
            self.abandoned_alive.fetch_sub(1, Ordering::SeqCst);
            debug!(message = "Abandoned libvirt worker exited.", uri = %self.opts.uri);
        }
    }
}

/// Locks a mutex, ignoring poisoning: the guarded data stays consistent
/// (plain fields set in one step), and a panicked worker is restarted.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

    use tracing::Level;
    use tracing_subscriber::layer::{Context, SubscriberExt};

    use super::super::groups::Group;
    use super::super::params::Value;
    use super::*;

    // ---- log capture ----

    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<(Level, String)>>>);

    impl Logs {
        fn count(&self, level: Level, message: &str) -> usize {
            lock(&self.0)
                .iter()
                .filter(|(l, m)| *l == level && m == message)
                .count()
        }
        fn count_level(&self, level: Level) -> usize {
            lock(&self.0).iter().filter(|(l, _)| *l == level).count()
        }
    }

    struct MessageVisitor(String);

    impl tracing::field::Visit for MessageVisitor {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            if field.name() == "message" {
                value.clone_into(&mut self.0);
            }
        }
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Logs {
        fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
            let mut v = MessageVisitor(String::new());
            event.record(&mut v);
            lock(&self.0).push((*event.metadata().level(), v.0));
        }
    }

    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let sub = tracing_subscriber::registry().with(logs.clone());
        let guard = tracing::subscriber::set_default(sub);
        (logs, guard)
    }

    // ---- fakes ----

    fn record(name: &str) -> DomainRecord {
        DomainRecord::new(
            format!("{name}-uuid"),
            name.to_owned(),
            vec![("state.state".to_owned(), Value::Int(1))],
        )
    }

    fn state() -> Groups {
        Groups::from_iter([Group::State])
    }

    /// A backend whose behaviour the test switches through shared flags.
    #[derive(Clone, Default)]
    struct Switches {
        /// libvirtd is "down": calls fail as lost, opens fail.
        down: Arc<AtomicBool>,
        /// Calls fail, connection healthy.
        failing: Arc<AtomicBool>,
        /// Opens so far.
        opens: Arc<AtomicU32>,
        /// Backends dropped so far.
        closes: Arc<AtomicU32>,
    }

    struct Fake {
        sw: Switches,
        /// If set, each call first waits for a message (or the sender's
        /// drop) on this channel: a hang the test releases.
        hang: Option<Arc<Mutex<Receiver<()>>>>,
    }

    impl StatsBackend for Fake {
        fn all_domain_stats(&mut self, _groups: Groups) -> anyhow::Result<Vec<DomainRecord>> {
            if let Some(h) = &self.hang {
                let _ = lock(h).recv();
            }
            if self.sw.down.load(Ordering::SeqCst) {
                return Err(LibvirtError::lost("End of file while reading data").into());
            }
            if self.sw.failing.load(Ordering::SeqCst) {
                return Err(LibvirtError::new("Requested operation is not valid").into());
            }
            Ok(vec![record("vm1")])
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            self.sw.closes.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn opts(deadline_ms: u64) -> ConnOptions {
        ConnOptions {
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(80),
            ..ConnOptions::new("fake:///", Duration::from_millis(deadline_ms))
        }
    }

    fn fake_conn(opts: ConnOptions, sw: &Switches) -> Conn {
        let sw = sw.clone();
        Conn::with_backend(opts, move || {
            sw.opens.fetch_add(1, Ordering::SeqCst);
            if sw.down.load(Ordering::SeqCst) {
                anyhow::bail!("Failed to connect socket to '/run/libvirt/libvirt-sock-ro'");
            }
            Ok(Fake {
                sw: sw.clone(),
                hang: None,
            })
        })
    }

    /// Polls until `f` accepts the result or `within` passes.
    async fn poll_until(
        conn: &Conn,
        within: Duration,
        f: impl Fn(&Result<Vec<DomainRecord>, PollError>) -> bool,
    ) -> Result<Vec<DomainRecord>, PollError> {
        let start = Instant::now();
        loop {
            let r = conn.poll(state()).await;
            if f(&r) || start.elapsed() > within {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    // ---- tests ----

    #[test]
    fn poll_future_is_send_and_conn_is_sync() {
        fn assert_send<T: Send>(_: &T) {}
        fn assert_sync<T: Send + Sync>() {}
        assert_sync::<Conn>();
        let conn = fake_conn(opts(100), &Switches::default());
        let fut = conn.poll(state());
        assert_send(&fut);
    }

    #[tokio::test]
    async fn first_poll_waits_for_the_first_open() {
        let sw = Switches::default();
        let conn = fake_conn(opts(1000), &sw);
        let recs = conn.poll(state()).await.expect("first poll");
        assert_eq!(recs[0].name, "vm1");
        assert!(conn.is_connected());
    }

    #[tokio::test]
    async fn failed_call_on_healthy_connection_is_failed_not_disconnected() {
        let (logs, _g) = capture();
        let sw = Switches::default();
        let conn = fake_conn(opts(1000), &sw);
        conn.poll(state()).await.expect("ok");
        sw.failing.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            match conn.poll(state()).await {
                Err(PollError::Failed(m)) => assert_eq!(m, "Requested operation is not valid"),
                other => panic!("want Failed, got {other:?}"),
            }
        }
        assert_eq!(sw.opens.load(Ordering::SeqCst), 1, "no reconnect");
        assert_eq!(logs.count_level(Level::WARN), 0);
    }

    #[tokio::test]
    async fn lost_then_recovering_is_disconnected_then_ok_with_one_warn() {
        let (logs, _g) = capture();
        let sw = Switches::default();
        let conn = fake_conn(opts(1000), &sw);
        conn.poll(state()).await.expect("ok before the outage");

        sw.down.store(true, Ordering::SeqCst);
        match conn.poll(state()).await {
            Err(PollError::Disconnected { uri, reason }) => {
                assert_eq!(uri, "fake:///");
                assert_eq!(reason, "End of file while reading data");
            }
            other => panic!("want Disconnected, got {other:?}"),
        }
        // While down, many ticks: each answers at once, none logs.
        for _ in 0..20 {
            let t = Instant::now();
            let r = conn.poll(state()).await;
            assert!(matches!(r, Err(PollError::Disconnected { .. })), "{r:?}");
            assert!(t.elapsed() < Duration::from_millis(50), "{:?}", t.elapsed());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!conn.is_connected());
        let err = conn.poll(state()).await.unwrap_err().to_string();
        assert!(err.starts_with("not connected to fake:///: "), "{err}");

        sw.down.store(false, Ordering::SeqCst);
        let t = Instant::now();
        let r = poll_until(&conn, Duration::from_secs(2), |r| r.is_ok()).await;
        assert_eq!(r.expect("ok after recovery")[0].name, "vm1");
        // Backoff is capped at 80 ms here: back well within that plus slack.
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );

        assert_eq!(
            logs.count(Level::WARN, "Lost connection to libvirt; reconnecting."),
            1
        );
        assert_eq!(logs.count_level(Level::WARN), 1, "only one warn in all");
        assert_eq!(logs.count(Level::INFO, "Reconnected to libvirt."), 1);
        assert!(sw.opens.load(Ordering::SeqCst) >= 3, "retried while down");
        assert_eq!(
            sw.closes.load(Ordering::SeqCst),
            1,
            "the lost backend was closed"
        );
    }

    #[test]
    fn factory_failures_follow_the_backoff_schedule() {
        let times = Arc::new(Mutex::new(Vec::<Instant>::new()));
        let t2 = Arc::clone(&times);
        let opts = ConnOptions {
            backoff_initial: Duration::from_millis(40),
            backoff_max: Duration::from_millis(200),
            ..ConnOptions::new("fake:///", Duration::from_secs(1))
        };
        // Fails 6 times, then opens.
        let conn = Conn::with_backend(opts, move || {
            let mut t = lock(&t2);
            t.push(Instant::now());
            if t.len() <= 6 {
                anyhow::bail!("no daemon");
            }
            Ok(Fake {
                sw: Switches::default(),
                hang: None,
            })
        });
        let start = Instant::now();
        while !conn.is_connected() {
            assert!(start.elapsed() < Duration::from_secs(5), "never connected");
            thread::sleep(Duration::from_millis(5));
        }
        let t = lock(&times).clone();
        assert_eq!(t.len(), 7);
        let gaps: Vec<Duration> = t.windows(2).map(|w| w[1] - w[0]).collect();
        let want_ms = [40, 80, 160, 200, 200, 200];
        for (gap, want) in gaps.iter().zip(want_ms) {
            let want = Duration::from_millis(want);
            assert!(*gap >= want, "gaps {gaps:?}, want {want_ms:?}");
            // Generous upper slack: two shared cores, busy with builds.
            assert!(
                *gap < want + Duration::from_millis(150),
                "gaps {gaps:?}, want {want_ms:?}"
            );
        }
    }

    #[tokio::test]
    async fn first_open_failing_warns_once_then_connects() {
        let (logs, _g) = capture();
        let sw = Switches::default();
        sw.down.store(true, Ordering::SeqCst);
        let conn = fake_conn(opts(1000), &sw);
        let r = conn.poll(state()).await;
        assert!(matches!(r, Err(PollError::Disconnected { .. })), "{r:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        sw.down.store(false, Ordering::SeqCst);
        poll_until(&conn, Duration::from_secs(2), |r| r.is_ok())
            .await
            .expect("connects");
        assert_eq!(
            logs.count(Level::WARN, "Cannot connect to libvirt; retrying."),
            1
        );
        assert_eq!(logs.count_level(Level::WARN), 1);
        assert_eq!(logs.count(Level::INFO, "Connected to libvirt."), 1);
    }

    /// A conn whose backend hangs in each call until the test sends on (or
    /// drops) the returned sender.
    fn hanging_conn(opts: ConnOptions, sw: &Switches) -> (Conn, SyncSender<()>) {
        let (release, hang) = sync_channel::<()>(16);
        let hang = Arc::new(Mutex::new(hang));
        let sw = sw.clone();
        let conn = Conn::with_backend(opts, move || {
            let n = sw.opens.fetch_add(1, Ordering::SeqCst);
            Ok(Fake {
                sw: sw.clone(),
                // Only the first backend hangs; replacements answer.
                hang: (n == 0).then(|| Arc::clone(&hang)),
            })
        });
        (conn, release)
    }

    #[tokio::test]
    async fn hang_times_out_and_later_polls_do_not_queue_behind_it() {
        let sw = Switches::default();
        let (conn, release) = hanging_conn(opts(100), &sw);

        let t = Instant::now();
        let r = conn.poll(state()).await;
        assert!(
            matches!(r, Err(PollError::Timeout(d)) if d == Duration::from_millis(100)),
            "{r:?}"
        );
        assert!(
            t.elapsed() < Duration::from_millis(400),
            "{:?}",
            t.elapsed()
        );

        // The call is still stuck: the next poll answers at once.
        let t = Instant::now();
        let r = conn.poll(state()).await;
        assert!(matches!(r, Err(PollError::Timeout(_))), "{r:?}");
        assert!(t.elapsed() < Duration::from_millis(50), "{:?}", t.elapsed());
        let shown = r.unwrap_err().to_string();
        assert!(
            shown.starts_with("libvirt call did not return within"),
            "{shown}"
        );

        // Once the call returns, polls are answered again (by the same
        // connection: no reconnect for a slow call).
        // (This backend hangs in every call: one release per call.)
        for _ in 0..16 {
            release.send(()).unwrap();
        }
        let r = poll_until(&conn, Duration::from_secs(2), |r| r.is_ok()).await;
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(sw.opens.load(Ordering::SeqCst), 1);
        drop(release);
    }

    #[tokio::test]
    async fn stuck_call_is_abandoned_for_a_fresh_connection() {
        let (logs, _g) = capture();
        let sw = Switches::default();
        let opts = ConnOptions {
            abandon_after: Duration::from_millis(300),
            max_abandoned: 1,
            ..opts(100)
        };
        let (conn, release) = hanging_conn(opts, &sw);

        let r = conn.poll(state()).await;
        assert!(matches!(r, Err(PollError::Timeout(_))), "{r:?}");
        // Rejected at once until abandon_after.
        let r = conn.poll(state()).await;
        assert!(matches!(r, Err(PollError::Timeout(_))), "{r:?}");
        tokio::time::sleep(Duration::from_millis(350)).await;

        // Now the poll abandons the stuck worker and a fresh one answers.
        let r = conn.poll(state()).await;
        assert_eq!(r.expect("fresh worker answers")[0].name, "vm1");
        assert_eq!(sw.opens.load(Ordering::SeqCst), 2);
        assert_eq!(conn.abandoned_alive.load(Ordering::SeqCst), 1);
        assert_eq!(
            logs.count(
                Level::WARN,
                "Libvirt call stuck; abandoning its thread and opening a fresh connection."
            ),
            1
        );

        // The abandoned thread exits (closing its backend) once released.
        drop(release);
        let start = Instant::now();
        while conn.abandoned_alive.load(Ordering::SeqCst) != 0 {
            assert!(start.elapsed() < Duration::from_secs(2), "never exited");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(sw.closes.load(Ordering::SeqCst), 1);
        // Its late result went nowhere; the fresh worker keeps answering.
        conn.poll(state()).await.expect("still answering");
    }

    #[tokio::test]
    async fn abandoned_workers_are_capped() {
        let (logs, _g) = capture();
        let sw = Switches::default();
        let (release, hang) = sync_channel::<()>(16);
        let hang = Arc::new(Mutex::new(hang));
        let sw2 = sw.clone();
        // Every backend hangs: a call that never returns.
        let conn = Conn::with_backend(
            ConnOptions {
                abandon_after: Duration::from_millis(150),
                max_abandoned: 1,
                ..opts(50)
            },
            move || {
                sw2.opens.fetch_add(1, Ordering::SeqCst);
                Ok(Fake {
                    sw: sw2.clone(),
                    hang: Some(Arc::clone(&hang)),
                })
            },
        );
        for _ in 0..20 {
            let r = conn.poll(state()).await;
            assert!(matches!(r, Err(PollError::Timeout(_))), "{r:?}");
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        // One abandonment, then the cap holds: two backends in all.
        assert_eq!(sw.opens.load(Ordering::SeqCst), 2);
        assert_eq!(logs.count_level(Level::ERROR), 1, "cap logged once");
        drop(release);
    }

    #[tokio::test]
    async fn dropping_conn_stops_the_worker_and_closes_the_backend() {
        let sw = Switches::default();
        let conn = fake_conn(opts(1000), &sw);
        conn.poll(state()).await.expect("ok");
        drop(conn);
        let start = Instant::now();
        while sw.closes.load(Ordering::SeqCst) == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "backend not closed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn real_connection_backend_against_test_driver() {
        let conn = Conn::spawn("test:///default", Duration::from_secs(5));
        let recs = conn.poll(state()).await.expect("poll test:///default");
        let rec = recs.iter().find(|r| r.name == "test").expect("domain test");
        assert_eq!(rec.u64("state.state"), Some(1));
    }
}
