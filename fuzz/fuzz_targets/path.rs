//! The path normaliser: never a panic; what it accepts starts with `/`,
//! holds no dot segment, no `//` and no encoded separator, and normalises
//! to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::wire::path::normalize;

fuzz_target!(|path: &str| {
    let Ok(n) = normalize(path) else { return };
    let out: &str = &n.path;
    assert!(out.starts_with('/'), "{path:?} -> {out:?}");
    assert!(!out.contains("//"), "{path:?} -> {out:?}");
    for segment in out.split('/') {
        let lower = segment.to_ascii_lowercase();
        assert!(
            !matches!(
                lower.as_str(),
                "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."
            ),
            "{path:?} -> {out:?}"
        );
    }
    let lower = out.to_ascii_lowercase();
    assert!(!lower.contains("%2f") && !lower.contains("%5c") && !out.contains('\\'));
    let again = normalize(out).expect("a normalised path is accepted");
    assert_eq!(&*again.path, out, "not idempotent: {path:?}");
});
