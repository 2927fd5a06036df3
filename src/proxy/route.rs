//! Phase 1, route: the longest `route` prefix that matches the path on a
//! segment boundary picks the upstream.
//!
//! `/openai` matches `/openai` and `/openai/v1/chat`, not `/openai2`. Routes
//! are compiled once per policy, longest first, so the first match wins.

use std::sync::Arc;

use crate::upstream::Upstream;

/// How many segments a route prefix (as matched, without a trailing `/`)
/// holds: `""` 0, `/v1` 1, `/a/b` 2.
pub fn depth(prefix: &str) -> usize {
    prefix.bytes().filter(|&b| b == b'/').count()
}

pub struct Router {
    /// Prefixes without a trailing slash (`""` for the route `/`), longest first.
    routes: Vec<(Box<str>, Arc<Upstream>)>,
}

impl Router {
    pub fn new(upstreams: impl IntoIterator<Item = Arc<Upstream>>) -> Self {
        let mut routes: Vec<(Box<str>, Arc<Upstream>)> = upstreams
            .into_iter()
            .map(|u| (u.policy.route.trim_end_matches('/').into(), u))
            .collect();
        routes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Self { routes }
    }

    /// The upstream for `path` and the rest of the path after its prefix.
    pub fn route<'p>(&self, path: &'p str) -> Option<(&Arc<Upstream>, &'p str)> {
        self.routes.iter().find_map(|(prefix, upstream)| {
            let rest = path.strip_prefix(&**prefix)?;
            (rest.is_empty() || rest.starts_with('/')).then_some((upstream, rest))
        })
    }

    /// An upstream by name (fallbacks; not on the common path).
    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.routes
            .iter()
            .map(|(_, u)| u)
            .find(|u| &*u.name == name)
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn upstreams(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.routes.iter().map(|(_, u)| u)
    }
}
