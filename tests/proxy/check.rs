//! Policy validation: every problem in a file is reported with its file,
//! line, field path and what is wrong, through the library and through
//! `weir check` (exit 0 for a good file, 1 otherwise); omitted fields get the
//! contract's defaults and `${NAME}` is expanded from the environment.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use weir::config::{Policy, Problem};

use crate::support::Scratch;

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

// --- the command line ---------------------------------------------------------

fn weir_check(path: &Path, env: &[(String, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["check", "--config"])
        .arg(path)
        .env_remove("WEIR_CONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("weir runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn weir_check_accepts_a_good_file_on_stdout_with_exit_0() {
    let dir = Scratch::new("good");
    let path = dir.write(
        "good.yaml",
        &with_upstreams("  a:\n    route: /a\n    url: http://127.0.0.1:8000\n  b:\n    route: /b\n    url: https://example.com/v1\n"),
    );
    let output = weir_check(&path, &[]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.contains(&path.display().to_string()),
        "stdout names the file: {stdout}"
    );
    assert!(stdout.contains("ok"), "{stdout}");
}

#[test]
fn weir_check_prints_every_problem_on_stderr_with_exit_1() {
    let dir = Scratch::new("bad");
    let yaml = with_upstreams(
        "  a:\n    route: /a\n    url: ftp://x\n\
         \x20 b:\n    route: /b\n    url: http://h\n    pool:\n      max_idl: 5\n\
         \x20 c:\n    route: /c\n    url: http://h\n    headers:\n      authorization: \"Bearer ${WEIR_TEST_SURELY_UNSET_VAR}\"\n",
    );
    let path = dir.write("bad.yaml", &yaml);
    let output = weir_check(&path, &[]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(
        output.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let file = path.display().to_string();
    for (field, needle, word) in [
        ("upstreams.a.url", "url: ftp://x", "ftp"),
        ("upstreams.b.pool.max_idl", "max_idl:", "unknown field"),
        (
            "upstreams.c.headers.authorization",
            "authorization:",
            "WEIR_TEST_SURELY_UNSET_VAR",
        ),
    ] {
        let expected = format!("{file}:{}: {field}: ", line(&yaml, needle));
        let shown = stderr
            .lines()
            .find(|l| l.starts_with(&expected))
            .unwrap_or_else(|| panic!("stderr lacks {expected:?}:\n{stderr}"));
        assert!(shown.contains(word), "{shown}");
    }
    assert!(!stdout.contains("ok"), "nothing claims success: {stdout}");
}

#[test]
fn weir_check_reports_invalid_yaml_with_its_line() {
    let dir = Scratch::new("syntax");
    let path = dir.write(
        "syntax.yaml",
        "upstreams:\n  x:\n    route: /x\n     url: http://h\n",
    );
    let output = weir_check(&path, &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!("{}:4: ", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("YAML"), "{stderr}");
}

#[test]
fn weir_check_reports_a_file_that_cannot_be_read() {
    let dir = Scratch::new("absent");
    let path = dir.0.join("absent.yaml");
    let output = weir_check(&path, &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("absent.yaml"), "{stderr}");
}

#[test]
fn weir_check_expands_variables_from_its_environment() {
    let dir = Scratch::new("env");
    let path = dir.write(
        "env.yaml",
        &with_upstreams("  x:\n    route: /x\n    url: http://h\n    headers:\n      authorization: \"Bearer ${WEIR_CHECK_CLI_KEY_9C1}\"\n"),
    );
    let output = weir_check(&path, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("WEIR_CHECK_CLI_KEY_9C1"));
    let output = weir_check(
        &path,
        &[("WEIR_CHECK_CLI_KEY_9C1".to_owned(), "sk".to_owned())],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
}

#[test]
fn weir_check_does_not_open_the_listeners() {
    // The policy's ports are taken; `check` must not care.
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = Scratch::new("sockets");
    let path = dir.write(
        "busy.yaml",
        &format!(
            "listen: {}\nadmin: {}\nupstreams:\n  x:\n    route: /x\n    url: http://h\n",
            listen.local_addr().unwrap(),
            admin.local_addr().unwrap()
        ),
    );
    let output = weir_check(&path, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
}

/// Every `${NAME}` in `text`, so a shipped policy can be checked without
/// real secrets.
fn variables(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        names.insert(after[..end].to_owned());
        rest = &after[end + 1..];
    }
    names
}

#[test]
fn every_policy_in_policies_passes_weir_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("policies/ exists")
        .map(|entry| entry.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no policy files in {}", dir.display());
    for file in files {
        let source = std::fs::read_to_string(&file).unwrap();
        let env: Vec<(String, String)> = variables(&source)
            .into_iter()
            .map(|name| (name, "test".to_owned()))
            .collect();
        let output = weir_check(&file, &env);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{} fails `weir check`:\n{}",
            file.display(),
            text(&output.stderr)
        );
    }
}
