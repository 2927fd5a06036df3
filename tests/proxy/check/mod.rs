//! Policy validation: every problem in a file is reported with its file,
//! line, field path and what is wrong, through the library and through
//! `weir check` (exit 0 for a good file, 1 otherwise); omitted fields get the
//! contract's defaults and `${NAME}` is expanded from the environment.

mod cli;
mod hostile;
mod problems;

use std::time::Duration;

use weir::config::{Policy, Problem};

/// No environment variable is set, unless a test says otherwise.
fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(yaml: &str) -> Result<Policy, Vec<Problem>> {
    weir::config::parse(yaml, "policy.yaml", &no_env).map_err(|e| e.problems)
}

fn problems(yaml: &str) -> Vec<Problem> {
    match parse(yaml) {
        Ok(_) => panic!("policy accepted, but it is invalid:\n{yaml}"),
        Err(problems) => {
            assert!(!problems.is_empty(), "an error holds at least one problem");
            problems
        }
    }
}

/// The one problem `yaml` has; fails listing them all if there are more.
fn the_problem(yaml: &str) -> Problem {
    let mut found = problems(yaml);
    assert_eq!(
        found.len(),
        1,
        "expected exactly one problem, got {found:#?}"
    );
    found.remove(0)
}

/// The 1-based line of the first line of `yaml` containing `needle`.
fn line(yaml: &str, needle: &str) -> usize {
    yaml.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the policy"))
        + 1
}

/// Asserts the problem's path, line and that its message holds `word`.
#[track_caller]
fn assert_problem(problem: &Problem, path: &str, line: usize, word: &str) {
    assert_eq!(problem.path, path, "{problem:#?}");
    assert_eq!(problem.line, Some(line), "{problem:#?}");
    assert!(
        problem
            .message
            .to_lowercase()
            .contains(&word.to_lowercase()),
        "message should mention {word:?}: {problem:#?}"
    );
    assert_eq!(problem.file, "policy.yaml");
}

/// A policy file around an `upstreams:` body.
fn with_upstreams(body: &str) -> String {
    format!("listen: 127.0.0.1:8080\nadmin: 127.0.0.1:9901\nupstreams:\n{body}")
}

// --- defaults and expansion ---------------------------------------------------

#[test]
fn an_upstream_with_only_route_and_url_gets_the_contract_defaults() {
    let policy = parse(&with_upstreams(
        "  x:\n    route: /x\n    url: http://127.0.0.1:8000/v1\n",
    ))
    .expect("minimal policy is valid");
    let x = &policy.upstreams["x"];
    assert_eq!(x.name, "x");
    assert_eq!(x.url.base_path, "/v1");
    assert_eq!(x.retry.attempts, 3);
    assert_eq!(x.retry.backoff.base, Duration::from_millis(200));
    assert_eq!(x.retry.backoff.max, Duration::from_secs(10));
    assert!(x.retry.respect_retry_after);
    assert_eq!(x.pool.max_idle, 32);
    assert_eq!(x.pool.idle_timeout, Duration::from_secs(90));
    assert_eq!(x.pool.connect_timeout, Duration::from_secs(2));
    assert!(!x.pool.http2);
    assert_eq!(x.timeouts.first_byte, Duration::from_secs(60));
    assert_eq!(x.timeouts.idle, Duration::from_secs(30));
    assert_eq!(x.timeouts.total, Duration::from_secs(600));
    assert_eq!(x.circuit_breaker.consecutive_failures, 5);
    assert_eq!(x.circuit_breaker.failure_rate, 0.5);
    assert_eq!(x.circuit_breaker.min_requests, 20);
    assert_eq!(x.circuit_breaker.open_for, Duration::from_secs(30));
    assert_eq!(x.circuit_breaker.half_open_requests, 3);
    assert_eq!(x.concurrency.max_in_flight, 64);
    assert_eq!(x.concurrency.max_queue, 256);
    assert_eq!(x.concurrency.queue_timeout, Duration::from_secs(2));
    assert_eq!(x.accounting.tenant_header, "x-weir-tenant");
    assert!(x.accounting.inject_stream_usage);
    assert!(x.rate_limit.is_none() && x.fallback.is_none() && x.ca.is_none());
    assert!(x.headers.0.is_empty());
    assert!(policy.tls.is_none() && policy.usage_log.is_none());
    assert_eq!(policy.shutdown.drain_timeout, Duration::from_secs(30));
}

#[test]
fn a_variable_is_expanded_in_a_header_value() {
    let yaml = with_upstreams(
        "  x:\n    route: /x\n    url: http://h\n    headers:\n      authorization: \"Bearer ${WEIR_CHECK_TEST_KEY_7F3A}\"\n      x-org: \"${WEIR_CHECK_TEST_ORG_7F3A}-${WEIR_CHECK_TEST_ORG_7F3A}\"\n",
    );
    let env = |name: &str| match name {
        "WEIR_CHECK_TEST_KEY_7F3A" => Some("sk-test-123".to_owned()),
        "WEIR_CHECK_TEST_ORG_7F3A" => Some("org".to_owned()),
        _ => None,
    };
    let policy = weir::config::parse(&yaml, "policy.yaml", &env).expect("variables are set");
    let headers: Vec<(&str, &str)> = policy.upstreams["x"]
        .headers
        .0
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
        .collect();
    assert_eq!(
        headers,
        vec![
            ("authorization", "Bearer sk-test-123"),
            ("x-org", "org-org")
        ]
    );
}
