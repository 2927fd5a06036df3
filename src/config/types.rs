//! The validated policy: plain typed structs with the contract's defaults.
//!
//! Each struct deserializes straight from YAML with `deny_unknown_fields`, so a
//! typo is an error, and with `default` so an omitted block gets the values
//! listed in CONTRACT.md. Cross-field rules (routes, fallbacks, ranges) are
//! checked afterwards in [`super::validate`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{HeaderList, RetryOn, UpstreamUrl};

/// The whole policy file, validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub tls: Option<ListenerTls>,
    pub shutdown: ShutdownPolicy,
    pub usage_log: Option<PathBuf>,
    pub metrics: MetricsPolicy,
    pub limits: LimitsPolicy,
    /// Upstreams by name, in name order.
    pub upstreams: BTreeMap<String, Arc<UpstreamPolicy>>,
}

/// The top level of the file, with upstreams still raw so that each one's
/// problems are reported separately.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicyFile {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_admin")]
    pub admin: SocketAddr,
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    #[serde(default)]
    pub shutdown: ShutdownPolicy,
    #[serde(default)]
    pub usage_log: Option<PathBuf>,
    #[serde(default)]
    pub metrics: MetricsPolicy,
    #[serde(default)]
    pub limits: LimitsPolicy,
    #[serde(default)]
    pub upstreams: BTreeMap<String, serde_norway::Value>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9901))
}

/// `tls`: serve HTTPS on `listen`; mTLS when `client_ca` is set.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// The files' contents, read once by validation.
    #[serde(skip)]
    pub identity: Option<Arc<crate::tls::Identity>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownPolicy {
    #[serde(with = "super::values::duration")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownPolicy {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// `metrics`: label cardinality caps (an extension of the contract's schema).
/// Past a cap, new `model` / `tenant` label values are counted as `other`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsPolicy {
    pub max_models: usize,
    pub max_tenants: usize,
}

impl Default for MetricsPolicy {
    fn default() -> Self {
        Self {
            max_models: 100,
            max_tenants: 1000,
        }
    }
}

/// `limits`: what one client may send and hold, for every upstream.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsPolicy {
    /// Larger: `413 body_too_large`, before anything reaches the upstream.
    #[serde(with = "super::values::byte_size")]
    pub max_request_body: u64,
    /// All request headers together; larger: 431.
    #[serde(with = "super::values::byte_size")]
    pub max_request_headers: u64,
    /// From accept until the request head is complete; then the connection closes.
    #[serde(with = "super::values::duration")]
    pub header_timeout: Duration,
    /// A keep-alive client connection idle this long is closed.
    #[serde(with = "super::values::duration")]
    pub client_idle_timeout: Duration,
    /// Client connections at once; past it the oldest idle ones close first.
    pub max_connections: usize,
}

impl Default for LimitsPolicy {
    fn default() -> Self {
        Self {
            max_request_body: 32 << 20,
            max_request_headers: 64 << 10,
            header_timeout: Duration::from_secs(30),
            client_idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

impl LimitsPolicy {
    /// What is wrong with these limits, as (field, problem) pairs.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.max_request_headers < 1024 {
            out.push(("max_request_headers", "must be at least 1KiB".to_owned()));
        }
        if self.max_request_headers > 16 << 20 {
            out.push(("max_request_headers", "must be at most 16MiB".to_owned()));
        }
        if self.header_timeout.is_zero() {
            out.push(("header_timeout", "must be longer than 0s".to_owned()));
        }
        if self.client_idle_timeout.is_zero() {
            out.push(("client_idle_timeout", "must be longer than 0s".to_owned()));
        }
        if self.max_connections == 0 {
            out.push(("max_connections", "must be at least 1".to_owned()));
        }
        out
    }
}

/// One upstream and every policy that applies to it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamPolicy {
    /// The key under `upstreams`; set after parsing.
    #[serde(skip_deserializing)]
    pub name: String,
    pub route: String,
    pub url: UpstreamUrl,
    #[serde(default)]
    pub kind: UpstreamKind,
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The certificates of `ca`, read once by validation.
    #[serde(skip)]
    pub ca_certs: Arc<Vec<rustls_pki_types::CertificateDer<'static>>>,
    #[serde(default)]
    pub headers: HeaderList,
    #[serde(default)]
    pub pool: PoolPolicy,
    #[serde(default)]
    pub timeouts: TimeoutPolicy,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default)]
    pub circuit_breaker: BreakerPolicy,
    #[serde(default)]
    pub concurrency: ConcurrencyPolicy,
    #[serde(default)]
    pub rate_limit: Option<RateLimitPolicy>,
    #[serde(default)]
    pub accounting: AccountingPolicy,
    #[serde(default)]
    pub fallback: Option<String>,
}

/// How usage is read from this upstream's responses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    #[default]
    Openai,
    Embeddings,
    Vectordb,
    Generic,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolPolicy {
    pub max_idle: usize,
    #[serde(with = "super::values::duration")]
    pub idle_timeout: Duration,
    #[serde(with = "super::values::duration")]
    pub connect_timeout: Duration,
    pub http2: bool,
    pub warm: usize,
}

impl Default for PoolPolicy {
    fn default() -> Self {
        Self {
            max_idle: 32,
            idle_timeout: Duration::from_secs(90),
            connect_timeout: Duration::from_secs(2),
            http2: false,
            warm: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutPolicy {
    /// Per attempt, until response headers arrive.
    #[serde(with = "super::values::duration")]
    pub first_byte: Duration,
    /// Longest gap between two body chunks of a response.
    #[serde(with = "super::values::duration")]
    pub idle: Duration,
    /// The whole request, streaming included.
    #[serde(with = "super::values::duration")]
    pub total: Duration,
}

impl Default for TimeoutPolicy {
    fn default() -> Self {
        Self {
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(30),
            total: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub on: Vec<RetryOn>,
    pub backoff: BackoffPolicy,
    pub respect_retry_after: bool,
    pub budget: BudgetPolicy,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            on: vec![
                RetryOn::Connect,
                RetryOn::Timeout,
                RetryOn::Status(429),
                RetryOn::Status(500),
                RetryOn::Status(502),
                RetryOn::Status(503),
                RetryOn::Status(504),
            ],
            backoff: BackoffPolicy::default(),
            respect_retry_after: true,
            budget: BudgetPolicy::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffPolicy {
    #[serde(with = "super::values::duration")]
    pub base: Duration,
    #[serde(with = "super::values::duration")]
    pub max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(200),
            max: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetPolicy {
    pub ratio: f64,
    pub min_per_second: u32,
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_second: 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerPolicy {
    pub consecutive_failures: u32,
    pub failure_rate: f64,
    pub min_requests: u32,
    #[serde(with = "super::values::duration")]
    pub window: Duration,
    #[serde(with = "super::values::duration")]
    pub open_for: Duration,
    pub half_open_requests: u32,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_requests: 20,
            window: Duration::from_secs(30),
            open_for: Duration::from_secs(30),
            half_open_requests: 3,
        }
    }
}

impl BreakerPolicy {
    /// The rules of a breaker's settings, each as `(field, what is wrong)`,
    /// in field order: reported by `weir check`, refused by
    /// `CircuitBreaker::try_new`. Written once, here.
    pub fn problems(&self) -> impl Iterator<Item = (&'static str, &'static str)> {
        let at_least_one = "must be at least 1";
        [
            (self.consecutive_failures == 0).then_some(("consecutive_failures", at_least_one)),
            (!(self.failure_rate > 0.0 && self.failure_rate <= 1.0))
                .then_some(("failure_rate", "must be more than 0 and at most 1")),
            (self.min_requests == 0).then_some(("min_requests", at_least_one)),
            self.window
                .is_zero()
                .then_some(("window", "must be more than 0")),
            self.open_for
                .is_zero()
                .then_some(("open_for", "must be more than 0")),
            (self.half_open_requests == 0).then_some(("half_open_requests", at_least_one)),
        ]
        .into_iter()
        .flatten()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConcurrencyPolicy {
    pub max_in_flight: u32,
    pub max_queue: u32,
    #[serde(with = "super::values::duration")]
    pub queue_timeout: Duration,
}

impl Default for ConcurrencyPolicy {
    fn default() -> Self {
        Self {
            max_in_flight: 64,
            max_queue: 256,
            queue_timeout: Duration::from_secs(2),
        }
    }
}

/// Token buckets; at least one of the two rates is set.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitPolicy {
    #[serde(default)]
    pub requests_per_second: Option<f64>,
    /// Defaults to one second's worth of requests.
    #[serde(default)]
    pub burst: Option<u32>,
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    #[serde(default)]
    pub key: RateLimitKey,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitKey {
    #[default]
    Global,
    Tenant,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountingPolicy {
    #[serde(with = "super::values::header_name")]
    pub tenant_header: http::HeaderName,
    pub inject_stream_usage: bool,
}

impl Default for AccountingPolicy {
    fn default() -> Self {
        Self {
            tenant_header: http::HeaderName::from_static("x-weir-tenant"),
            inject_stream_usage: true,
        }
    }
}
