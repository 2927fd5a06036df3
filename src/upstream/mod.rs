//! Per-upstream runtime state: the policy, the pooled client, metric
//! handles and the values built once for the request path.

mod client;
mod registry;
mod state;

use std::sync::Arc;

use http::uri::{PathAndQuery, Scheme as UriScheme};
use http::{HeaderValue, Uri};
use sha2::{Digest, Sha256};

pub use client::{Connector, UpstreamClient};
pub use registry::{Changes, UpstreamRegistry};
pub use state::{Place, UpstreamState};

use crate::config::{Scheme, UpstreamPolicy};
use crate::metrics::{Metrics, UpstreamMetrics};

pub struct Upstream {
    pub name: Arc<str>,
    pub policy: Arc<UpstreamPolicy>,
    pub client: UpstreamClient,
    pub metrics: Arc<UpstreamMetrics>,
    /// `x-weir-upstream` value.
    pub name_header: HeaderValue,
    /// Short hash of the upstream's effective policy, shown in `/upstreams`.
    pub hash: String,
    /// Breaker, budget, bulkhead, limiter.
    pub state: Arc<UpstreamState>,
    pub backoff: crate::resilience::backoff::Backoff,
    scheme: UriScheme,
    fresh_pool: bool,
}

impl Upstream {
    pub fn new(policy: Arc<UpstreamPolicy>, metrics: &Metrics) -> Result<Self, String> {
        Self::build(policy, metrics, None)
    }

    /// The upstream for a changed `policy`, keeping from `old` what still
    /// applies: the connection pool unless the address, TLS or pool settings
    /// changed, and the resilience state part by part.
    pub fn carry(
        old: &Upstream,
        policy: Arc<UpstreamPolicy>,
        metrics: &Metrics,
    ) -> Result<Self, String> {
        Self::build(policy, metrics, Some(old))
    }

    /// Whether this upstream opened a new connection pool (to warm).
    pub fn fresh_pool(&self) -> bool {
        self.fresh_pool
    }

    fn build(
        policy: Arc<UpstreamPolicy>,
        metrics: &Metrics,
        old: Option<&Upstream>,
    ) -> Result<Self, String> {
        let upstream_metrics = Arc::new(metrics.upstream(&policy.name));
        let pool_key = |p: &UpstreamPolicy| {
            (
                p.url.scheme,
                p.url.authority.clone(),
                p.ca.clone(),
                p.pool.clone(),
            )
        };
        let kept_client = old
            .filter(|o| pool_key(&o.policy) == pool_key(&policy))
            .map(|o| o.client.clone());
        let fresh_pool = kept_client.is_none();
        let client = match kept_client {
            Some(client) => client,
            None => client::build(&policy, upstream_metrics.connections_opened.clone())?,
        };
        let name_header = HeaderValue::from_str(&policy.name)
            .map_err(|_| format!("upstream name {:?} is not a header value", policy.name))?;
        let state = Arc::new(match old {
            Some(old) => old.state.carry(&old.policy, &policy)?,
            None => UpstreamState::try_new(&policy)?,
        });
        upstream_metrics
            .circuit_state
            .set(state.breaker_state().gauge());
        Ok(Self {
            backoff: crate::resilience::backoff::Backoff::new(
                policy.retry.backoff.base,
                policy.retry.backoff.max,
            ),
            state,
            fresh_pool,
            name: policy.name.as_str().into(),
            hash: policy_hash(&policy),
            scheme: match policy.url.scheme {
                Scheme::Http => UriScheme::HTTP,
                Scheme::Https => UriScheme::HTTPS,
            },
            client,
            metrics: upstream_metrics,
            name_header,
            policy,
        })
    }

    /// `url` + the path after the route prefix + the client's query.
    pub fn target(&self, rest: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let base = &self.policy.url.base_path;
        let mut pq =
            String::with_capacity(base.len() + rest.len() + query.map_or(0, |q| q.len() + 1) + 1);
        pq.push_str(base);
        pq.push_str(rest);
        if pq.is_empty() {
            pq.push('/');
        }
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.policy.url.authority.clone())
            .path_and_query(PathAndQuery::try_from(pq)?)
            .build()
    }

    /// Opens `pool.warm` connections by sending that many `HEAD` requests to
    /// the upstream's base URL at once; answers are discarded, connections
    /// stay in the pool. Ends by itself within the connect and first-byte
    /// timeouts.
    pub async fn warm(self: Arc<Self>) {
        let count = self.policy.pool.warm;
        if count == 0 {
            return;
        }
        let Ok(uri) = self.target("", None) else {
            return;
        };
        let limit = self.policy.pool.connect_timeout + self.policy.timeouts.first_byte;
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..count {
            let request =
                http::Request::head(uri.clone()).body(crate::proxy::RequestBody::Full(None));
            let Ok(request) = request else { return };
            let client = self.client.clone();
            set.spawn(async move {
                if let Ok(response) = client.request(request).await {
                    // Reading the (empty) body returns the connection to the pool.
                    let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                }
            });
        }
        let all = async { while set.join_next().await.is_some() {} };
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!(upstream = %self.name, "warming connections timed out");
        }
    }
}

fn policy_hash(policy: &UpstreamPolicy) -> String {
    let json = serde_json::to_vec(policy).unwrap_or_default();
    let digest = Sha256::digest(&json);
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}
