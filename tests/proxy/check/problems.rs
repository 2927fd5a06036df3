//! One problem at a time, each at its path and line; then every problem of
//! a file in one run.

use std::collections::BTreeSet;

use super::*;

// --- one problem at a time --------------------------------------------------

#[test]
fn an_unknown_field_is_reported_at_its_path_and_line() {
    let yaml = with_upstreams(
        "  x:\n    route: /x\n    url: http://127.0.0.1:8000\n    pool:\n      max_idle: 4\n      max_idl: 5\n",
    );
    let problem = the_problem(&yaml);
    assert_problem(
        &problem,
        "upstreams.x.pool.max_idl",
        line(&yaml, "max_idl:"),
        "unknown field",
    );
}

#[test]
fn an_unknown_top_level_field_is_reported() {
    let yaml = format!(
        "{}lisen: 127.0.0.1:1\n",
        with_upstreams("  x:\n    route: /x\n    url: http://h\n")
    );
    let problem = the_problem(&yaml);
    assert_problem(&problem, "lisen", line(&yaml, "lisen:"), "unknown field");
}

#[test]
fn a_duration_without_a_unit_is_rejected() {
    let yaml = with_upstreams(
        "  x:\n    route: /x\n    url: http://h\n    pool:\n      idle_timeout: 30\n",
    );
    let problem = the_problem(&yaml);
    assert_problem(
        &problem,
        "upstreams.x.pool.idle_timeout",
        line(&yaml, "idle_timeout:"),
        "unit",
    );
}

#[test]
fn a_duration_that_is_not_a_duration_is_rejected() {
    let yaml = with_upstreams(
        "  x:\n    route: /x\n    url: http://h\n    timeouts:\n      total: 10m\n      first_byte: soon\n",
    );
    let problem = the_problem(&yaml);
    assert_problem(
        &problem,
        "upstreams.x.timeouts.first_byte",
        line(&yaml, "first_byte:"),
        "duration",
    );
    assert!(problem.message.contains("soon"), "{problem:#?}");
}

#[test]
fn a_url_with_another_scheme_is_rejected() {
    let yaml = with_upstreams("  x:\n    route: /x\n    url: ftp://x\n");
    let problem = the_problem(&yaml);
    assert_problem(&problem, "upstreams.x.url", line(&yaml, "url:"), "scheme");
    assert!(problem.message.contains("ftp"), "{problem:#?}");
}

#[test]
fn a_url_without_a_scheme_is_rejected() {
    for url in ["api.openai.com", "localhost:8000", "/v1"] {
        let yaml = with_upstreams(&format!("  x:\n    route: /x\n    url: {url}\n"));
        let problem = the_problem(&yaml);
        assert_eq!(problem.path, "upstreams.x.url", "{url}: {problem:#?}");
        assert_eq!(
            problem.line,
            Some(line(&yaml, "url:")),
            "{url}: {problem:#?}"
        );
    }
    let yaml = with_upstreams("  x:\n    route: /x\n    url: api.openai.com\n");
    assert_problem(
        &the_problem(&yaml),
        "upstreams.x.url",
        line(&yaml, "url:"),
        "scheme",
    );
}

#[test]
fn the_same_route_on_two_upstreams_is_rejected() {
    let yaml = with_upstreams(
        "  a:\n    route: /a\n    url: http://h1\n  b:\n    route: /a/\n    url: http://h2\n",
    );
    let problem = the_problem(&yaml);
    assert_problem(
        &problem,
        "upstreams.b.route",
        line(&yaml, "route: /a/"),
        "route",
    );
    assert!(
        problem.message.contains("`a`"),
        "names the other upstream: {problem:#?}"
    );
}

#[test]
fn a_missing_environment_variable_is_named() {
    let yaml = with_upstreams(
        "  x:\n    route: /x\n    url: http://h\n    headers:\n      authorization: \"Bearer ${WEIR_TEST_SURELY_UNSET_VAR}\"\n",
    );
    // The process environment, as `weir check` and `weir` use it.
    let error = weir::config::parse(&yaml, "policy.yaml", &|name| std::env::var(name).ok())
        .expect_err("an unset variable is an error");
    assert_eq!(error.problems.len(), 1, "{error}");
    assert_problem(
        &error.problems[0],
        "upstreams.x.headers.authorization",
        line(&yaml, "authorization:"),
        "WEIR_TEST_SURELY_UNSET_VAR",
    );
}

#[test]
fn a_fallback_naming_no_upstream_is_rejected() {
    let yaml = with_upstreams("  x:\n    route: /x\n    url: http://h\n    fallback: nowhere\n");
    let problem = the_problem(&yaml);
    assert_problem(
        &problem,
        "upstreams.x.fallback",
        line(&yaml, "fallback:"),
        "nowhere",
    );
}

#[test]
fn a_fallback_cycle_is_rejected_once() {
    let yaml = with_upstreams(
        "  a:\n    route: /a\n    url: http://h1\n    fallback: b\n  b:\n    route: /b\n    url: http://h2\n    fallback: a\n",
    );
    let problem = the_problem(&yaml);
    assert_problem(
        &problem,
        "upstreams.a.fallback",
        line(&yaml, "fallback: b"),
        "cycle",
    );
    assert!(problem.message.contains("a -> b -> a"), "{problem:#?}");
}

#[test]
fn a_longer_fallback_cycle_is_rejected() {
    let yaml = with_upstreams(
        "  a:\n    route: /a\n    url: http://h\n    fallback: b\n  b:\n    route: /b\n    url: http://h\n    fallback: c\n  c:\n    route: /c\n    url: http://h\n    fallback: a\n",
    );
    let problem = the_problem(&yaml);
    assert!(problem.message.contains("cycle"), "{problem:#?}");
    assert!(problem.message.contains("a -> b -> c -> a"), "{problem:#?}");
}

#[test]
fn a_fallback_to_itself_is_rejected() {
    let yaml = with_upstreams("  x:\n    route: /x\n    url: http://h\n    fallback: x\n");
    let problem = the_problem(&yaml);
    assert_problem(
        &problem,
        "upstreams.x.fallback",
        line(&yaml, "fallback:"),
        "itself",
    );
}

#[test]
fn a_fallback_chain_without_a_cycle_is_accepted() {
    let yaml = with_upstreams(
        "  a:\n    route: /a\n    url: http://h\n    fallback: b\n  b:\n    route: /b\n    url: http://h\n    fallback: c\n  c:\n    route: /c\n    url: http://h\n",
    );
    let policy = parse(&yaml).expect("valid chain");
    assert_eq!(policy.upstreams["a"].fallback.as_deref(), Some("b"));
}

#[test]
fn invalid_yaml_is_reported_with_its_line() {
    let yaml = "listen: 127.0.0.1:8080\nupstreams:\n  x:\n    route: /x\n    url: [http://h\n    kind: openai\n";
    let problem = the_problem(yaml);
    assert_eq!(problem.path, "", "{problem:#?}");
    assert!(problem.message.contains("YAML"), "{problem:#?}");
    let at = problem.line.expect("the line of a syntax error is known");
    assert!(
        (5..=7).contains(&at),
        "line {at} is near the unclosed `[` on line 5: {problem:#?}"
    );

    // A key indented under nothing: the error is at that key's line.
    let yaml = "upstreams:\n  x:\n    route: /x\n     url: http://h\n";
    let problem = the_problem(yaml);
    assert_eq!(problem.path, "", "{problem:#?}");
    assert_eq!(problem.line, Some(4), "{problem:#?}");
}

#[test]
fn an_empty_file_is_rejected() {
    let problem = the_problem("# nothing here\n");
    assert!(problem.message.contains("empty"), "{problem:#?}");
}

#[test]
fn a_missing_url_is_rejected() {
    let yaml = with_upstreams("  x:\n    route: /x\n    kind: openai\n");
    let problem = the_problem(&yaml);
    assert!(
        problem.path == "upstreams.x" || problem.path == "upstreams.x.url",
        "{problem:#?}"
    );
    assert_eq!(problem.line, Some(line(&yaml, "  x:")), "{problem:#?}");
    assert!(
        problem.message.contains("missing field `url`"),
        "{problem:#?}"
    );
}

#[test]
fn a_retry_on_entry_that_is_not_a_status_is_rejected() {
    let yaml = with_upstreams(
        "  x:\n    route: /x\n    url: http://h\n    retry:\n      attempts: 2\n      on: [connect, 429, often]\n",
    );
    let problem = the_problem(&yaml);
    assert_problem(
        &problem,
        "upstreams.x.retry.on.2",
        line(&yaml, "on:"),
        "often",
    );

    let yaml = with_upstreams(
        "  x:\n    route: /x\n    url: http://h\n    retry:\n      on:\n        - timeout\n        - 700\n",
    );
    let problem = the_problem(&yaml);
    assert_eq!(problem.path, "upstreams.x.retry.on.1", "{problem:#?}");
    assert!(problem.message.contains("700"), "{problem:#?}");
    let at = problem.line.expect("line known");
    assert!(
        at == line(&yaml, "on:") || at == line(&yaml, "- 700"),
        "line {at} points at `on` or its bad entry: {problem:#?}"
    );
}

#[test]
fn a_failure_rate_above_one_is_rejected() {
    let yaml = with_upstreams(
        "  x:\n    route: /x\n    url: http://h\n    circuit_breaker:\n      failure_rate: 2\n",
    );
    let problem = the_problem(&yaml);
    assert_problem(
        &problem,
        "upstreams.x.circuit_breaker.failure_rate",
        line(&yaml, "failure_rate:"),
        "at most 1",
    );
}

#[test]
fn retry_attempts_out_of_range_are_rejected() {
    let yaml =
        with_upstreams("  x:\n    route: /x\n    url: http://h\n    retry:\n      attempts: 0\n");
    let problem = the_problem(&yaml);
    assert_problem(
        &problem,
        "upstreams.x.retry.attempts",
        line(&yaml, "attempts:"),
        "1",
    );
}

#[test]
fn missing_certificate_files_are_reported_at_their_field() {
    let yaml = format!(
        "listen: 127.0.0.1:8443\ntls:\n  cert: /nonexistent/weir/tls.crt\n  key: /nonexistent/weir/tls.key\n{}",
        "upstreams:\n  x:\n    route: /x\n    url: https://h\n    ca: /nonexistent/weir/ca.crt\n"
    );
    let found = problems(&yaml);
    let paths: BTreeSet<&str> = found.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        BTreeSet::from(["tls.cert", "tls.key", "upstreams.x.ca"]),
        "{found:#?}"
    );
    for p in &found {
        assert!(
            p.message.contains("/nonexistent/weir/"),
            "names the file: {p:#?}"
        );
    }
}

// --- every problem, not just the first ----------------------------------------

#[test]
fn a_file_with_three_problems_in_different_upstreams_reports_all_three() {
    let yaml = with_upstreams(
        "  a:\n    route: /a\n    url: http://h\n    retry:\n      attempts: 0\n\
         \x20 b:\n    route: /b\n    url: http://h\n    timeouts:\n      first_byte: soon\n\
         \x20 c:\n    route: /c\n    url: http://h\n    pool:\n      max_idl: 5\n",
    );
    let found = problems(&yaml);
    let got: Vec<(&str, Option<usize>)> = found.iter().map(|p| (p.path.as_str(), p.line)).collect();
    assert_eq!(
        got,
        vec![
            ("upstreams.a.retry.attempts", Some(line(&yaml, "attempts:"))),
            (
                "upstreams.b.timeouts.first_byte",
                Some(line(&yaml, "first_byte:"))
            ),
            ("upstreams.c.pool.max_idl", Some(line(&yaml, "max_idl:"))),
        ],
        "{found:#?}"
    );
}

#[test]
fn problems_in_different_blocks_of_one_upstream_are_all_reported() {
    let yaml = with_upstreams(
        "  x:\n    route: /x\n    url: ftp://x\n    pool:\n      idle_timeout: 30\n    circuit_breaker:\n      windw: 30s\n",
    );
    let found = problems(&yaml);
    let paths: BTreeSet<&str> = found.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        BTreeSet::from([
            "upstreams.x.url",
            "upstreams.x.pool.idle_timeout",
            "upstreams.x.circuit_breaker.windw",
        ]),
        "{found:#?}"
    );
}

#[test]
fn two_problems_in_the_same_block_are_both_reported() {
    let yaml = with_upstreams(
        "  x:\n    route: /x\n    url: http://h\n    timeouts:\n      first_byte: soon\n      idle: 30\n",
    );
    let found = problems(&yaml);
    let paths: BTreeSet<&str> = found.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        BTreeSet::from([
            "upstreams.x.timeouts.first_byte",
            "upstreams.x.timeouts.idle"
        ]),
        "{found:#?}"
    );
}

#[test]
fn problems_of_every_pass_are_reported_together() {
    // A missing variable (expansion), a bad value (types) and a fallback to
    // nowhere plus a duplicate route (cross-field rules), all at once.
    let yaml = with_upstreams(
        "  a:\n    route: /a\n    url: http://h\n    headers:\n      x-key: \"${WEIR_CHECK_NOT_SET}\"\n\
         \x20 b:\n    route: /b\n    url: http://h\n    circuit_breaker:\n      failure_rate: 2\n    fallback: ghost\n\
         \x20 c:\n    route: /b/\n    url: http://h\n",
    );
    let found = problems(&yaml);
    let paths: BTreeSet<&str> = found.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        BTreeSet::from([
            "upstreams.a.headers.x-key",
            "upstreams.b.circuit_breaker.failure_rate",
            "upstreams.b.fallback",
            "upstreams.c.route",
        ]),
        "{found:#?}"
    );
}
