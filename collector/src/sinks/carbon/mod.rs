//! The Carbon sink: every datapoint, at full resolution, to Graphite, with
//! nothing lost while Carbon is away.
//!
//! # What it does
//! It receives the pipeline's batches, keeps the datapoints the operator
//! sends to Carbon (`carbon.families`, `carbon.per_vcpu`, see [`filter`]),
//! names each one's series
//! (`hyperstats.<host>.<domain>.<metric>` by default, see [`path`]),
//! floors its timestamp to the second and writes it to Carbon over TCP in
//! the plaintext line protocol or, optionally, the pickle protocol
//! ([`encoder`]). Each batch becomes one write.
//!
//! # What it owns
//! - A bounded in-memory queue ([`queue`]) of points waiting for Carbon,
//!   plus the points written in the last 30 s, which are written again if
//!   the connection breaks (Carbon stores one value per series and second,
//!   so a replay is harmless; a lost socket buffer is not).
//! - An optional disk spool ([`spool`]), size-limited, for outages longer
//!   than memory allows and for points queued when the agent stops.
//! - The connection ([`conn`]): connect with a deadline, notice a close at
//!   once, reconnect with capped exponential backoff.
//!
//! # When things fail
//! While Carbon is unreachable, points queue with their original
//! timestamps; after the reconnect they are sent oldest first (spool, then
//! memory). At the memory limit the oldest points go to the spool, or are
//! dropped if there is none; at the spool's limit its oldest segments are
//! deleted. Drops are counted and logged at most once a minute. A clean
//! shutdown writes and confirms what is queued, or spools it; the next
//! start sends the spool first. Sampling never waits for any of this: the
//! pipeline hands this sink its batches through a queue it never blocks on.
//!
//! # What it emits about itself
//! It registers the agent series `agent.carbon.sent_points`,
//! `dropped_points` and `reconnects` (counts), `queued_points`,
//! `inflight_points`, `spooled_points` and `connected` (gauges, set each
//! second) with [`crate::self_stats`], which reports them through the
//! pipeline like every agent series: to Carbon under
//! `<prefix>.<host>.agent.carbon.`, and to JSON. The Graphios forwarder
//! adds its own points with a [`Submission`] and
//! [`CarbonSink::agent_path`].

pub mod config;
pub(crate) mod conn;
pub mod encoder;
pub(crate) mod filter;
pub mod path;
pub(crate) mod queue;
pub(crate) mod sink;
pub(crate) mod spool;

#[cfg(test)]
mod tests;

use anyhow::Result;

pub(crate) use self::config::CarbonConfig;
pub use self::config::Protocol;
pub use self::encoder::CarbonPoint;
pub use self::filter::Filter;
pub(crate) use self::sink::Submission;
pub use self::sink::{CarbonSink, Settings};
use crate::self_stats::Registry;

/// The Carbon sink the `[carbon]` section asks for, its spool opened and
/// its series registered in `stats`; `None` if no address is configured.
pub(crate) fn build(config: &CarbonConfig, stats: &Registry) -> Result<Option<CarbonSink>> {
    match Settings::from_config(config, "carbon")? {
        Some(settings) => Ok(Some(CarbonSink::new(settings, stats)?)),
        None => Ok(None),
    }
}
