//! `hyper-stats top`: the guests of this host, live, in a terminal, from
//! the agent's query socket.
//!
//! # What does this module do?
//! It is a client of the running agent, like `check_hyper_stats`: it
//! never talks to libvirt or the kernel itself, so it needs no privileges
//! beyond the query socket's group. Once a second it asks the agent for
//! the run-queue and on-CPU histograms and the libvirt gauges over the
//! chosen window (1, 5 or 15 minutes) and shows one row per guest, the
//! worst run-queue p99 on top; keys sort, filter and expand a guest into
//! its vCPUs.
//!
//! # Parts
//! - [`model`]: the table built from the answers, sorting, filtering
//!   (pure).
//! - [`app`]: the screen's state and what each key does (pure).
//! - [`view`]: number formats, columns fitted to the width, drawing
//!   (pure over a ratatui backend).
//! - [`fetch`]: the requests of one refresh and the thread repeating them.
//! - this file: the options, the terminal and the loop tying them.
//!
//! # When things fail
//! An agent that stops answering (stopped, restarted, socket removed)
//! leaves the last table on screen with a red line naming the socket and
//! the error; `top` asks again every second and carries on when the agent
//! is back. Only a terminal that cannot be set up or read ends it with an
//! error. The terminal is restored on every exit: `q`, Ctrl-C, an error,
//! a panic (ratatui's hook).

pub(crate) mod app;
pub(crate) mod fetch;
pub(crate) mod model;
pub(crate) mod view;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{self, Event, KeyEventKind};

use crate::config::{Config, Overrides};
use app::{Action, App, Window};
use fetch::Fetcher;
use model::{Column, Sort};

/// How long the loop waits for a key before looking for a new refresh:
/// short enough that a refresh shows within a tenth of a second of
/// arriving.
const INPUT_POLL: Duration = Duration::from_millis(100);

/// `hyper-stats top` options.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The agent's query socket [default: query.socket of the config
    /// file, else /run/hyper-stats/hyper-stats.sock].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// The window of every column (the `w` key changes it).
    #[arg(long, value_enum, default_value = "1m")]
    window: Window,
    /// The column to sort by, largest first (keys `s`/`S`, `r` reverses):
    /// name, vcpus, cpu, steal, rq-p50, rq-p99, rq-max, oncpu-p99,
    /// disk-rd, disk-wr, net-rx, net-tx, mem.
    #[arg(long, value_name = "COLUMN", default_value = "rq-p99", value_parser = parse_sort)]
    sort: Column,
}

/// `--sort`'s value.
fn parse_sort(text: &str) -> Result<Column, String> {
    Column::from_key(text).ok_or_else(|| {
        let keys: Vec<&str> = Column::ALL.iter().map(|c| c.key()).collect();
        format!(
            "unknown column {text:?}: expected one of {}",
            keys.join(", ")
        )
    })
}

/// The socket to ask: `--socket`, else the one the agent's config file
/// (`--config`, or the default file if it exists) makes it serve.
fn socket(args: &Args, config: Option<&Path>) -> Result<PathBuf> {
    if let Some(socket) = &args.socket {
        return Ok(socket.clone());
    }
    let config = Config::load(config, Overrides::default())
        .context("cannot tell where the agent's query socket is\ngive it with --socket PATH")?;
    Ok(config.query.socket)
}

/// Runs `top` until `q` or Ctrl-C.
pub fn run(args: &Args, config: Option<&Path>) -> Result<()> {
    let socket = socket(args, config)?;
    if !std::io::stdout().is_terminal() {
        bail!(
            "hyper-stats top needs a terminal on stdout\nfor scripts, ask the query socket ({}) with check_hyper_stats",
            socket.display()
        );
    }
    let sort = Sort {
        column: args.sort,
        reversed: false,
    };
    let app = App::new(socket.clone(), args.window, sort);
    let fetcher =
        Fetcher::spawn(socket, args.window.seconds()).context("failed to start a thread")?;
    let mut terminal = match ratatui::try_init() {
        Ok(t) => t,
        Err(e) => {
            ratatui::restore();
            return Err(e).context("failed to set up the terminal");
        }
    };
    let result = event_loop(&mut terminal, app, &fetcher);
    ratatui::restore();
    result
}

/// Draws, reads keys and takes refreshes until a key says quit.
fn event_loop(terminal: &mut DefaultTerminal, mut app: App, fetcher: &Fetcher) -> Result<()> {
    loop {
        // Every refresh that arrived since the last frame, in order: the
        // newest wins.
        while let Ok(result) = fetcher.results.try_recv() {
            app.update(result);
        }
        terminal
            .draw(|frame| view::draw(frame, &mut app))
            .context("failed to draw on the terminal")?;
        if !event::poll(INPUT_POLL).context("failed to read the terminal")? {
            continue;
        }
        // Resizes and other events need only the redraw above.
        if let Event::Key(key) = event::read().context("failed to read the terminal")? {
            if key.kind == KeyEventKind::Release {
                continue;
            }
            match app.key(key) {
                Action::Quit => return Ok(()),
                Action::Refetch => fetcher.refetch(app.window.seconds()),
                Action::Redraw => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `top`'s options as the binary parses them.
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        Cli::try_parse_from([&["top"], argv].concat()).map(|c| c.args)
    }

    #[test]
    fn options_and_their_defaults() {
        let a = parse(&[]).unwrap();
        assert_eq!(
            (a.window, a.sort, a.socket),
            (Window::M1, Column::RqP99, None)
        );
        let a = parse(&["--window", "15m", "--sort", "steal", "--socket", "/s"]).unwrap();
        assert_eq!(
            (a.window, a.sort, a.socket),
            (Window::M15, Column::Steal, Some(PathBuf::from("/s")))
        );
        let e = parse(&["--sort", "p99"]).unwrap_err().to_string();
        assert!(
            e.contains("unknown column \"p99\": expected one of name, vcpus, cpu"),
            "{e}"
        );
        assert!(parse(&["--window", "2m"]).is_err());
    }

    #[test]
    fn the_socket_comes_from_the_flag_then_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("hyper-stats.toml");
        std::fs::write(&config, "[query]\nsocket = \"/run/other/agent.sock\"\n").unwrap();
        let args = parse(&[]).unwrap();
        assert_eq!(
            socket(&args, Some(&config)).unwrap(),
            PathBuf::from("/run/other/agent.sock")
        );
        let args = parse(&["--socket", "/tmp/x.sock"]).unwrap();
        assert_eq!(
            socket(&args, Some(&config)).unwrap(),
            PathBuf::from("/tmp/x.sock")
        );
        // A config that names no socket: the protocol's default.
        std::fs::write(&config, "").unwrap();
        assert_eq!(
            socket(&parse(&[]).unwrap(), Some(&config)).unwrap(),
            PathBuf::from(hyper_stats_query::DEFAULT_SOCKET_PATH)
        );
        // A config that cannot be read: say how to go on.
        let e = socket(&parse(&[]).unwrap(), Some(&dir.path().join("none.toml"))).unwrap_err();
        assert!(
            format!("{e:#}").contains("give it with --socket PATH"),
            "{e:#}"
        );
    }
}
