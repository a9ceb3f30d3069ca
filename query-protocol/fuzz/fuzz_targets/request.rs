//! Any bytes as a request line: parsing never panics; a request it
//! accepts is within the protocol's limits and valid, and its own line
//! (what the plugin sends) is one line that parses back to the same
//! request; a refusal is `too_large` exactly when the line is over
//! `MAX_REQUEST_BYTES`, and its error response is one line that reads
//! back to itself.
#![no_main]

use hyper_stats_query::{ErrorCode, MAX_REQUEST_BYTES, Response, parse_request};
use libfuzzer_sys::fuzz_target;

/// The text is one line ending in `\n`, with no other newline.
fn assert_one_line(line: &str) {
    let body = line.strip_suffix('\n').expect("ends in a newline");
    assert!(!body.contains('\n'), "{line:?}");
}

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(request) => {
            assert!(data.len() <= MAX_REQUEST_BYTES);
            request.validate().unwrap();
            let line = request.to_line();
            assert_one_line(&line);
            assert!(line.len() <= MAX_REQUEST_BYTES, "{line:?}");
            let back = parse_request(line.as_bytes())
                .unwrap_or_else(|e| panic!("{line:?} refused: {}", e.message));
            assert_eq!(back, request, "{line:?}");
        }
        Err(e) => {
            assert_eq!(
                e.code == ErrorCode::TooLarge,
                data.len() > MAX_REQUEST_BYTES,
                "{} bytes: {:?}",
                data.len(),
                e
            );
            assert!(!e.message.is_empty());
            let response = Response::error(e.code, e.message);
            let line = response.to_line();
            assert_one_line(&line);
            let back: Response = serde_json::from_str(&line).unwrap();
            assert_eq!(back, response);
        }
    }
});
