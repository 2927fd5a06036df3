//! Typed structs from YAML values, reporting every wrong field, not just
//! the first, and still handing back what could be read.
//!
//! serde stops at the first error. To find them all, a block that fails is
//! tried again key by key (each key alone in its parents), recursing into a
//! nested block that still fails alone. Then the keys found wrong are
//! removed and the rest is read with their defaults, so the rules that span
//! fields (ranges, routes, fallbacks) still run on it: a typo does not hide
//! a bad `failure_rate` or a dangling `fallback` until the next run. What is
//! read that way only serves more checks; the file is refused all the same.

use serde::de::DeserializeOwned;
use serde_norway::{Mapping, Value};

use super::validate::Problems;

/// Rounds of removing wrong keys before giving up on a block.
const PRUNE_ROUNDS: usize = 8;

/// Deserializes `value` as `T`, reporting every wrong field. On failure,
/// returns `T` read without the wrong keys (their defaults instead), when a
/// required field is not among them: only for further checks.
pub(super) fn typed<T: DeserializeOwned>(
    value: &Value,
    base: &[String],
    problems: &mut Problems,
) -> Option<T> {
    let first = match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(t) => return Some(t),
        Err(e) => e,
    };
    let mut found = Vec::new();
    isolate::<T>(value, &|v| v, &mut found);
    if found.is_empty() || is_missing_field(&first) {
        found.insert(0, first);
    }
    let mut reported: Vec<Vec<String>> = Vec::new();
    let mut pruned = value.clone();
    for _ in 0..PRUNE_ROUNDS {
        let mut removed = false;
        for e in &found {
            let (path, message) = describe(&[], e);
            if !reported.contains(&path) {
                problems.push(&[base, &path].concat(), message);
                reported.push(path.clone());
            }
            removed |= !is_missing_field(e) && remove(&mut pruned, &path);
        }
        if !removed {
            return None;
        }
        match serde_path_to_error::deserialize::<_, T>(&pruned) {
            Ok(t) => return Some(t),
            Err(e) => found = vec![e],
        }
    }
    None
}

/// Removes the key (or sequence item) at `path`; whether it was there.
fn remove(value: &mut Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut at = value;
    for key in parents {
        let next = match at {
            Value::Mapping(map) => map.get_mut(key.as_str()),
            Value::Sequence(seq) => key.parse::<usize>().ok().and_then(|i| seq.get_mut(i)),
            _ => None,
        };
        match next {
            Some(v) => at = v,
            None => return false,
        }
    }
    match at {
        Value::Mapping(map) => map.remove(last.as_str()).is_some(),
        Value::Sequence(seq) => match last.parse::<usize>() {
            Ok(i) if i < seq.len() => {
                seq.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

type DeError = serde_path_to_error::Error<serde_norway::Error>;

/// Deserializes each key of the mapping `value` on its own, put back into
/// its parents by `wrap`, and recurses into a nested block that still fails
/// alone, so that two wrong fields in one block are both found.
fn isolate<T: DeserializeOwned>(
    value: &Value,
    wrap: &dyn Fn(Value) -> Value,
    found: &mut Vec<DeError>,
) {
    let Value::Mapping(map) = value else { return };
    if map.len() < 2 {
        return;
    }
    for (k, v) in map {
        let single = |inner: Value| {
            let mut m = Mapping::new();
            m.insert(k.clone(), inner);
            wrap(Value::Mapping(m))
        };
        match serde_path_to_error::deserialize::<_, T>(&single(v.clone())) {
            Err(e) if !is_missing_field(&e) => {
                let before = found.len();
                isolate::<T>(v, &single, found);
                if found.len() == before {
                    found.push(e);
                }
            }
            _ => {}
        }
    }
}

fn is_missing_field(e: &serde_path_to_error::Error<serde_norway::Error>) -> bool {
    e.inner().to_string().starts_with("missing field")
}

pub(super) fn describe(
    base: &[String],
    e: &serde_path_to_error::Error<serde_norway::Error>,
) -> (Vec<String>, String) {
    use serde_path_to_error::Segment;
    let mut path = base.to_vec();
    for segment in e.path().iter() {
        match segment {
            Segment::Map { key } => path.push(key.clone()),
            Segment::Seq { index } => path.push(index.to_string()),
            Segment::Enum { variant } => path.push(variant.clone()),
            Segment::Unknown => {}
        }
    }
    let message = e.inner().to_string();
    // Point a missing field's message at the field itself.
    if let Some(rest) = message.strip_prefix("missing field `") {
        if let Some(end) = rest.find('`') {
            path.push(rest[..end].to_owned());
        }
    }
    // Point an unknown field's message at the field itself (once: the
    // error's own path may already end with it).
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some(end) = rest.find('`') {
            let field = &rest[..end];
            if path.last().map(String::as_str) != Some(field) {
                path.push(field.to_owned());
            }
        }
    }
    (path, message)
}
