//! Phases 2 and 3, admit and forward: one request through its upstream's
//! policies, with retries, and on to the `fallback` when the upstream is open
//! or exhausted. Only the orchestration lives here; each phase is a function
//! of its own, and what to do after a failure is
//! [`RetryRules::decide`](crate::resilience::retry::RetryRules::decide)'s.
//!
//! Per upstream, in order: the request and token rate limits
//! (`429 rate_limited`), then for each attempt the circuit breaker
//! (`503 circuit_open`), the bulkhead (`503 overloaded` / `queue_timeout`),
//! and the attempt itself under `timeouts.first_byte`. Retries happen only
//! before anything went to the client.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::admit::{enter, Ticket};
use super::attempt::{self, Classified};
use super::body::Body;
use super::headers::{self, X_FORWARDED_PROTO, X_REQUEST_ID};
use super::replay::{ReadError, Replay};
use super::respond::{count_rejection, finish, Answer};
use super::{ClientConn, ProxyError, Record, Reject, Snapshot};
use crate::config::UpstreamKind;
use crate::resilience::breaker::Admission;
use crate::resilience::retry::{Attempt, Decision, GiveUp};
use crate::upstream::Upstream;
use crate::usage::inject;

/// Paths whose successful answers report token usage.
const USAGE_PATHS: [&str; 4] = [
    "/chat/completions",
    "/completions",
    "/embeddings",
    "/responses",
];

/// What one upstream made of the request.
struct Step {
    answer: Answer,
    /// The upstream is open or its attempts are spent on retryable
    /// failures: a fallback may take over, else the answer goes out.
    exhausted: bool,
}

impl Step {
    fn done(answer: Answer) -> Self {
        Self {
            answer,
            exhausted: false,
        }
    }

    fn exhausted(answer: Answer) -> Self {
        Self {
            answer,
            exhausted: true,
        }
    }
}

pub(super) async fn forward(
    snapshot: &Snapshot,
    primary: &Arc<Upstream>,
    prefix_len: usize,
    request: Request<Incoming>,
    conn: ClientConn,
    mut record: Record,
) -> Response<Body> {
    let (mut parts, body) = request.into_parts();
    prepare_headers(&mut parts, conn, &record);
    let max_body = snapshot.policy.limits.max_request_body;
    let mut body = match read_body(primary, &parts, body, &record, max_body).await {
        Ok(body) => body,
        Err(error) => return finish(primary, Answer::Weir(error), false, false, record),
    };
    let strip = inspect(primary, &mut parts, &mut body, &mut record);

    let mut current = primary.clone();
    let mut visited = 1;
    loop {
        let step = try_upstream(&current, prefix_len, &parts, &mut body, &mut record).await;
        let next = current
            .policy
            .fallback
            .as_deref()
            .filter(|_| step.exhausted && body.available() && visited <= snapshot.router.len())
            .and_then(|name| snapshot.router.upstream(name));
        let Some(next) = next else {
            return finish(&current, step.answer, step.exhausted, strip, record);
        };
        count_rejection(&current, &step.answer);
        tracing::info!(
            request_id = record.request_id().to_str().unwrap_or("-"),
            from = %current.name,
            to = %next.name,
            "falling back"
        );
        current = next.clone();
        record.set_upstream(current.clone());
        visited += 1;
    }
}

/// Header work done once per request, whatever the upstream.
fn prepare_headers(parts: &mut Parts, conn: ClientConn, record: &Record) {
    parts.version = Version::HTTP_11;
    let h = &mut parts.headers;
    headers::strip_hop_by_hop(h);
    h.remove(header::HOST);
    headers::append_forwarded_for(h, conn.peer.ip());
    h.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
    );
    h.insert(X_REQUEST_ID, record.request_id().clone());
}

/// Whether weir reads the request body for its model and stream options.
fn inspects(up: &Upstream, parts: &Parts) -> bool {
    !matches!(
        up.policy.kind,
        UpstreamKind::Vectordb | UpstreamKind::Generic
    ) && parts.method == Method::POST
}

/// The body, kept for replay when a retry, a fallback or inspection needs
/// it. A client that sends it slowly cannot hold weir past the request's
/// own deadline (`408 bad_request_body`).
async fn read_body(
    up: &Upstream,
    parts: &Parts,
    body: Incoming,
    record: &Record,
    max: u64,
) -> Result<Replay, ProxyError> {
    let policy = &up.policy;
    let wanted = policy.retry.attempts > 1 || policy.fallback.is_some() || inspects(up, parts);
    let deadline = record.started() + policy.timeouts.total;
    let read = Replay::new(body, &parts.headers, wanted, max);
    match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(e @ ReadError::TooLarge(_))) => {
            Err(ProxyError::new(Reject::BodyTooLarge, e.to_string()))
        }
        Ok(Err(e @ ReadError::Client(_))) => {
            Err(ProxyError::new(Reject::BadRequestBody, e.to_string()))
        }
        Err(_) => Err(ProxyError::new(
            Reject::BadRequestBody,
            "the request body did not arrive within timeouts.total",
        )
        .with_status(StatusCode::REQUEST_TIMEOUT)),
    }
}

/// Reads the model from a buffered JSON body and asks a streamed chat for
/// its usage (`stream_options.include_usage`) when the client did not.
/// Returns whether the usage-only event must be stripped from the answer.
fn inspect(up: &Upstream, parts: &mut Parts, body: &mut Replay, record: &mut Record) -> bool {
    if !inspects(up, parts) {
        return false;
    }
    let path = parts.uri.path();
    let expects_usage =
        up.policy.kind == UpstreamKind::Embeddings || USAGE_PATHS.iter().any(|p| path.ends_with(p));
    let Replay::Buffered(bytes) = &*body else {
        record.set_request(None, expects_usage);
        return false;
    };
    let facts = inject::inspect(bytes).unwrap_or_default();
    let mut strip = false;
    if facts.lacks_usage
        && up.policy.accounting.inject_stream_usage
        && path.ends_with("/chat/completions")
    {
        if let Some(injected) = inject::with_include_usage(bytes) {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(injected.len()));
            *body = Replay::Buffered(injected);
            // The usage-only event weir asked for is removed from the
            // stream, which needs the events as plain bytes: ask for them so
            // (identity is always acceptable to the client).
            parts.headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
            strip = true;
        }
    }
    record.set_request(facts.model, expects_usage);
    strip
}

/// The request and token rate limits of `up`, for the request's tenant.
fn limits(up: &Upstream, record: &Record, now: Instant) -> Result<(), ProxyError> {
    let state = &up.state;
    let tenant = record.tenant();
    let (wait, which) = match state.limit_request(tenant, now) {
        Err(wait) => (wait, "request"),
        Ok(()) => match state.limit_tokens(tenant, now) {
            Err(wait) => (wait, "token"),
            Ok(()) => return Ok(()),
        },
    };
    Err(ProxyError::new(
        Reject::RateLimited,
        format!("{which} rate limit of upstream `{}` reached", up.name),
    )
    .with_retry_after(wait))
}

/// One upstream's attempts at the request: limits, then per attempt the
/// breaker, the bulkhead and the attempt, until an answer or a give-up.
async fn try_upstream(
    up: &Arc<Upstream>,
    prefix_len: usize,
    parts: &Parts,
    body: &mut Replay,
    record: &mut Record,
) -> Step {
    let now = Instant::now();
    if let Err(error) = limits(up, record, now) {
        return Step::done(Answer::Weir(error));
    }
    up.state.deposit(now);
    let rest = parts.uri.path().get(prefix_len..).unwrap_or("");
    let uri = match up.target(rest, parts.uri.query()) {
        Ok(uri) => uri,
        Err(e) => {
            let message = format!("cannot build the upstream URL: {e}");
            return Step::done(Answer::Weir(ProxyError::new(Reject::NoRoute, message)));
        }
    };
    let deadline = record.started() + up.policy.timeouts.total;
    let mut number = 0;
    loop {
        number += 1;
        let permit = match up.state.admit(&up.name, &up.metrics, Instant::now()) {
            Admission::Allow(permit) => permit,
            Admission::Reject { retry_after } => {
                let message = format!("circuit breaker of upstream `{}` is open", up.name);
                let error = ProxyError::new(Reject::CircuitOpen, message);
                return Step::exhausted(Answer::Weir(error.with_retry_after(retry_after)));
            }
        };
        let ticket = Ticket {
            up,
            permit: Some(permit),
        };
        let place = match enter(up).await {
            Ok(place) => place,
            Err(error) => return Step::exhausted(Answer::Weir(error)),
        };
        let Some(request_body) = body.take() else {
            // Unreachable: the decision never retries a body that was sent.
            let message = "the request body was already sent and cannot be replayed";
            return Step::done(Answer::Weir(ProxyError::new(
                Reject::UpstreamConnect,
                message,
            )));
        };
        let request = attempt::request(up, parts, &uri, request_body);
        let (failure, result, demanded, answer) =
            match attempt::send(up, request, number, ticket, place, record).await {
                Classified::Answered(answer) => return Step::done(answer),
                Classified::Failed {
                    failure,
                    result,
                    demanded,
                    answer,
                } => (failure, result, demanded, answer),
            };
        let facts = Attempt {
            number,
            failure,
            demanded,
            replayable: body.available(),
        };
        let decision = up.state.with_budget(|budget| {
            up.retry
                .decide(&facts, fastrand::f64(), Instant::now(), deadline, budget)
        });
        match decision {
            Decision::Retry { wait } => {
                up.metrics.retry(result).inc();
                // Free the connection and the place before waiting.
                drop(answer);
                tokio::time::sleep(wait).await;
            }
            Decision::GiveUp(why) => {
                if why == GiveUp::BudgetSpent {
                    up.metrics.retry_budget_exhausted.inc();
                    tracing::debug!(upstream = %up.name, "retry budget spent");
                }
                return Step {
                    answer,
                    exhausted: why.exhausted(),
                };
            }
        }
    }
}
