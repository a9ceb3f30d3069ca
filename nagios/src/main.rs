//! `check_hyper_stats`: the Nagios plugin over the agent's query socket.
//!
//! Until the query socket exists this plugin only reports UNKNOWN, with
//! exit code 3, as the plugin guidelines require for any state it cannot
//! judge.

use std::process::ExitCode;

/// Nagios plugin exit code for UNKNOWN.
const UNKNOWN: u8 = 3;

fn main() -> ExitCode {
    println!("HYPER-STATS UNKNOWN - the agent's query socket is not implemented yet");
    ExitCode::from(UNKNOWN)
}
