//! Writes the man pages of `hyper-stats` (`hyper-stats.1` and one
//! `hyper-stats-<command>.1` per command) into the directory given as the
//! only argument. `cargo xtask package` runs it; the pages come from the
//! same clap definitions as `--help`.

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os().nth(1).expect("usage: manpage OUT_DIR");
    clap_mangen::generate_to(hyper_stats::cli::command(), dir)
}
