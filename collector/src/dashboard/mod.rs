//! `hyper-stats dashboard`: a browser dashboard over graphite-web, served
//! from the agent's binary.
//!
//! # What it does
//! It serves a single-page app (the `dashboard/` folder of the repository,
//! embedded at build time, see [`assets`]) and forwards the page's Graphite
//! queries to one graphite-web under its own origin, since graphite-web
//! sends no CORS headers (see [`proxy`]). Only graphite-web's `/render`
//! and `/metrics/find` are forwarded, with bounded request sizes and a
//! deadline: the dashboard is never an open proxy. A graphite-web with
//! `CLUSTER_SERVERS` works unchanged: it fans the queries out itself.
//!
//! # What it owns
//! A listening socket (`--listen`, loopback by default) and one HTTP
//! client to graphite-web. It keeps no state between requests: the page's
//! URL holds the whole view.
//!
//! # When things fail
//! A graphite-web that is down or slow answers the page with 502 or 504
//! and a one-line reason the page shows; the server goes on. Failing to
//! bind the listening address stops the command with that error.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};

pub(crate) mod assets;
pub(crate) mod proxy;
mod server;

/// Command-line arguments of `hyper-stats dashboard`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Base URL of graphite-web (plain http), e.g. `http://graphite:8080`.
    /// Its `/render` and `/metrics/find` are forwarded; nothing else.
    #[arg(long, value_name = "URL")]
    pub graphite: String,
    /// Address to serve the dashboard on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// The first component of the agents' Carbon paths (`carbon.prefix`).
    #[arg(long, default_value = "hyperstats")]
    pub prefix: String,
    /// How long graphite-web may take to answer one query.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub graphite_timeout: Duration,
}

/// Runs the dashboard until SIGINT or SIGTERM.
pub fn run(args: &Args) -> Result<()> {
    let upstream = proxy::Upstream::parse(&args.graphite, args.graphite_timeout)?;
    if !proxy::valid_prefix(&args.prefix) {
        anyhow::bail!(
            "invalid --prefix {:?}: expected letters, digits, `_` or `-`",
            args.prefix
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(async {
        let listener = server::bind(args.listen).await?;
        server::serve(listener, upstream, args.prefix.clone()).await
    })
}
