//! Request paths, normalised before routing.
//!
//! Why: weir appends the path after a route's prefix to the upstream's base
//! URL and adds the upstream's credential. A path that names a parent
//! (`/v1/../../admin`, `/v1/%2e%2e/admin`) or hides a separator
//! (`/v1/..%2f..%2fadmin`) would, behind an upstream that resolves it, leave
//! the base path with the organisation's key attached. So weir resolves the
//! path itself, as the upstream would, and routes and forwards only the
//! result:
//!
//! - dot segments are removed (RFC 3986 §5.2.4 `remove_dot_segments`); a
//!   segment `%2e` counts as `.` and `%2e%2e` (any case, any mix) as `..`,
//!   as WHATWG URL parsers read them;
//! - repeated `/` are merged (`//` is an empty segment an upstream may drop);
//! - a `..` with nothing left to remove (above the root) is refused;
//! - an encoded `/` or `\` (`%2f`, `%5c`) or a raw `\` is refused: some
//!   servers decode or split on them, so no single reading is safe.
//!
//! Every other byte is left exactly as the client sent it (no decoding), and
//! a path that needs nothing (almost all) is returned borrowed, without
//! allocating. The caller learns how low a `..` took the path
//! ([`Normalized::lowest`]) to refuse one that climbs above its route.

use std::borrow::Cow;

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path does not start with `/`")]
    NotAbsolute,
    #[error("the path holds an encoded `/` or `\\` (`%2f`, `%5c`) or a `\\`")]
    HiddenSeparator,
    #[error("the path climbs above the root with `..`")]
    AboveRoot,
}

/// A normalised path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized<'a> {
    pub path: Cow<'a, str>,
    /// The fewest segments left just after a `..` removed one (`Some(0)`:
    /// a `..` went back to the root); `None` when the path had no `..`.
    pub lowest: Option<usize>,
}

impl Normalized<'_> {
    /// Whether a `..` took the path below its first `depth` segments (a
    /// route's prefix), i.e. it climbed out of the route it names.
    pub fn climbs_above(&self, depth: usize) -> bool {
        self.lowest.is_some_and(|lowest| lowest < depth)
    }
}

enum Segment {
    /// Empty (from `//` or a trailing `/`).
    Empty,
    Dot,
    DotDot,
    Plain,
}

fn segment(s: &str) -> Segment {
    let b = s.as_bytes();
    let dot_at = |i: usize| -> Option<usize> {
        // `.` or `%2e`/`%2E`: the length it takes at `i`.
        match b.get(i)? {
            b'.' => Some(1),
            b'%' if b.get(i + 1) == Some(&b'2') && matches!(b.get(i + 2), Some(b'e' | b'E')) => {
                Some(3)
            }
            _ => None,
        }
    };
    if b.is_empty() {
        return Segment::Empty;
    }
    let Some(first) = dot_at(0) else {
        return Segment::Plain;
    };
    if first == b.len() {
        return Segment::Dot;
    }
    match dot_at(first) {
        Some(second) if first + second == b.len() => Segment::DotDot,
        _ => Segment::Plain,
    }
}

/// Whether `path` holds an encoded `/` or `\`, or a raw `\`.
fn hides_separator(path: &str) -> bool {
    let b = path.as_bytes();
    b.iter().enumerate().any(|(i, &c)| {
        c == b'\\'
            || (c == b'%'
                && matches!(
                    (b.get(i + 1), b.get(i + 2)),
                    (Some(b'2'), Some(b'f' | b'F')) | (Some(b'5'), Some(b'c' | b'C'))
                ))
    })
}

/// Normalises a request path (without its query). See the module docs.
pub fn normalize(path: &str) -> Result<Normalized<'_>, PathError> {
    let Some(after_root) = path.strip_prefix('/') else {
        return Err(PathError::NotAbsolute);
    };
    if memchr::memchr2(b'%', b'\\', path.as_bytes()).is_some() && hides_separator(path) {
        return Err(PathError::HiddenSeparator);
    }
    let pieces = after_root.split('/');
    let count = pieces.clone().count();
    let clean = pieces.enumerate().all(|(i, s)| match segment(s) {
        Segment::Plain => true,
        Segment::Empty => i + 1 == count, // a trailing `/` stays
        Segment::Dot | Segment::DotDot => false,
    });
    if clean {
        return Ok(Normalized {
            path: Cow::Borrowed(path),
            lowest: None,
        });
    }
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing = false;
    let mut lowest: Option<usize> = None;
    for s in after_root.split('/') {
        trailing = true;
        match segment(s) {
            Segment::Empty | Segment::Dot => {}
            Segment::DotDot => {
                if kept.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                lowest = Some(lowest.map_or(kept.len(), |l| l.min(kept.len())));
            }
            Segment::Plain => {
                kept.push(s);
                trailing = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &kept {
        out.push('/');
        out.push_str(s);
    }
    if trailing || kept.is_empty() {
        out.push('/');
    }
    Ok(Normalized {
        path: Cow::Owned(out),
        lowest,
    })
}

#[cfg(test)]
mod tests;
