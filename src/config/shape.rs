//! What a policy file may be before it is parsed: at most
//! [`MAX_POLICY_BYTES`], nested at most [`MAX_NESTING`] deep; and problem
//! messages with every expanded `${NAME}` value put back as `${NAME}`.
//!
//! Why: the YAML parser's time and stack grow with nesting (80,000 nested
//! flow brackets took 18 s), and a secret put in the wrong field (`url:
//! ${API_KEY}`) would otherwise be quoted by the problem that field causes,
//! in `weir check`'s output and in the log line of a rejected reload.

/// The largest policy file read.
pub const MAX_POLICY_BYTES: usize = 10 * 1024 * 1024;

/// The deepest nesting of mappings and sequences accepted.
pub const MAX_NESTING: usize = 64;

/// Why `text` is refused before parsing, if it is.
pub fn too_big(text: &str) -> Option<String> {
    if text.len() > MAX_POLICY_BYTES {
        return Some(format!(
            "the policy is {} bytes; at most {MAX_POLICY_BYTES} are read",
            text.len()
        ));
    }
    let depth = nesting(text);
    (depth > MAX_NESTING).then(|| {
        format!("the policy nests {depth} levels deep; at most {MAX_NESTING} are accepted")
    })
}

/// An upper bound of how deep `text` nests: block indentation levels, `- `
/// sequence entries opened on one line, and `[`/`{` flow brackets outside
/// quotes and comments. One pass, no allocation beyond the indent stack.
pub fn nesting(text: &str) -> usize {
    let mut deepest = 0;
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    for line in text.lines() {
        let body = line.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let indent = line.len() - body.len();
        if flow == 0 {
            while indents.last().is_some_and(|&top| top >= indent) {
                indents.pop();
            }
            indents.push(indent);
        }
        let mut dashes = 0;
        let mut rest = body;
        while let Some(after) = rest.strip_prefix("- ") {
            dashes += 1;
            rest = after.trim_start_matches(' ');
        }
        let (line_flow, max_flow) = flow_depth(rest, flow);
        flow = line_flow;
        deepest = deepest.max(indents.len() + dashes + max_flow);
    }
    deepest
}

/// Bracket depth after `line`, starting from `depth`, and the deepest
/// reached on it; quotes and comments are skipped.
fn flow_depth(line: &str, mut depth: usize) -> (usize, usize) {
    let mut deepest = depth;
    let mut quote: Option<u8> = None;
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match quote {
            Some(b'"') if c == b'\\' => i += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                b'"' | b'\'' => quote = Some(c),
                b'#' if i == 0 || bytes[i - 1] == b' ' => break,
                b'[' | b'{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        i += 1;
    }
    (depth, deepest)
}

/// `message` with each expanded value (4 bytes or longer: shorter ones are
/// no secret, and would garble the message) shown as `${NAME}`.
pub fn redact(message: &str, expanded: &[(String, String)]) -> String {
    let mut out = message.to_owned();
    let mut longest_first: Vec<&(String, String)> =
        expanded.iter().filter(|(_, v)| v.len() >= 4).collect();
    longest_first.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    for (name, value) in longest_first {
        if out.contains(value.as_str()) {
            out = out.replace(value.as_str(), &format!("${{{name}}}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_counts_blocks_dashes_and_brackets() {
        assert_eq!(nesting("a: 1\nb: 2\n"), 1);
        assert_eq!(nesting("a:\n  b:\n    c: 1\n"), 3);
        assert_eq!(nesting("a:\n  - - - x\n"), 5);
        assert_eq!(nesting("a: [[[1]]]\n"), 4);
        assert_eq!(nesting("a: \"[[[[[\" # [[[[\n"), 1);
        assert_eq!(nesting("a: {b: [1,\n  2]}\nc: 1\n"), 3);
        let deep = format!("a: {}{}\n", "[".repeat(100), "]".repeat(100));
        assert_eq!(nesting(&deep), 101);
        assert!(too_big(&deep).is_some());
    }

    #[test]
    fn the_shipped_shape_is_shallow() {
        let policy = "upstreams:\n  a:\n    route: /a\n    url: http://x\n    retry:\n      on: [connect, 500]\n      backoff: { base: 1ms, max: 2ms }\n";
        assert!(nesting(policy) <= 5, "{}", nesting(policy));
        assert_eq!(too_big(policy), None);
    }

    #[test]
    fn expanded_values_are_shown_by_name() {
        let expanded = vec![
            ("KEY".to_owned(), "sk-live-0123456789".to_owned()),
            ("PORT".to_owned(), "80".to_owned()),
        ];
        assert_eq!(
            redact(
                "bad url \"sk-live-0123456789\": no scheme (port 8080)",
                &expanded
            ),
            "bad url \"${KEY}\": no scheme (port 8080)"
        );
    }
}
