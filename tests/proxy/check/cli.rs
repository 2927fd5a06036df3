//! `weir check` as a user runs it: exit codes, stdout and stderr, and every
//! shipped policy passing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{line, with_upstreams};
use crate::support::Scratch;

// --- the command line ---------------------------------------------------------

/// `weir check --config path` with `env` added to its environment.
pub(super) fn weir_check(path: &Path, env: &[(String, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["check", "--config"])
        .arg(path)
        .env_remove("WEIR_CONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("weir runs")
}

pub(super) fn text(bytes: &[u8]) -> String {
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
