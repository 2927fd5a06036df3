//! The policy loader: any bytes, parsed and validated, never panic, and the
//! size and nesting guards hold (no problem list is empty).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| (name == "SECRET").then(|| "sk-fuzz-secret-value".to_owned());
    if let Err(error) = weir::config::parse(text, "fuzz.yaml", &env) {
        assert!(!error.problems.is_empty());
        let shown = error.to_string();
        assert!(
            !shown.contains("sk-fuzz-secret-value"),
            "a secret printed: {shown}"
        );
    }
});
