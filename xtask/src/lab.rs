//! `cargo xtask lab`. OWNER: lab helper.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum Action {
    /// Start libvirtd and N guests.
    Up {
        /// Number of guests (1-8).
        #[arg(long, default_value_t = 2)]
        guests: u32,
    },
    /// Remove the guests and stop the daemons the lab started.
    Down,
    /// Show the daemons and guests.
    Status,
}

pub fn run(action: Action) -> anyhow::Result<()> {
    let _ = action;
    anyhow::bail!("not implemented yet")
}
