//! The config file the Debian package installs as
//! `/etc/hyper-stats/hyper-stats.toml` (`collector/debian/hyper-stats.toml`)
//! against the agent's real loader: as shipped (all commented) it gives
//! the defaults; with every `#key = value` line uncommented it still gives
//! exactly the defaults (so no shown value is wrong); and it mentions every
//! key the loader accepts, found by asking the loader itself (its
//! unknown-key errors list the keys it knows), so a key added to the agent
//! without a line here fails this test.
//!
//! The file's convention: `#key = value` and `#[section]` are settings at
//! their default; `# key = value` (with a space) shows a key that has no
//! fixed default; other `# ` lines are prose.
//!
//! Needs nothing but the source tree: part of plain `cargo test`.

use hyper_stats::config::Config;

/// The shipped file.
const SHIPPED: &str = include_str!("../debian/hyper-stats.toml");

/// The shipped file with every default setting uncommented.
fn uncommented() -> String {
    SHIPPED
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest)
                if rest.starts_with('[') || rest.starts_with(|c: char| c.is_ascii_lowercase()) =>
            {
                rest
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The keys the loader accepts in `section` (`""` for the top level), from
/// the error it gives for an unknown one: "expected one of `a`, `b`" or,
/// for the interval table, "known groups: a, b".
fn accepted_keys(section: &str) -> Vec<String> {
    let text = match section {
        "" => "no_such_key = 1".to_owned(),
        "libvirt.intervals" => "[libvirt.intervals]\nno_such_key = \"1s\"".to_owned(),
        _ => format!("[{section}]\nno_such_key = 1"),
    };
    let err = format!("{:#}", Config::parse(&text).unwrap_err());
    if let Some((_, list)) = err.split_once("known groups: ") {
        return list
            .lines()
            .next()
            .unwrap()
            .split(", ")
            .map(str::to_owned)
            .collect();
    }
    // serde says "expected one of `a`, `b`", or "expected `a`" for one key.
    let (_, list) = err
        .split_once("expected one of ")
        .or_else(|| err.split_once("expected "))
        .unwrap_or_else(|| panic!("no key list in the error for [{section}]: {err}"));
    list.split(", ")
        .map(|k| {
            k.trim_matches(|c: char| c == '`' || c.is_whitespace())
                .to_owned()
        })
        .collect()
}

/// The `(section, key)` pairs the shipped file shows, as settings
/// (`#key =`) or as examples (`# key =`), and its `#[section]` headers.
fn shown_keys() -> Vec<(String, String)> {
    let mut section = String::new();
    let mut keys = Vec::new();
    for line in SHIPPED.lines() {
        if let Some(header) = line.strip_prefix("#[") {
            section = header.trim_end_matches(']').to_owned();
            let (parent, name) = section.rsplit_once('.').unwrap_or(("", &section));
            keys.push((parent.to_owned(), name.to_owned()));
            continue;
        }
        let body = line
            .strip_prefix("# ")
            .or_else(|| line.strip_prefix('#'))
            .unwrap_or("");
        if let Some((key, _)) = body.split_once(" = ")
            && !key.is_empty()
            && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            keys.push((section.clone(), key.to_owned()));
        }
    }
    keys
}

#[test]
fn shipped_file_parses_to_the_defaults() {
    let shipped = Config::parse(SHIPPED).expect("the shipped config parses");
    assert_eq!(shipped, Config::default());
}

#[test]
fn every_shown_default_is_the_default() {
    let text = uncommented();
    assert_ne!(text, SHIPPED, "the file shows settings to uncomment");
    let config = Config::parse(&text)
        .unwrap_or_else(|e| panic!("the uncommented config must parse: {e:#}\n{text}"));
    assert_eq!(
        config.describe(),
        Config::default().describe(),
        "a value shown in collector/debian/hyper-stats.toml is not the default"
    );
}

#[test]
fn every_key_the_agent_accepts_is_shown() {
    let shown = shown_keys();
    let mut sections = vec![String::new()];
    let mut checked = 0;
    while let Some(section) = sections.pop() {
        for key in accepted_keys(&section) {
            assert!(
                shown.contains(&(section.clone(), key.clone())),
                "key `{key}` of [{section}] is missing from collector/debian/hyper-stats.toml"
            );
            checked += 1;
            // Sections and sub-tables are asked for their own keys.
            let path = if section.is_empty() {
                key.clone()
            } else {
                format!("{section}.{key}")
            };
            if section.is_empty() || path == "libvirt.intervals" {
                sections.push(path);
            }
        }
    }
    assert!(checked > 20, "only {checked} keys found: {shown:?}");
}
