//! Any spool line under any of 64 naming option sets: parsing never
//! panics; every point it gives has a path Carbon's plaintext protocol
//! can carry (not empty, no whitespace or control character, so its line
//! splits into exactly path, value and time), a finite value and the
//! line's one TIMET; a line Graphios's rules leave out gives nothing at all.
#![no_main]

use std::sync::OnceLock;

use clap::Parser;
use hyper_stats::graphios::Args;
use hyper_stats::graphios::line::parse_spool_line;
use libfuzzer_sys::fuzz_target;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

/// Every combination of the naming options: --use-service-desc,
/// --no-replace-hostname, --reverse-hostname, --base-path and four
/// replacement characters (one of them whitespace, one a dot).
fn variants() -> &'static [Args] {
    static VARIANTS: OnceLock<Vec<Args>> = OnceLock::new();
    VARIANTS.get_or_init(|| {
        let mut out = Vec::new();
        for bits in 0..16u8 {
            for replacement in ["_", "-", " ", "."] {
                let mut argv = vec!["graphios", "--spool", "/nonexistent"];
                if bits & 1 != 0 {
                    argv.push("--use-service-desc");
                }
                if bits & 2 != 0 {
                    argv.push("--no-replace-hostname");
                }
                if bits & 4 != 0 {
                    argv.push("--reverse-hostname");
                }
                if bits & 8 != 0 {
                    argv.extend(["--base-path", "dc1.nagios"]);
                }
                argv.extend(["--replacement-character", replacement]);
                out.push(Cli::parse_from(argv).args);
            }
        }
        out
    })
}

fuzz_target!(|data: (u8, &str)| {
    let (which, line) = data;
    let variants = variants();
    let args = &variants[usize::from(which) % variants.len()];
    let Ok(parsed) = parse_spool_line(line, args) else {
        return;
    };
    if parsed.not_for_graphite {
        assert!(parsed.metrics.is_empty() && parsed.bad_items.is_empty());
    }
    for m in &parsed.metrics {
        assert!(!m.path.is_empty(), "{line:?}");
        assert!(
            !m.path.chars().any(|c| c.is_whitespace() || c.is_control()),
            "{line:?} gave path {:?}",
            m.path
        );
        assert!(m.value.is_finite(), "{line:?} gave {}", m.value);
        let carbon = format!("{} {} {}\n", m.path, m.value, m.ts);
        assert_eq!(carbon.split(' ').count(), 3, "{carbon:?}");
        assert_eq!(carbon.matches('\n').count(), 1, "{carbon:?}");
    }
    if let Some(first) = parsed.metrics.first() {
        assert!(parsed.metrics.iter().all(|m| m.ts == first.ts), "{line:?}");
    }
});
