//! Writes the man page `check_hyper_stats.1` into the directory given as
//! the only argument. `cargo xtask package` runs it; the page comes from
//! the same clap definitions as `--help`.

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os().nth(1).expect("usage: manpage OUT_DIR");
    clap_mangen::generate_to(hyper_stats_nagios::cli::command(), dir)
}
