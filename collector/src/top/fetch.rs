//! Asking the agent, once a second, on a thread of its own: the requests
//! of one refresh ([`ask`]) and the thread that repeats them ([`Fetcher`]).
//!
//! One refresh is a `list`, the two latency histograms per vCPU (when the
//! agent has them) and the gauges of [`GAUGES`], all over the window the
//! screen shows, each request on its own connection through the protocol
//! crate's client with a deadline. Its outcome (a [`Snapshot`] or the
//! first error, as a sentence) goes to the terminal loop over a channel;
//! the loop never waits for the agent, so keys work while it is slow or
//! gone. An agent that does not answer is asked again at the next second,
//! for as long as `top` runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use hyper_stats_query::client;
use hyper_stats_query::{ErrorCode, GaugeQuery, HistogramQuery, Outcome, Query, Request};

use super::model::{Answers, GAUGES, ONCPU, ONCPU_PERCENTILES, RUNQ, RUNQ_PERCENTILES, Snapshot};

/// How often the screen's numbers are asked for: the agent's own
/// resolution (its polls and eBPF reads are once a second).
pub(crate) const REFRESH: Duration = Duration::from_secs(1);

/// The longest one request may take. The agent answers in about a
/// millisecond; one that takes 2 s is stuck, and saying so beats a
/// frozen screen.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends one request; the agent's error answers become `Err` too, except
/// "unknown metric", which is `Ok(None)`: no guest has such a series
/// (no disks, probes off), an empty column rather than an error.
fn request(socket: &Path, query: Query) -> Result<Option<Outcome>, String> {
    let response =
        client::query(socket, &Request::new(query), REQUEST_TIMEOUT).map_err(|e| e.to_string())?;
    match response.outcome {
        Outcome::Error(e) if e.code == ErrorCode::UnknownMetric => Ok(None),
        Outcome::Error(e) => Err(format!("the agent refused the query: {}", e.message)),
        other => Ok(Some(other)),
    }
}

/// The error for an answer of the wrong kind (not our agent, or a bug).
fn unexpected(what: &str, outcome: &Outcome) -> String {
    format!("the agent answered a {what} request with something else: {outcome:?}")
}

/// One refresh: every request for `window_s`.
pub(crate) fn ask(socket: &Path, window_s: u32) -> Result<Answers, String> {
    let list = match request(socket, Query::List)? {
        Some(Outcome::List(list)) => list,
        Some(other) => return Err(unexpected("list", &other)),
        None => return Err("the agent does not know the list request".into()),
    };
    let histogram = |metric: &str, percentiles: &[f64]| -> Result<_, String> {
        if !list.histograms.iter().any(|h| h == metric) {
            return Ok(None);
        }
        let query = Query::Histogram(HistogramQuery {
            metric: metric.into(),
            window_s,
            percentiles: percentiles.to_vec(),
            per_vcpu: true,
        });
        match request(socket, query)? {
            Some(Outcome::Histogram(h)) => Ok(Some(h)),
            Some(other) => Err(unexpected("histogram", &other)),
            None => Ok(None),
        }
    };
    let runq = histogram(RUNQ, &RUNQ_PERCENTILES)?;
    let oncpu = histogram(ONCPU, &ONCPU_PERCENTILES)?;
    let mut gauges = BTreeMap::new();
    for (pattern, ..) in GAUGES {
        let query = Query::Gauge(GaugeQuery {
            metric: pattern.into(),
            window_s,
        });
        match request(socket, query)? {
            Some(Outcome::Gauge(g)) => {
                gauges.insert(pattern.to_owned(), g);
            }
            Some(other) => return Err(unexpected("gauge", &other)),
            None => {}
        }
    }
    Ok(Answers {
        window_s,
        list,
        runq,
        oncpu,
        gauges,
    })
}

/// The refresh thread's handle: its results, and how to make it ask
/// again at once for another window. Dropping it ends the thread at its
/// next refresh.
pub(crate) struct Fetcher {
    /// The window the next refresh asks for, in seconds.
    window_s: Arc<AtomicU32>,
    /// Wakes the thread before its second is up (a window change).
    wake: Sender<()>,
    /// Each refresh's outcome, in order.
    pub(crate) results: Receiver<Result<Snapshot, String>>,
}

impl Fetcher {
    /// Starts refreshing from `socket` over `window_s`, now and then every
    /// [`REFRESH`].
    pub(crate) fn spawn(socket: PathBuf, window_s: u32) -> std::io::Result<Fetcher> {
        let window = Arc::new(AtomicU32::new(window_s));
        let (wake, woken) = mpsc::channel();
        let (tx, results) = mpsc::channel();
        let shared = Arc::clone(&window);
        std::thread::Builder::new()
            .name("top-fetch".into())
            .spawn(move || {
                loop {
                    let started = Instant::now();
                    let w = shared.load(Ordering::Relaxed);
                    let result = ask(&socket, w).map(|a| Snapshot::build(&a));
                    if tx.send(result).is_err() {
                        return;
                    }
                    let left = REFRESH.saturating_sub(started.elapsed());
                    if let Err(RecvTimeoutError::Disconnected) = woken.recv_timeout(left) {
                        return;
                    }
                }
            })?;
        Ok(Fetcher {
            window_s: window,
            wake,
            results,
        })
    }

    /// Asks again now, over `window_s`.
    pub(crate) fn refetch(&self, window_s: u32) {
        self.window_s.store(window_s, Ordering::Relaxed);
        // The thread may be gone only if `top` is quitting.
        let _ = self.wake.send(());
    }
}
