//! The Graphite snippets the package installs under
//! `/usr/share/doc/hyper-stats/examples/` (`collector/graphite/`) are the
//! ones the README shows: the README's `ini` blocks in its Graphite
//! section must be those files, less their leading comment lines, so the
//! two can never drift apart.
//!
//! Needs nothing but the source tree: part of plain `cargo test`.

/// The README's fenced `ini` blocks, in order.
fn readme_ini_blocks() -> Vec<String> {
    let readme = include_str!("../../README.md");
    readme
        .split("```ini\n")
        .skip(1)
        .map(|rest| rest.split_once("```").expect("a closed block").0.to_owned())
        .collect()
}

/// A snippet file without its leading `#` comment lines.
fn without_header(file: &str) -> String {
    file.lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn readme_shows_the_shipped_graphite_snippets() {
    let blocks = readme_ini_blocks();
    for (name, file) in [
        (
            "storage-schemas.conf",
            include_str!("../graphite/storage-schemas.conf"),
        ),
        (
            "storage-aggregation.conf",
            include_str!("../graphite/storage-aggregation.conf"),
        ),
    ] {
        assert!(file.starts_with("# hyper-stats"), "{name} has its header");
        let body = without_header(file);
        assert!(
            blocks.contains(&body),
            "collector/graphite/{name} differs from every ini block of README.md:\n{body}"
        );
    }
}
