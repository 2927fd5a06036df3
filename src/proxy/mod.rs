//! The request pipeline, in phase order:
//!
//! 1. **route** ([`route`]): the longest matching `route` picks the upstream;
//!    no match is `404 no_route`.
//! 2. **admit** (`admit`, and the limits at the top of `forward`): the
//!    request and token rate limits, then per attempt the circuit breaker
//!    and a place in the bulkhead.
//! 3. **forward** (`forward`, `replay`): the body is kept for replay, the
//!    request rewritten (path, hop-by-hop headers, `host`, `x-forwarded-*`,
//!    policy `headers`, stream usage injection) and sent through the
//!    upstream's pooled client under `timeouts.first_byte`, retried while the
//!    policy and the budget allow, and handed to the `fallback` when the
//!    upstream is open or exhausted.
//! 4. **respond** (`respond`, [`body`]): the answer streams back under
//!    `timeouts.idle` and `timeouts.total`, usage read as it passes.
//! 5. **account** ([`record`]): the request is counted once, when its
//!    response ends, fails or is abandoned by the client.
//!
//! One policy snapshot is read per request and kept to the end, so a reload
//! never changes the rules under a running request.

mod admit;
mod attempt;
pub mod body;
mod error;
mod forward;
pub mod headers;
mod record;
mod replay;
mod respond;
pub mod route;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;

pub use crate::upstream::RequestBody;
pub use body::Body;
pub use error::{ProxyError, Reject, Side};
pub use record::Record;

use crate::config::Policy;
use crate::metrics::{Metrics, Unrouted};
use crate::upstream::Upstream;
use crate::usage::account::Accountant;
use route::Router;

/// What a request reads once and keeps: the policy and everything compiled
/// from it.
pub struct Snapshot {
    pub policy: Arc<Policy>,
    pub router: Router,
}

impl Snapshot {
    /// Compiles the routes of `upstreams`, built for `policy`.
    pub fn new(policy: Arc<Policy>, upstreams: Vec<Arc<Upstream>>) -> Self {
        Self {
            policy,
            router: Router::new(upstreams),
        }
    }
}

/// State shared by every connection of the proxy listener.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    pub accountant: Arc<Accountant>,
    /// Counters of requests that match no route (`upstream="none"`).
    unrouted: Unrouted,
}

impl Shared {
    pub fn new(snapshot: Snapshot, metrics: Arc<Metrics>, accountant: Arc<Accountant>) -> Self {
        Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            accountant,
            unrouted: metrics.unrouted(),
            metrics,
        }
    }
}

/// Facts about the client connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ClientConn {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// Serves one request. Never fails: every error becomes a response.
pub async fn handle(
    shared: Arc<Shared>,
    conn: ClientConn,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let snapshot = shared.snapshot.load_full();
    let request_id = headers::request_id(request.headers());

    let Some((upstream, rest)) = snapshot.router.route(request.uri().path()) else {
        shared.unrouted.rejected.inc();
        shared.unrouted.requests.inc();
        let message = format!("no route matches {}", request.uri().path());
        let mut response = ProxyError::new(Reject::NoRoute, message).into_response();
        response
            .headers_mut()
            .insert(headers::X_REQUEST_ID, request_id);
        return Ok(response);
    };
    let tenant = shared
        .accountant
        .tenants
        .of(request.headers(), &upstream.policy.accounting.tenant_header);
    let record = Record::new(
        upstream.clone(),
        shared.accountant.clone(),
        started,
        request_id,
        tenant,
    );
    let prefix_len = request.uri().path().len() - rest.len();
    Ok(forward::forward(&snapshot, upstream, prefix_len, request, conn, record).await)
}
