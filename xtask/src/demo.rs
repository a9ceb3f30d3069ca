//! `cargo xtask demo`: from a fresh machine to live datapoints in one
//! command: setup, the lab with two guests, then the agent printing JSON
//! until Ctrl-C.

use std::process::Command;

use anyhow::Result;

use crate::util::{run, workspace_root};
use crate::{lab, setup};

pub fn run_demo() -> Result<()> {
    setup::run()?;
    lab::run(lab::Action::Up { guests: 2 })?;
    eprintln!(
        "Starting the agent against the lab; Ctrl-C stops it (the lab stays up: `cargo xtask lab down`)."
    );
    run(Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args([
            "run",
            "--release",
            "--package",
            "hyper-stats",
            "--",
            "run",
            "--output",
            "json",
        ]))
}
