//! The policy file: YAML in, a validated [`Policy`] out, or every problem
//! found, each with file, line, field path and what is wrong.
//!
//! Loading runs in three passes so that one mistake does not hide the next:
//! the YAML syntax, then `${VAR}` expansion and the typed structs (each
//! upstream and each block on its own), then the rules that span fields
//! (routes, fallbacks, ranges, files).

mod expand;
mod locate;
mod shape;
mod typed;
mod types;
mod validate;
pub mod values;
pub mod watch;

use std::fmt;
use std::path::Path;

pub use shape::{MAX_NESTING, MAX_POLICY_BYTES};
pub use types::*;
pub use values::{HeaderList, RetryOn, Scheme, UpstreamUrl};

/// One thing wrong with a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: Option<usize>,
    /// Dotted field path, e.g. `upstreams.openai.retry.attempts`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a policy file; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "{n} problem{} in policy", if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl PolicyError {
    /// One problem of the file as a whole.
    pub fn single(file: &str, message: String) -> Self {
        Self {
            problems: vec![Problem {
                file: file.to_owned(),
                line: None,
                path: String::new(),
                message,
            }],
        }
    }
}

/// Reads and validates a policy file. Blocking: call it from
/// `spawn_blocking` or before the runtime starts.
pub fn load_file(path: &Path) -> Result<Policy, PolicyError> {
    let file = path.display().to_string();
    let cannot =
        |e: std::io::Error| PolicyError::single(&file, format!("cannot read the policy file: {e}"));
    let size = std::fs::metadata(path).map_err(cannot)?.len();
    if size > MAX_POLICY_BYTES as u64 {
        return Err(PolicyError::single(
            &file,
            format!("the policy file is {size} bytes; at most {MAX_POLICY_BYTES} are read"),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(cannot)?;
    parse(&text, &file, &|name| std::env::var(name).ok())
}

/// Validates policy text; `env` resolves `${NAME}`. Certificate and CA files
/// named in the policy are read (relative paths from the working directory).
///
/// Problems quote the file as written: a `${NAME}` value that lands in a
/// message (a secret in the wrong field) is shown as `${NAME}`, never as the
/// value. A file over [`MAX_POLICY_BYTES`] or nested deeper than
/// [`MAX_NESTING`] is refused before it is parsed, so checking takes time
/// linear in the file.
pub fn parse(
    text: &str,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Policy, PolicyError> {
    if let Some(message) = shape::too_big(text) {
        return Err(PolicyError::single(file, message));
    }
    let expanded = std::cell::RefCell::new(Vec::new());
    let recording = |name: &str| {
        let value = env(name);
        if let Some(v) = &value {
            expanded.borrow_mut().push((name.to_owned(), v.clone()));
        }
        value
    };
    let mut problems = validate::Problems::new(file, text);
    let policy = validate::policy(text, &recording, &mut problems);
    match (policy, problems.into_vec()) {
        (Some(policy), problems) if problems.is_empty() => Ok(policy),
        (_, mut problems) => {
            let expanded = expanded.into_inner();
            for problem in &mut problems {
                problem.message = shape::redact(&problem.message, &expanded);
            }
            Err(PolicyError { problems })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<Problem> {
        parse(yaml, "p.yaml", &|_| None).unwrap_err().problems
    }

    fn paths(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.path.as_str()).collect()
    }

    #[test]
    fn a_typo_hides_no_other_problem_of_the_file() {
        let found = problems(
            "\
upstreams:
  a:
    route: a
    url: http://h
    retyr: { attempts: 2 }
    circuit_breaker:
      failure_rate: 1.5
    fallback: nowhere
",
        );
        assert_eq!(
            paths(&found),
            [
                "upstreams.a.route",
                "upstreams.a.retyr",
                "upstreams.a.circuit_breaker.failure_rate",
                "upstreams.a.fallback",
            ],
            "{found:#?}"
        );
    }

    #[test]
    fn a_wrong_value_is_reported_once_and_the_rest_still_checked() {
        let found = problems(
            "\
listne: 1
upstreams:
  a:
    route: /a
    url: http://h
    retry: { attempts: many, backoff: { base: 0s } }
  b:
    route: /a
    url: http://h
",
        );
        assert_eq!(
            paths(&found),
            [
                "listne",
                "upstreams.a.retry.attempts",
                "upstreams.a.retry.backoff.base",
                "upstreams.b.route",
            ],
            "{found:#?}"
        );
    }

    #[test]
    fn a_missing_required_field_still_stops_that_upstream_only() {
        let found = problems(
            "\
upstreams:
  a:
    route: /a
  b:
    route: b
    url: http://h
",
        );
        assert_eq!(
            paths(&found),
            ["upstreams.a.url", "upstreams.b.route"],
            "{found:#?}"
        );
    }
}
