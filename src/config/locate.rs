//! Finds the line of a field path in YAML source, for error messages.
//!
//! `serde_norway::Value` keeps no positions, so the source is scanned for
//! block-mapping keys by indentation. The deepest key on the path that is
//! found gives the line (a key inside a flow map `{ a: 1 }` reports the
//! line of its parent). Good enough for messages; never used for parsing.

pub(super) fn line_of(source: &str, path: &[String]) -> Option<usize> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut best: Option<(usize, usize)> = None; // (depth matched, line)
    for (index, raw) in source.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
            continue;
        }
        let mut indent = raw.len() - trimmed.len();
        let mut text = trimmed;
        // A block sequence item `- key: v` opens a mapping one level deeper.
        if let Some(item) = text.strip_prefix("- ") {
            indent += 2;
            text = item.trim_start();
        }
        let Some(key) = key_of(text) else { continue };
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key));
        let depth = stack
            .iter()
            .zip(path)
            .take_while(|((_, k), p)| k == *p)
            .count();
        if depth == stack.len() && best.is_none_or(|(d, _)| depth > d) {
            best = Some((depth, index + 1));
            if depth == path.len() {
                break;
            }
        }
    }
    best.map(|(_, line)| line)
}

fn key_of(text: &str) -> Option<String> {
    let (key, _) = if let Some(rest) = text.strip_prefix('"') {
        let end = rest.find('"')?;
        return rest[end + 1..]
            .trim_start()
            .starts_with(':')
            .then(|| rest[..end].to_owned());
    } else if let Some(rest) = text.strip_prefix('\'') {
        let end = rest.find('\'')?;
        return rest[end + 1..]
            .trim_start()
            .starts_with(':')
            .then(|| rest[..end].to_owned());
    } else {
        let colon = text
            .find(": ")
            .or_else(|| text.strip_suffix(':').map(|k| k.len()))?;
        (text[..colon].trim_end(), ())
    };
    (!key.is_empty()).then(|| key.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_owned).collect()
    }

    const SOURCE: &str = "\
listen: 127.0.0.1:8080
# comment
upstreams:
  openai:
    route: /openai
    retry:
      attempts: 3
      backoff: { base: 1s }
  local:
    route: /local
    retry:
      attempts: 0
";

    #[test]
    fn finds_nested_keys_by_indentation() {
        assert_eq!(line_of(SOURCE, &path("listen")), Some(1));
        assert_eq!(
            line_of(SOURCE, &path("upstreams.openai.retry.attempts")),
            Some(7)
        );
        assert_eq!(
            line_of(SOURCE, &path("upstreams.local.retry.attempts")),
            Some(12)
        );
        assert_eq!(line_of(SOURCE, &path("upstreams.local")), Some(9));
    }

    #[test]
    fn a_key_in_a_flow_map_reports_its_parent_line() {
        assert_eq!(
            line_of(SOURCE, &path("upstreams.openai.retry.backoff.base")),
            Some(8)
        );
    }

    #[test]
    fn an_absent_key_reports_the_deepest_parent() {
        assert_eq!(line_of(SOURCE, &path("upstreams.local.url")), Some(9));
        assert_eq!(line_of(SOURCE, &path("nothing")), None);
    }
}
