//! Any text as the config file: loading it never panics (TOML, every
//! section's validation, the range checks), and a config it accepts
//! prints its effective settings (`check-config`) without panicking;
//! a refusal says why.
#![no_main]

use hyper_stats::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match Config::parse(text) {
        Ok(config) => {
            let described = config.describe();
            assert!(described.starts_with("config OK\n"), "{described}");
        }
        Err(e) => assert!(!format!("{e:#}").is_empty()),
    }
});
