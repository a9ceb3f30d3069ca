//! `check_hyper_stats`: prints the plugin's output on stdout (never
//! stderr) and exits 0 OK, 1 WARNING, 2 CRITICAL or 3 UNKNOWN.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let (text, code) = hyper_stats_nagios::cli::run(std::env::args_os());
    let mut stdout = std::io::stdout().lock();
    // Nagios reads stdout only; if it went away there is no one to tell.
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
    ExitCode::from(code)
}
