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

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, Uri};
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
use crate::wire;
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
    mut request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let snapshot = shared.snapshot.load_full();
    let request_id = headers::request_id(request.headers());

    // Phase 0: framing weir will not guess at, and the path weir routes and
    // forwards is the normalised one.
    if let Some(message) = ambiguous_framing(&request) {
        shared.unrouted.bad_framing.count();
        let mut response = refused(Reject::BadRequestBody, message.to_owned(), request_id);
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(response);
    }
    let lowest = match normalize_path(&mut request) {
        Ok(lowest) => lowest,
        Err(message) => {
            shared.unrouted.bad_path.count();
            return Ok(refused(Reject::BadRequestPath, message, request_id));
        }
    };
    let path = request.uri().path();
    let Some((upstream, rest)) = snapshot.router.route(path) else {
        shared.unrouted.no_route.count();
        let message = format!("no route matches {path}");
        return Ok(refused(Reject::NoRoute, message, request_id));
    };
    let prefix_len = path.len() - rest.len();
    if lowest.is_some_and(|lowest| lowest < route::depth(&path[..prefix_len])) {
        shared.unrouted.bad_path.count();
        let message = format!(
            "the path climbs above its route `{}` with `..`",
            upstream.policy.route
        );
        return Ok(refused(Reject::BadRequestPath, message, request_id));
    }
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
    Ok(forward::forward(&snapshot, upstream, prefix_len, request, conn, record).await)
}

/// Marks a request whose head had both `content-length` and
/// `transfer-encoding`: the listener saw it before hyper resolved it (see
/// `server/scan.rs`) and leaves this in the request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct AmbiguousLength;

/// Framing with two meanings, which weir refuses rather than pick one: a
/// length and a transfer coding together ([`AmbiguousLength`]), two `host`
/// headers, or a `host` that disagrees with the HTTP/2 `:authority`.
fn ambiguous_framing(request: &Request<Incoming>) -> Option<&'static str> {
    if request.extensions().get::<AmbiguousLength>().is_some() {
        return Some("the request has both content-length and transfer-encoding");
    }
    let mut hosts = request.headers().get_all(http::header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Some("the request has more than one `host` header");
    }
    if let (Some(host), Some(authority)) = (first, request.uri().authority()) {
        if !host
            .as_bytes()
            .eq_ignore_ascii_case(authority.as_str().as_bytes())
        {
            return Some("the `host` header and the request target name different hosts");
        }
    }
    None
}

/// Replaces the request's path by its normalised form when that differs
/// (rarely: a clean path is left untouched, without allocating). Returns
/// how low a `..` took it, or why the path is refused.
fn normalize_path(request: &mut Request<Incoming>) -> Result<Option<usize>, String> {
    let normalized = wire::path::normalize(request.uri().path()).map_err(|e| e.to_string())?;
    let lowest = normalized.lowest;
    let Cow::Owned(path) = normalized.path else {
        return Ok(lowest);
    };
    let mut target = path;
    if let Some(query) = request.uri().query() {
        target.push('?');
        target.push_str(query);
    }
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query =
        Some(PathAndQuery::try_from(target).map_err(|e| format!("the normalised path: {e}"))?);
    *request.uri_mut() = Uri::from_parts(parts).map_err(|e| format!("the normalised path: {e}"))?;
    Ok(lowest)
}

/// weir's answer to a request it refused before any upstream was chosen.
fn refused(reason: Reject, message: String, request_id: HeaderValue) -> Response<Body> {
    let mut response = ProxyError::new(reason, message).into_response();
    response
        .headers_mut()
        .insert(headers::X_REQUEST_ID, request_id);
    response
}
