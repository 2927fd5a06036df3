//! A hostile or careless policy file: a secret in the wrong field is never
//! printed, absurd nesting and size are refused before parsing, and long
//! fallback chains are checked in one pass.

use super::cli::{text, weir_check};
use super::*;
use crate::support::Scratch;

const SECRET: &str = "sk-live-0123456789abcdef";

fn with_secret(name: &str) -> Option<String> {
    (name == "API_KEY").then(|| SECRET.to_owned())
}

#[test]
fn a_secret_in_the_wrong_field_is_shown_as_its_variable() {
    let yaml = with_upstreams(
        "  a:\n    route: /a\n    url: ${API_KEY}\n  b:\n    route: /b\n    url: http://h\n    timeouts:\n      first_byte: ${API_KEY}\n    headers:\n      x-note: \"${API_KEY}\"\n",
    );
    let error = weir::config::parse(&yaml, "policy.yaml", &with_secret).unwrap_err();
    assert!(error.problems.len() >= 2, "{error}");
    let shown = error.to_string();
    assert!(!shown.contains(SECRET), "the secret is printed: {shown}");
    assert!(
        !shown.contains("0123456789"),
        "part of the secret is printed: {shown}"
    );
    assert!(
        shown.contains("${API_KEY}"),
        "the problem names the variable: {shown}"
    );
}

#[test]
fn weir_check_never_prints_the_secret() {
    let dir = Scratch::new("secret");
    let path = dir.write(
        "weir.yaml",
        &with_upstreams("  a:\n    route: /a\n    url: ${API_KEY}\n"),
    );
    let output = weir_check(&path, &[("API_KEY".to_owned(), SECRET.to_owned())]);
    assert_eq!(output.status.code(), Some(1));
    let printed = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(!printed.contains(SECRET), "{printed}");
    assert!(printed.contains("${API_KEY}"), "{printed}");
}

#[test]
fn absurd_nesting_is_refused_before_parsing() {
    let deep = format!(
        "upstreams:\n  a:\n    route: /a\n    url: http://h\n    headers: {}{}\n",
        "[".repeat(80_000),
        "]".repeat(80_000)
    );
    let problem = the_problem(&deep);
    assert!(problem.message.contains("nests"), "{problem:#?}");
    assert!(problem
        .message
        .contains(&weir::config::MAX_NESTING.to_string()));
}

#[test]
fn a_policy_over_ten_mib_is_refused() {
    let mut yaml = with_upstreams("  a:\n    route: /a\n    url: http://h\n");
    yaml.push_str(&format!(
        "# {}\n",
        "x".repeat(weir::config::MAX_POLICY_BYTES)
    ));
    let problem = the_problem(&yaml);
    assert!(problem.message.contains("at most"), "{problem:#?}");
    let dir = Scratch::new("huge");
    let path = dir.write("weir.yaml", &yaml);
    let error = weir::config::load_file(&path).unwrap_err();
    assert!(error.to_string().contains("at most"), "{error}");
}

fn chain(n: usize, closed: bool) -> String {
    let mut body = String::new();
    for i in 0..n {
        body.push_str(&format!("  u{i}:\n    route: /u{i}\n    url: http://h\n"));
        if i + 1 < n {
            body.push_str(&format!("    fallback: u{}\n", i + 1));
        } else if closed {
            body.push_str("    fallback: u0\n");
        }
    }
    with_upstreams(&body)
}

#[test]
fn a_fallback_chain_of_4000_upstreams_is_checked_and_a_cycle_reported_once() {
    let policy = parse(&chain(4000, false)).expect("a long chain without a cycle is valid");
    assert_eq!(policy.upstreams.len(), 4000);
    let problem = the_problem(&chain(4000, true));
    assert!(problem.message.contains("cycle"), "{problem:#?}");
    assert!(
        problem.message.len() < 300,
        "the cycle is summarised: {problem:#?}"
    );
}
