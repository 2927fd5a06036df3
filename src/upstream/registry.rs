//! Upstreams by name, kept across policy loads: an upstream whose policy
//! did not change keeps its pool, its metric handles and (with the
//! resilience issue) its breaker and limiter state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Upstream, UpstreamError};
use crate::config::Policy;
use crate::metrics::Metrics;

pub struct UpstreamRegistry {
    metrics: Arc<Metrics>,
    /// Touched only when a policy is loaded, never on the request path.
    live: Mutex<HashMap<String, Arc<Upstream>>>,
}

/// What a policy load did to the upstreams.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: Vec<String>,
}

impl UpstreamRegistry {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            live: Mutex::new(HashMap::new()),
        }
    }

    /// The upstreams of `policy`, reusing every upstream whose policy is
    /// unchanged and carrying state into changed ones. Nothing is replaced
    /// unless every upstream could be built. Blocking (it may build TLS
    /// configs): called from `spawn_blocking` or at start.
    pub fn load(&self, policy: &Policy) -> Result<(Vec<Arc<Upstream>>, Changes), UpstreamError> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let mut changes = Changes::default();
        let mut next = HashMap::with_capacity(policy.upstreams.len());
        for (name, up) in &policy.upstreams {
            let upstream = match live.get(name) {
                Some(old) if old.policy == *up => {
                    changes.unchanged.push(name.clone());
                    old.clone()
                }
                Some(old) => {
                    changes.changed.push(name.clone());
                    Arc::new(Upstream::carry(old, up.clone(), &self.metrics)?)
                }
                None => {
                    changes.added.push(name.clone());
                    Arc::new(Upstream::new(up.clone(), &self.metrics)?)
                }
            };
            next.insert(name.clone(), upstream);
        }
        changes.removed = live
            .keys()
            .filter(|k| !next.contains_key(*k))
            .cloned()
            .collect();
        changes.removed.sort();
        let upstreams = next.values().cloned().collect();
        *live = next;
        Ok((upstreams, changes))
    }
}
