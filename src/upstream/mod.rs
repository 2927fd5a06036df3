//! Per-upstream runtime state: the policy, the pooled client, metric
//! handles and the values built once for the request path.

mod body;
mod client;
mod registry;
mod state;

use std::sync::Arc;

use http::uri::{PathAndQuery, Scheme as UriScheme};
use http::{HeaderValue, Uri};
use sha2::{Digest, Sha256};
use tokio_util::task::AbortOnDropHandle;

pub use body::{BodyTooLarge, RequestBody};
pub use client::{Connector, UpstreamClient};
pub use registry::{Changes, UpstreamRegistry};
pub use state::{Place, UpstreamState};

use crate::config::{Scheme, UpstreamPolicy};
use crate::metrics::{Metrics, UpstreamMetrics};
use crate::resilience::retry::RetryRules;

/// Why an upstream could not be built from its (validated) policy.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream `{upstream}`: {source}")]
    Tls {
        upstream: String,
        source: crate::tls::TlsError,
    },
    #[error("upstream `{upstream}`: {source}")]
    Breaker {
        upstream: String,
        source: crate::resilience::breaker::BreakerError,
    },
    #[error("upstream name {0:?} is not a header value")]
    Name(String),
}

impl UpstreamError {
    /// The field path in the policy file the problem belongs to.
    pub fn path(&self) -> String {
        match self {
            Self::Tls { upstream, .. } => format!("upstreams.{upstream}.ca"),
            Self::Breaker { upstream, source } => {
                format!("upstreams.{upstream}.{}", source.field)
            }
            Self::Name(upstream) => format!("upstreams.{upstream}"),
        }
    }
}

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
    /// The retry rules, compiled from `retry`.
    pub retry: RetryRules,
    scheme: UriScheme,
    fresh_pool: bool,
    /// The warm-up task, aborted with the upstream.
    warming: std::sync::Mutex<Option<AbortOnDropHandle<()>>>,
}

impl Upstream {
    pub fn new(policy: Arc<UpstreamPolicy>, metrics: &Metrics) -> Result<Self, UpstreamError> {
        Self::build(policy, metrics, None)
    }

    /// The upstream for a changed `policy`, keeping from `old` what still
    /// applies: the connection pool unless the address, TLS or pool settings
    /// changed, and the resilience state part by part.
    pub fn carry(
        old: &Upstream,
        policy: Arc<UpstreamPolicy>,
        metrics: &Metrics,
    ) -> Result<Self, UpstreamError> {
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
    ) -> Result<Self, UpstreamError> {
        let upstream_metrics = Arc::new(metrics.upstream(&policy.name));
        let pool_key = |p: &UpstreamPolicy| {
            (
                p.url.scheme,
                p.url.authority.clone(),
                p.ca_certs.clone(),
                p.pool.clone(),
            )
        };
        let kept_client = old
            .filter(|o| pool_key(&o.policy) == pool_key(&policy))
            .map(|o| o.client.clone());
        let fresh_pool = kept_client.is_none();
        let client = match kept_client {
            Some(client) => client,
            None => client::build(&policy, upstream_metrics.connections_opened.clone()).map_err(
                |source| UpstreamError::Tls {
                    upstream: policy.name.clone(),
                    source,
                },
            )?,
        };
        let name_header = HeaderValue::from_str(&policy.name)
            .map_err(|_| UpstreamError::Name(policy.name.clone()))?;
        let state = match old {
            Some(old) => old.state.carry(&old.policy, &policy),
            None => UpstreamState::try_new(&policy),
        }
        .map_err(|source| UpstreamError::Breaker {
            upstream: policy.name.clone(),
            source,
        })?;
        let state = Arc::new(state);
        upstream_metrics
            .circuit_state
            .set(state.breaker_state().gauge());
        Ok(Self {
            retry: RetryRules::new(&policy.retry),
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
            warming: std::sync::Mutex::new(None),
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
    /// stay in the pool. The task is owned by the upstream: it ends by
    /// itself within the connect and first-byte timeouts, or when the
    /// upstream is dropped (removed by a reload), whichever comes first.
    pub fn start_warming(&self) {
        let count = self.policy.pool.warm;
        if count == 0 {
            return;
        }
        let Ok(uri) = self.target("", None) else {
            return;
        };
        let limit = self.policy.pool.connect_timeout + self.policy.timeouts.first_byte;
        let (client, name) = (self.client.clone(), self.name.clone());
        let task = tokio::spawn(async move {
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..count {
                let Ok(request) = http::Request::head(uri.clone()).body(RequestBody::Full(None))
                else {
                    return;
                };
                let client = client.clone();
                set.spawn(async move {
                    if let Ok(response) = client.request(request).await {
                        // Reading the (empty) body returns the connection to the pool.
                        let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                    }
                });
            }
            let all = async { while set.join_next().await.is_some() {} };
            if tokio::time::timeout(limit, all).await.is_err() {
                tracing::warn!(upstream = %name, "warming connections timed out");
            }
        });
        *self.warming.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(AbortOnDropHandle::new(task));
    }
}

fn policy_hash(policy: &UpstreamPolicy) -> String {
    let json = serde_json::to_vec(policy).unwrap_or_default();
    let digest = Sha256::digest(&json);
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}
