//! `${NAME}` in any string value is replaced by the environment variable NAME.

use serde_norway::Value;

/// Expands every string in `value` in place; returns `(path, message)` for
/// each variable that is missing or malformed.
pub(super) fn expand_env(
    value: &mut Value,
    path: &mut Vec<String>,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<(Vec<String>, String)>,
) {
    match value {
        Value::String(s) if s.contains("${") => match expand_str(s, env) {
            Ok(expanded) => *s = expanded,
            Err(message) => errors.push((path.clone(), message)),
        },
        Value::Mapping(map) => {
            for (key, v) in map.iter_mut() {
                path.push(key_text(key));
                expand_env(v, path, env, errors);
                path.pop();
            }
        }
        Value::Sequence(seq) => {
            for (i, v) in seq.iter_mut().enumerate() {
                path.push(i.to_string());
                expand_env(v, path, env, errors);
                path.pop();
            }
        }
        Value::Tagged(tagged) => expand_env(&mut tagged.value, path, env, errors),
        _ => {}
    }
}

pub(super) fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => "?".to_owned(),
    }
}

fn expand_str(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut missing = Vec::new();
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated `${{` in {s:?}"))?;
        let name = &after[..end];
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("`${{{name}}}` is not a valid variable name"));
        }
        match env(name) {
            Some(v) => out.push_str(&v),
            None => missing.push(name),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    match missing.as_slice() {
        [] => Ok(out),
        [one] => Err(format!("environment variable {one} is not set")),
        many => Err(format!(
            "environment variables {} are not set",
            many.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "KEY").then(|| "sk-123".to_owned())
    }

    #[test]
    fn replaces_variables_anywhere_in_a_string() {
        assert_eq!(expand_str("Bearer ${KEY}", &env).unwrap(), "Bearer sk-123");
        assert_eq!(expand_str("${KEY}${KEY}", &env).unwrap(), "sk-123sk-123");
        assert_eq!(expand_str("no vars", &env).unwrap(), "no vars");
    }

    #[test]
    fn a_missing_variable_is_named() {
        let err = expand_str("Bearer ${OPENAI_API_KEY}", &env).unwrap_err();
        assert!(err.contains("OPENAI_API_KEY"), "{err}");
        assert!(expand_str("${KEY", &env).is_err());
        assert!(expand_str("${1X}", &env).is_err());
    }
}
