//! The JSON usage parser: any body, never a panic, never a count above the
//! believable maximum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::usage::json::{parse_json, MAX_TOKENS_PER_ANSWER};

fuzz_target!(|data: &[u8]| {
    let (_, usage) = parse_json(data);
    if let Some(u) = usage {
        assert!(u.prompt <= MAX_TOKENS_PER_ANSWER && u.completion <= MAX_TOKENS_PER_ANSWER);
        assert!(u.cached <= u.prompt && u.reasoning <= u.completion);
    }
});
