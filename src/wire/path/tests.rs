use proptest::prelude::*;

use super::*;

fn ok(path: &str) -> String {
    normalize(path)
        .unwrap_or_else(|e| panic!("{path:?} refused: {e}"))
        .path
        .into_owned()
}

#[test]
fn a_clean_path_is_borrowed_as_it_is() {
    for path in [
        "/",
        "/v1/chat/completions",
        "/v1/",
        "/a.b/c..d/.e/f.",
        "/%41%2E1",
    ] {
        let n = normalize(path).unwrap();
        assert!(matches!(n.path, Cow::Borrowed(p) if p == path), "{path}");
        assert_eq!(n.lowest, None);
    }
}

#[test]
fn dot_segments_are_removed() {
    assert_eq!(ok("/v1/./chat/completions"), "/v1/chat/completions");
    assert_eq!(ok("/v1/x/../chat"), "/v1/chat");
    assert_eq!(ok("/v1/x/.."), "/v1/");
    assert_eq!(ok("/v1/."), "/v1/");
    assert_eq!(ok("/."), "/");
    assert_eq!(ok("/a/.."), "/");
}

#[test]
fn encoded_dots_are_dots() {
    assert_eq!(ok("/v1/%2e/chat"), "/v1/chat");
    assert_eq!(ok("/v1/x/%2e%2e/chat"), "/v1/chat");
    assert_eq!(ok("/v1/x/%2E%2e/chat"), "/v1/chat");
    assert_eq!(ok("/v1/x/.%2e/chat"), "/v1/chat");
    assert_eq!(ok("/v1/x/%2e./chat"), "/v1/chat");
    // Not a dot segment: left alone, encoding included.
    assert_eq!(ok("/v1/%2e%2e%2e/chat"), "/v1/%2e%2e%2e/chat");
}

#[test]
fn repeated_slashes_are_merged() {
    assert_eq!(ok("//v1//chat///completions"), "/v1/chat/completions");
    assert_eq!(ok("/v1//"), "/v1/");
    assert_eq!(ok("//"), "/");
}

#[test]
fn climbing_above_the_root_is_refused() {
    for path in [
        "/..",
        "/../admin",
        "/v1/../../admin",
        "/v1/%2e%2e/%2e%2e/admin",
        "/v1/.%2E/%2e./admin",
    ] {
        assert_eq!(normalize(path), Err(PathError::AboveRoot), "{path}");
    }
}

#[test]
fn hidden_separators_are_refused() {
    for path in [
        "/v1/..%2f..%2fadmin",
        "/v1/..%2F..%2Fadmin",
        "/v1/..%5cadmin",
        "/v1/..%5Cadmin",
        "/v1/..\\admin",
        "/v1/a%2fb",
    ] {
        assert_eq!(normalize(path), Err(PathError::HiddenSeparator), "{path}");
    }
    // `%25` is a percent sign: `%252f` is not a separator.
    assert_eq!(ok("/v1/a%252fb"), "/v1/a%252fb");
}

#[test]
fn a_path_that_is_not_absolute_is_refused() {
    for path in ["", "*", "v1/chat", "http://x/"] {
        assert_eq!(normalize(path), Err(PathError::NotAbsolute), "{path:?}");
    }
}

#[test]
fn lowest_tells_how_far_a_dot_dot_went() {
    let n = normalize("/v1/../internal/x").unwrap();
    assert_eq!(n.path, "/internal/x");
    assert_eq!(n.lowest, Some(0));
    assert!(n.climbs_above(1), "left /v1 for /internal");
    let n = normalize("/internal/a/b/../../x").unwrap();
    assert_eq!(n.lowest, Some(1));
    assert!(!n.climbs_above(1), "stayed inside /internal");
    assert!(n.climbs_above(2));
    assert!(!normalize("/v1/./x").unwrap().climbs_above(5));
}

/// Segments a client could send: plain, dots, encoded dots, empty.
fn segment_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9_~-]{1,6}",
        2 => Just(".".to_owned()),
        2 => Just("..".to_owned()),
        1 => Just("%2e".to_owned()),
        1 => Just("%2E%2e".to_owned()),
        1 => Just(".%2e".to_owned()),
        1 => Just("".to_owned()),
        1 => "[a-z.]{1,4}",
    ]
}

fn path_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(segment_strategy(), 0..10).prop_map(|segs| format!("/{}", segs.join("/")))
}

proptest! {
    #[test]
    fn never_above_the_root_and_never_a_dot_segment(path in path_strategy()) {
        if let Ok(n) = normalize(&path) {
            prop_assert!(n.path.starts_with('/'));
            prop_assert!(!n.path.contains("//"), "{}", n.path);
            for s in n.path.split('/') {
                prop_assert!(matches!(segment(s), Segment::Plain | Segment::Empty), "{}", n.path);
            }
        }
    }

    #[test]
    fn idempotent(path in path_strategy()) {
        if let Ok(n) = normalize(&path) {
            let again = normalize(&n.path).expect("a normalised path is accepted");
            prop_assert_eq!(&again.path, &n.path);
            prop_assert!(matches!(again.path, Cow::Borrowed(_)));
            prop_assert_eq!(again.lowest, None);
        }
    }

    /// On paths without empty segments that stay below the root, weir reads
    /// the path as a WHATWG URL parser (the `url` crate) does.
    #[test]
    fn agrees_with_the_url_crate(path in path_strategy()) {
        prop_assume!(!path[1..].split('/').any(str::is_empty) || path == "/");
        if let Ok(n) = normalize(&path) {
            let url = url::Url::parse(&format!("http://h{path}")).unwrap();
            prop_assert_eq!(&*n.path, url.path(), "{}", path);
        }
    }

    /// A `..` above the root is what the url crate clamps; weir refuses it.
    #[test]
    fn refuses_only_what_climbs_above_the_root(path in path_strategy()) {
        let mut depth: i64 = 0;
        let mut above = false;
        for s in path[1..].split('/') {
            match segment(s) {
                Segment::DotDot => { depth -= 1; above |= depth < 0; }
                Segment::Plain => depth += 1,
                _ => {}
            }
        }
        prop_assert_eq!(normalize(&path).is_err(), above, "{}", path);
    }
}
