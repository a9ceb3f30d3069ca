//! The sink's task: takes batches (and submitted points), keeps them in
//! the queue and the spool, and writes them to Carbon whenever connected.
//!
//! One `select!` loop owns everything, so no locks: batches and
//! submissions are taken first (the pipeline must never wait on this sink),
//! then the once-a-second tick, then connection events, then writing.
//! Writing is bounded per turn ([`WRITE_MAX_POINTS`]) and in time
//! ([`WRITE_TIMEOUT`]), so a slow Carbon delays the next turn by at most
//! that, while the pipeline's queue for this sink holds a minute of
//! batches.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use super::config::{CarbonConfig, Protocol, split_address};
use super::conn::{self, Event, State};
use super::encoder::{CarbonPoint, Encoder};
use super::filter::Filter;
use super::path::{PathBuilder, Template, default_host};
use super::queue::Queue;
use super::spool::Spool;
use crate::backoff::Backoff;
use crate::episode::Episode;
use crate::sample::Batch;
use crate::self_stats::{Counter, Gauge, Registry};

/// Points encoded and written per turn of the loop: about 700 kB of
/// plaintext, a few ms of work, after which batches are looked at again.
pub(crate) const WRITE_MAX_POINTS: usize = 10_000;

/// A write that cannot complete in this long means a stuck connection
/// (a peer that stopped reading): it is dropped and its points replayed.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Written points stay replayable this long (see `queue`): twice the
/// connection's `TCP_USER_TIMEOUT`.
pub(crate) const REPLAY_WINDOW: Duration = Duration::from_secs(30);

/// How long a confirmation (half-close, wait for Carbon to close) may
/// take; Carbon answers in milliseconds unless it is overloaded.
pub(crate) const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// While Carbon is unreachable and a spool is configured, the backlog is
/// moved to disk this often, so an agent that crashes (rather than stops
/// cleanly) loses at most this much.
pub(crate) const SPILL_EVERY: Duration = Duration::from_secs(10);

/// How long a clean shutdown may spend writing what is queued before it
/// spools (or gives up on) the rest.
pub(crate) const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Dropped points are logged at most this often (with the count since the
/// last line).
pub(crate) const DROP_LOG_EVERY: Duration = Duration::from_secs(60);

/// Points submitted directly (not from the pipeline), with an optional ack
/// that fires once Carbon has confirmed them all.
#[derive(Debug)]
pub struct Submission {
    /// The points, oldest first.
    pub(crate) points: Vec<CarbonPoint>,
    /// Told when Carbon has them; dropped (the receiver sees an error) if
    /// they were dropped or spooled instead.
    pub(crate) ack: Option<oneshot::Sender<()>>,
}

/// Everything the sink needs besides its channels.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Names the sink in logs and its self-metrics
    /// (`<prefix>.<host>.agent.<name>.*`).
    pub name: &'static str,
    /// Carbon's host (name or address).
    pub host: String,
    /// Carbon's port.
    pub port: u16,
    /// The wire protocol.
    pub protocol: Protocol,
    /// The path template of domain series.
    pub template: Template,
    /// Paths' prefix.
    pub prefix: String,
    /// This node's path component.
    pub node: String,
    /// Points kept in memory before spooling or dropping the oldest.
    pub queue_points: usize,
    /// Spool directory and size limit, if any.
    pub spool: Option<(PathBuf, u64)>,
    /// How long written points stay replayable.
    pub replay_window: Duration,
    /// Which of the pipeline's datapoints go to Carbon (submitted points
    /// always go).
    pub filter: Filter,
}

impl Settings {
    /// Settings from the `[carbon]` section; `None` if it has no address.
    pub(crate) fn from_config(
        config: &CarbonConfig,
        name: &'static str,
    ) -> Result<Option<Settings>> {
        let Some(address) = &config.address else {
            return Ok(None);
        };
        config.validate()?;
        let (host, port) = split_address(address, config.protocol)
            .map_err(|e| anyhow::anyhow!("carbon.address = {address:?}: {e}"))?;
        let template = Template::parse(&config.path)
            .map_err(|e| anyhow::anyhow!("carbon.path = {:?}: {e}", config.path))?;
        Ok(Some(Settings {
            name,
            host,
            port,
            protocol: config.protocol,
            template,
            prefix: config.prefix.clone(),
            node: config.host.clone().unwrap_or_else(default_host),
            queue_points: config.queue_points,
            spool: config
                .spool_dir
                .clone()
                .map(|d| (d, config.spool_max_size.0)),
            replay_window: REPLAY_WINDOW,
            filter: config.filter()?,
        }))
    }
}

/// The sink's own series (`agent.<name>.*`) and the state of its logs.
#[derive(Debug)]
struct Stats {
    /// Points written.
    sent: Counter,
    /// Points dropped.
    dropped: Counter,
    /// Connections made after a lost one.
    reconnects: Counter,
    /// Points waiting in memory.
    queued: Gauge,
    /// Points written and kept for replay.
    inflight: Gauge,
    /// Points in the spool.
    spooled: Gauge,
    /// 1 while connected.
    connected: Gauge,
    /// Points dropped and not yet logged.
    dropped_unlogged: u64,
    /// When drops were last logged.
    drop_logged_at: Option<Instant>,
    /// Whether a connection was lost since the last connect, so the next
    /// connect counts as a reconnect.
    lost: bool,
    /// Carbon unreachable (logged when it starts).
    outage: Episode,
    /// Spool writes failing (logged when it starts).
    spool_error: Episode,
    /// The spool's disk full (logged when it starts and ends).
    spool_full: Episode,
}

impl Stats {
    /// The series of the sink `name`, registered in `registry`.
    fn new(registry: &Registry, name: &str) -> Stats {
        let series = |what: &str| format!("{name}.{what}");
        Stats {
            sent: registry.counter(&series("sent_points")),
            dropped: registry.counter(&series("dropped_points")),
            reconnects: registry.counter(&series("reconnects")),
            queued: registry.gauge(&series("queued_points")),
            inflight: registry.gauge(&series("inflight_points")),
            spooled: registry.gauge(&series("spooled_points")),
            connected: registry.gauge(&series("connected")),
            dropped_unlogged: 0,
            drop_logged_at: None,
            lost: false,
            outage: Episode::default(),
            spool_error: Episode::default(),
            spool_full: Episode::default(),
        }
    }
}

/// The Carbon sink.
pub struct CarbonSink {
    settings: Settings,
    paths: PathBuilder,
    encoder: Encoder,
    queue: Queue,
    spool: Option<Spool>,
    conn: State,
    backoff: Backoff,
    stats: Stats,
    /// Reused encoding buffer.
    buf: Vec<u8>,
    /// When the backlog was last moved to the spool.
    spilled_at: Instant,
}

impl CarbonSink {
    /// Whether datapoints named `metric` go to Carbon (`carbon.families`,
    /// `carbon.per_vcpu`).
    pub(crate) fn keeps_metric(&self, metric: &str) -> bool {
        self.settings.filter.keeps_metric(metric)
    }

    /// A sink with these settings, its series registered in `stats`;
    /// opens (and reads) the spool, so a spool directory that cannot be
    /// written is an error here, before sampling starts.
    pub fn new(settings: Settings, stats: &Registry) -> Result<CarbonSink> {
        let spool = match &settings.spool {
            Some((dir, max)) => {
                let spool = Spool::open(dir, *max)?;
                if spool.points() > 0 {
                    info!(
                        message = "Carbon spool holds points from before; sending them first.",
                        sink = settings.name,
                        points = spool.points(),
                        segments = spool.segments(),
                        dir = %dir.display(),
                    );
                }
                Some(spool)
            }
            None => None,
        };
        Ok(CarbonSink {
            paths: PathBuilder::new(settings.template.clone(), &settings.prefix, &settings.node),
            encoder: Encoder::new(settings.protocol),
            queue: Queue::new(),
            spool,
            conn: State::default(),
            backoff: conn::backoff(),
            stats: Stats::new(stats, settings.name),
            buf: Vec::with_capacity(1 << 20),
            spilled_at: Instant::now(),
            settings,
        })
    }

    /// The path of the agent metric `metric` (under
    /// `<prefix>.<host>.agent.`), for points submitted by other parts of
    /// the agent.
    pub(crate) fn agent_path(&self, metric: &str) -> Arc<str> {
        self.paths.agent_path(metric)
    }

    /// Runs until both inputs are closed (a `None` input counts as
    /// closed), then flushes or spools what is left.
    pub async fn run(
        mut self,
        mut batches: Option<mpsc::Receiver<Arc<Batch>>>,
        mut submissions: Option<mpsc::Receiver<Submission>>,
    ) -> Result<()> {
        let mut tick = tokio::time::interval_at(next_half_second(), Duration::from_secs(1));
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        while batches.is_some() || submissions.is_some() {
            let can_write = self.conn.is_connected() && self.has_unsent();
            let can_confirm = self.conn.is_connected() && self.queue.wants_confirm();
            tokio::select! {
                biased;
                batch = recv(&mut batches) => match batch {
                    Some(batch) => self.accept_batch(&batch),
                    None => batches = None,
                },
                sub = recv(&mut submissions) => match sub {
                    Some(sub) => self.accept_submission(sub),
                    None => submissions = None,
                },
                _ = tick.tick() => self.on_tick(),
                event = self.conn.event() => self.on_conn_event(event),
                _ = std::future::ready(()), if can_write => self.write_some().await,
                _ = std::future::ready(()), if can_confirm => { self.confirm(CONFIRM_TIMEOUT).await; }
            }
        }
        self.shutdown().await;
        Ok(())
    }

    /// Whether anything waits to be written.
    fn has_unsent(&self) -> bool {
        self.queue.backlog_len() > 0 || self.spool.as_ref().is_some_and(Spool::has_unsent)
    }

    /// Queues a batch's points under their paths.
    fn accept_batch(&mut self, batch: &Batch) {
        let now = std::time::Instant::now();
        // Filtered before naming: a series that never goes costs no path.
        let filter = self.settings.filter;
        for d in batch.iter().filter(|d| filter.keeps(d)) {
            let path = self.paths.path(d, now);
            if let Some(p) = CarbonPoint::from_datapoint(path, d) {
                self.queue.push(p);
            }
        }
        self.enforce_limit();
    }

    fn accept_submission(&mut self, sub: Submission) {
        self.queue.push_all(sub.points, sub.ack);
        self.enforce_limit();
    }

    /// Keeps the backlog within `queue_points`: the oldest go to the
    /// spool, or are dropped when there is none (or it fails).
    fn enforce_limit(&mut self) {
        let limit = self.settings.queue_points;
        let over = self.queue.backlog_len().saturating_sub(limit);
        if over == 0 {
            return;
        }
        if self.spool.is_some() {
            // Spill a tenth of the limit at once, not a few points per
            // batch: fewer, larger segments.
            self.spill((over + limit / 10).min(self.queue.backlog_len()));
        } else {
            let (dropped, segments) = self.queue.take_oldest(over);
            self.delete_segments(&segments);
            self.count_dropped(dropped.len() as u64);
        }
    }

    /// Moves the `n` oldest waiting points to the spool.
    fn spill(&mut self, n: usize) {
        let (points, segments) = self.queue.take_oldest(n);
        self.delete_segments(&segments);
        self.spilled_at = Instant::now();
        if points.is_empty() {
            return;
        }
        let Some(spool) = &mut self.spool else {
            self.count_dropped(points.len() as u64);
            return;
        };
        let (dropped, error) = match spool.write(&points) {
            Ok(dropped) => (dropped.points, None),
            Err(e) => (e.dropped_points(), Some(e)),
        };
        let dir = spool.dir().display().to_string();
        // A full disk is one episode however many spills it lasts: logged
        // when it starts and when a spill fits again.
        if spool.disk_full() {
            if self.stats.spool_full.fail() {
                warn!(
                    message = "The Carbon spool's disk is full; deleting the oldest segments to make room.",
                    sink = self.settings.name,
                    dir = %dir,
                );
            }
        } else if self.stats.spool_full.recover() {
            info!(message = "The Carbon spool's disk has room again.", sink = self.settings.name, dir = %dir);
        }
        match error {
            Some(ref e) if !spool.disk_full() => {
                if self.stats.spool_error.fail() {
                    warn!(
                        message = "Cannot write to the Carbon spool; dropping the points that would go there.",
                        sink = self.settings.name,
                        dir = %dir,
                        error = %e,
                    );
                }
            }
            _ => {
                if self.stats.spool_error.recover() {
                    info!(message = "Writing to the Carbon spool works again.", sink = self.settings.name, dir = %dir);
                }
                if error.is_none() {
                    debug!(
                        message = "Spooled points.",
                        sink = self.settings.name,
                        points = points.len()
                    );
                }
            }
        }
        // Every point that is neither on disk nor in memory any more:
        // the oldest segments deleted and whatever of this spill did not
        // fit.
        self.count_dropped(dropped);
    }

    fn delete_segments(&mut self, ids: &[u64]) {
        if let Some(spool) = &mut self.spool {
            for id in ids {
                spool.delete(*id);
            }
        }
    }

    /// Counts dropped points; logs at once if nothing was logged for a
    /// minute, else leaves it to the tick.
    fn count_dropped(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.stats.dropped.add(n);
        self.stats.dropped_unlogged += n;
        self.log_drops(Instant::now());
    }

    fn log_drops(&mut self, now: Instant) {
        let due = self
            .stats
            .drop_logged_at
            .is_none_or(|at| now.duration_since(at) >= DROP_LOG_EVERY);
        if self.stats.dropped_unlogged > 0 && due {
            warn!(
                message = "Carbon queue is full; dropped the oldest points.",
                sink = self.settings.name,
                dropped = self.stats.dropped_unlogged,
                queue_points = self.settings.queue_points,
                spool = self.spool.is_some(),
            );
            self.stats.dropped_unlogged = 0;
            self.stats.drop_logged_at = Some(now);
        }
    }

    /// Once a second: self-metrics, the replay window, spilling during an
    /// outage, the drop log.
    fn on_tick(&mut self) {
        let now = Instant::now();
        self.set_gauges();
        let safe = self.queue.age(now.into_std(), self.settings.replay_window);
        self.delete_segments(&safe);
        if self.spool.is_some()
            && !self.conn.is_connected()
            && self.queue.backlog_len() > 0
            && now.duration_since(self.spilled_at) >= SPILL_EVERY
        {
            self.spill(self.queue.backlog_len());
        }
        self.enforce_limit();
        self.log_drops(now);
        self.paths.sweep(now.into_std());
    }

    /// Sets this second's gauges.
    fn set_gauges(&mut self) {
        let spooled = self.spool.as_ref().map_or(0, Spool::points);
        self.stats.queued.set(self.queue.backlog_len() as u64);
        self.stats.inflight.set(self.queue.inflight_len() as u64);
        self.stats.spooled.set(spooled);
        self.stats
            .connected
            .set(u64::from(self.conn.is_connected()));
    }

    fn on_conn_event(&mut self, event: Event) {
        match event {
            Event::RetryDue => {
                self.conn = conn::start_connect(self.settings.host.clone(), self.settings.port);
            }
            Event::Connected(stream) => match conn::open(stream) {
                Ok(c) => {
                    if self.stats.lost {
                        self.stats.reconnects.add(1);
                        info!(
                            message = "Reconnected to Carbon; sending queued points, oldest first.",
                            sink = self.settings.name,
                            address = %c.peer,
                            queued = self.queue.backlog_len(),
                            spooled = self.spool.as_ref().map_or(0, Spool::points),
                        );
                    } else {
                        info!(message = "Connected to Carbon.", sink = self.settings.name, address = %c.peer);
                    }
                    self.stats.lost = false;
                    self.stats.outage.recover();
                    self.backoff.reset();
                    self.conn = State::Connected(c);
                }
                Err(e) => self.connection_lost(Some(e)),
            },
            Event::ConnectFailed(e) => {
                if self.stats.outage.fail() {
                    warn!(
                        message = "Cannot connect to Carbon; queueing points and retrying with backoff.",
                        sink = self.settings.name,
                        address = %format!("{}:{}", self.settings.host, self.settings.port),
                        error = %e,
                    );
                } else {
                    debug!(message = "Carbon connect attempt failed.", sink = self.settings.name, error = %e);
                }
                self.stats.lost = true;
                self.conn = State::Idle {
                    retry_at: Instant::now() + self.backoff.next_delay(),
                };
            }
            Event::Closed(e) => self.connection_lost(e),
        }
    }

    /// The connection broke: replay what was in flight, retry later.
    fn connection_lost(&mut self, error: Option<std::io::Error>) {
        let requeued = self.queue.requeue_inflight();
        if let Some(spool) = &mut self.spool {
            spool.rewind();
        }
        if self.stats.outage.fail() {
            let error = error.map_or_else(|| "closed by Carbon".to_owned(), |e| e.to_string());
            warn!(
                message = "Lost the connection to Carbon; queueing points and replaying the last ones sent.",
                sink = self.settings.name,
                replayed = requeued,
                error = %error,
            );
        }
        self.stats.lost = true;
        self.conn = State::Idle {
            retry_at: Instant::now() + self.backoff.next_delay(),
        };
    }

    /// Writes the next chunk, oldest first: spool segments before memory.
    async fn write_some(&mut self) {
        let now = std::time::Instant::now();
        self.buf.clear();
        let count;
        if let Some(spool) = self.spool.as_mut().filter(|s| s.has_unsent()) {
            match spool.next_unsent() {
                Some(Ok(segment)) => {
                    if segment.bad_lines > 0 {
                        warn!(
                            message = "Skipped damaged lines in a Carbon spool segment.",
                            sink = self.settings.name,
                            segment = segment.id,
                            lines = segment.bad_lines,
                        );
                    }
                    self.encoder.encode(&segment.points, &mut self.buf);
                    count = segment.points.len();
                    self.queue.segment_written(segment.id, now);
                }
                Some(Err((points, e))) => {
                    warn!(message = "Dropped an unreadable Carbon spool segment.", sink = self.settings.name, error = %format!("{e:#}"));
                    self.count_dropped(points);
                    return;
                }
                None => return,
            }
        } else {
            let points = self.queue.take_for_write(WRITE_MAX_POINTS, now);
            count = points.len();
            self.encoder.encode(points, &mut self.buf);
        }
        let State::Connected(c) = &mut self.conn else {
            // Not reachable (only called when connected); keep the points.
            self.connection_lost(None);
            return;
        };
        match tokio::time::timeout(WRITE_TIMEOUT, c.writer.write_all(&self.buf)).await {
            Ok(Ok(())) => self.stats.sent.add(count as u64),
            Ok(Err(e)) => self.connection_lost(Some(e)),
            Err(_) => self.connection_lost(Some(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("a write did not complete within {WRITE_TIMEOUT:?}"),
            ))),
        }
    }

    /// Asks Carbon to confirm everything written: half-close, then wait
    /// until Carbon closes its side, which it does after processing all
    /// it received. Then in-flight points are safe and acks fire; the next
    /// connection is made at once.
    async fn confirm(&mut self, timeout: Duration) -> bool {
        let State::Connected(mut c) = std::mem::take(&mut self.conn) else {
            return false;
        };
        let result = tokio::time::timeout(timeout, async {
            c.writer.shutdown().await?;
            let mut buf = [0u8; 512];
            loop {
                if c.reader.read(&mut buf).await? == 0 {
                    return Ok::<(), std::io::Error>(());
                }
            }
        })
        .await;
        match result {
            Ok(Ok(())) => {
                let safe = self.queue.confirm_all();
                self.delete_segments(&safe);
                debug!(
                    message = "Carbon confirmed the points written.",
                    sink = self.settings.name
                );
                true
            }
            Ok(Err(e)) => {
                self.connection_lost(Some(e));
                false
            }
            Err(_) => {
                self.connection_lost(Some(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("Carbon did not confirm within {timeout:?}"),
                )));
                false
            }
        }
    }

    /// Clean shutdown: write what is queued (if Carbon is there and the
    /// spool has nothing older), confirm it, and spool whatever is not
    /// confirmed. Without a spool, what cannot be confirmed is lost and
    /// logged.
    async fn shutdown(mut self) {
        let deadline = Instant::now() + SHUTDOWN_FLUSH_TIMEOUT;
        // Connect if not connected: Carbon may be back while we waited.
        if !self.conn.is_connected() {
            self.conn = conn::start_connect(self.settings.host.clone(), self.settings.port);
            if let Ok(event) = tokio::time::timeout_at(deadline, self.conn.event()).await {
                self.on_conn_event(event);
            }
            if !self.conn.is_connected() {
                self.conn = State::default();
            }
        }
        let spool_pending = self.spool.as_ref().is_some_and(Spool::has_unsent);
        if self.conn.is_connected() && !spool_pending {
            while self.conn.is_connected()
                && self.queue.backlog_len() > 0
                && Instant::now() < deadline
            {
                self.write_some().await;
            }
        }
        if self.conn.is_connected() && self.queue.has_inflight() {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1));
            self.confirm(left).await;
        }
        self.queue.requeue_inflight();
        let left = self.queue.backlog_len();
        if left > 0 {
            if self.spool.is_some() {
                self.spill(left);
                info!(
                    message = "Spooled queued Carbon points at shutdown.",
                    sink = self.settings.name,
                    points = left
                );
            } else {
                warn!(
                    message = "Carbon points queued at shutdown are lost (no spool configured).",
                    sink = self.settings.name,
                    points = left,
                );
            }
        }
        self.stats.drop_logged_at = None;
        self.log_drops(Instant::now());
    }
}

/// Receives from an optional channel; never completes for `None`.
async fn recv<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next instant half a second past a whole wall-clock second, so a
/// once-a-second tick never lands twice in the same second (the
/// self-metrics' timestamps are floored).
fn next_half_second() -> Instant {
    let now = crate::clock::since_epoch(SystemTime::now());
    let into_second = Duration::from_nanos(u64::from(now.subsec_nanos()));
    let half = Duration::from_millis(500);
    let wait = if into_second < half {
        half - into_second
    } else {
        Duration::from_secs(1) + half - into_second
    };
    Instant::now() + wait
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Datapoint;
    use crate::sinks::carbon::config::DEFAULT_PATH;

    fn settings(queue_points: usize, spool: Option<PathBuf>) -> Settings {
        Settings {
            name: "carbon",
            host: "127.0.0.1".into(),
            port: 9,
            protocol: Protocol::Plaintext,
            template: Template::parse(DEFAULT_PATH).unwrap(),
            prefix: "hyperstats".into(),
            node: "n1".into(),
            queue_points,
            spool: spool.map(|d| (d, 1 << 30)),
            replay_window: REPLAY_WINDOW,
            filter: Filter::ALL,
        }
    }

    fn batch(first: usize, n: usize) -> Batch {
        (first..first + n)
            .map(|i| Datapoint {
                ts: i as f64,
                uuid: "u".into(),
                domain: "d".into(),
                metric: "m".into(),
                value: i as f64,
            })
            .collect()
    }

    #[tokio::test]
    async fn without_spool_the_oldest_are_dropped_and_counted() {
        let mut sink = CarbonSink::new(settings(100, None), &Registry::default()).unwrap();
        sink.accept_batch(&batch(0, 60));
        sink.accept_batch(&batch(60, 60));
        sink.accept_batch(&batch(120, 130));
        assert_eq!(sink.queue.backlog_len(), 100);
        assert_eq!(sink.stats.dropped.get(), 150);
        // Logged once (at the first drop); the rest waits for the minute.
        assert_eq!(sink.stats.dropped_unlogged, 130);
        let oldest = sink.queue.take_for_write(1, std::time::Instant::now())[0].ts;
        assert_eq!(oldest, 150);
        // Non-finite values never become points.
        let mut nan = batch(0, 1);
        nan[0].value = f64::NAN;
        sink.accept_batch(&nan);
        assert_eq!(sink.queue.backlog_len(), 99);
    }

    #[tokio::test]
    async fn with_a_spool_the_oldest_are_spilled_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = CarbonSink::new(
            settings(100, Some(dir.path().to_path_buf())),
            &Registry::default(),
        )
        .unwrap();
        sink.accept_batch(&batch(0, 250));
        // Over by 150, plus a tenth of the limit: 160 spilled at once.
        let spool = sink.spool.as_ref().unwrap();
        assert_eq!(spool.points(), 160);
        assert_eq!(sink.queue.backlog_len(), 90);
        assert_eq!(sink.stats.dropped.get(), 0);
        // The spool is sent before memory.
        assert!(sink.has_unsent());
    }
}
