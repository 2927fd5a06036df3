//! Phases 2 and 3, admit and forward: one request through its upstream's
//! policies, with retries, and on to the `fallback` when the upstream is open
//! or exhausted.
//!
//! Per upstream, in order: the request rate limit (`429 rate_limited`), then
//! for each attempt the circuit breaker (`503 circuit_open`), the bulkhead
//! (`503 overloaded` / `queue_timeout`), and the attempt itself under
//! `timeouts.first_byte`. A failure in `retry.on` is retried after a full
//! jitter backoff (or the wait the upstream demands) while attempts, the
//! retry budget, the request's `timeouts.total` and a replayable body last.
//! Retries happen only before anything went to the client.

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::admit::{enter, Ticket};
use super::body::Body;
use super::headers::{self, X_FORWARDED_PROTO, X_REQUEST_ID};
use super::replay::Replay;
use super::respond::{client_body_failed, count_rejection, finish, Answer};
use super::{ClientConn, ProxyError, Record, Reject, Snapshot};
use crate::config::{RetryOn, UpstreamKind};
use crate::metrics::AttemptResult;
use crate::resilience::backoff::demanded_wait;
use crate::resilience::breaker::{Admission, Outcome as BreakerOutcome};
use crate::upstream::Upstream;
use crate::usage::inject;

/// Paths whose successful answers report token usage.
const USAGE_PATHS: [&str; 4] = [
    "/chat/completions",
    "/completions",
    "/embeddings",
    "/responses",
];

/// A 429 body is read (to tell quota from rate) only up to this size.
const QUOTA_PEEK_LIMIT: u64 = 64 * 1024;

enum Step {
    /// Goes to the client as it is.
    Final(Answer),
    /// The upstream is open or its attempts are spent on retryable failures:
    /// a fallback may take over, else this goes to the client.
    Exhausted(Answer),
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
    let accounting = &primary.policy.accounting;
    let inspect = primary.policy.kind != UpstreamKind::Vectordb
        && primary.policy.kind != UpstreamKind::Generic
        && parts.method == Method::POST;
    let wants_replay = primary.policy.retry.attempts > 1 || primary.policy.fallback.is_some();
    // A client that sends its body slowly cannot hold weir past the request's
    // own deadline.
    let deadline = record.started() + primary.policy.timeouts.total;
    let read = Replay::new(body, &parts.headers, wants_replay || inspect);
    let mut body = match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => {
            return client_body_failed(primary, http::StatusCode::BAD_REQUEST, &e, record)
        }
        Err(_) => {
            let why = "the request body did not arrive within timeouts.total";
            return client_body_failed(primary, http::StatusCode::REQUEST_TIMEOUT, &why, record);
        }
    };
    let mut strip = false;
    if inspect {
        let path = parts.uri.path();
        let expects_usage = primary.policy.kind == UpstreamKind::Embeddings
            || USAGE_PATHS.iter().any(|p| path.ends_with(p));
        if let Replay::Buffered(bytes) = &body {
            let facts = inject::inspect(bytes).unwrap_or_default();
            if facts.lacks_usage
                && accounting.inject_stream_usage
                && path.ends_with("/chat/completions")
            {
                if let Some(injected) = inject::with_include_usage(bytes) {
                    parts
                        .headers
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(injected.len()));
                    body = Replay::Buffered(injected);
                    strip = true;
                }
            }
            record.set_request(facts.model, expects_usage);
        } else {
            record.set_request(None, expects_usage);
        }
    }

    let mut current = primary.clone();
    let mut visited = 1;
    loop {
        let step = try_upstream(&current, prefix_len, &parts, &mut body, &mut record).await;
        let (answer, exhausted) = match step {
            Step::Final(answer) => (answer, false),
            Step::Exhausted(answer) => (answer, true),
        };
        if exhausted && body.available() && visited <= snapshot.router.len() {
            if let Some(next) = current
                .policy
                .fallback
                .as_deref()
                .and_then(|name| snapshot.router.upstream(name))
            {
                count_rejection(&current, &answer);
                tracing::info!(
                    request_id = record.request_id().to_str().unwrap_or("-"),
                    from = %current.name,
                    to = %next.name,
                    "falling back"
                );
                current = next.clone();
                record.set_upstream(current.clone());
                visited += 1;
                continue;
            }
        }
        return finish(&current, answer, exhausted, strip, record);
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

async fn try_upstream(
    up: &Arc<Upstream>,
    prefix_len: usize,
    parts: &Parts,
    body: &mut Replay,
    record: &mut Record,
) -> Step {
    let policy = &up.policy;
    let m = &up.metrics;
    let state = &up.state;
    let deadline = record.started() + policy.timeouts.total;
    let now = Instant::now();
    let tenant = record.tenant();
    let limited = match state.limit_request(tenant, now) {
        Err(wait) => Some((wait, "request")),
        Ok(()) => state
            .limit_tokens(tenant, now)
            .err()
            .map(|wait| (wait, "token")),
    };
    if let Some((wait, which)) = limited {
        let mut error = ProxyError::new(
            Reject::RateLimited,
            format!("{which} rate limit of upstream `{}` reached", up.name),
        );
        error.retry_after = Some(wait);
        return Step::Final(Answer::Weir(error));
    }
    state.deposit(now);
    let rest = parts.uri.path().get(prefix_len..).unwrap_or("");
    let uri = match up.target(rest, parts.uri.query()) {
        Ok(uri) => uri,
        Err(e) => {
            return Step::Final(Answer::Weir(ProxyError::new(
                Reject::NoRoute,
                format!("cannot build the upstream URL: {e}"),
            )))
        }
    };

    let mut tries: u32 = 0;
    loop {
        tries += 1;
        let permit = match state.admit(&up.name, m, Instant::now()) {
            Admission::Allow(permit) => permit,
            Admission::Reject { retry_after } => {
                let mut error = ProxyError::new(
                    Reject::CircuitOpen,
                    format!("circuit breaker of upstream `{}` is open", up.name),
                );
                error.retry_after = Some(retry_after);
                return Step::Exhausted(Answer::Weir(error));
            }
        };
        let ticket = Ticket {
            up,
            permit: Some(permit),
        };
        let place = match enter(up).await {
            Ok(place) => place,
            Err(error) => return Step::Exhausted(Answer::Weir(error)),
        };
        let Some(request_body) = body.take() else {
            // Unreachable by construction: no retry is started without a body.
            return Step::Final(Answer::Weir(ProxyError::new(
                Reject::UpstreamConnect,
                "the request body was already sent and cannot be replayed",
            )));
        };
        let mut request = Request::new(request_body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = uri.clone();
        *request.version_mut() = Version::HTTP_11;
        let h = request.headers_mut();
        *h = parts.headers.clone();
        for (name, value) in &policy.headers.0 {
            h.insert(name.clone(), value.clone());
        }

        record.add_attempt();
        let sent = Instant::now();
        let wait = policy
            .timeouts
            .first_byte
            .min(deadline.saturating_duration_since(sent));
        let result = tokio::time::timeout(wait, up.client.request(request)).await;
        let answered = Instant::now();
        let (kind, failure) = match result {
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                m.attempt(AttemptResult::Status(status)).inc();
                m.first_byte
                    .observe(answered.duration_since(sent).as_secs_f64());
                if !policy.retry.on.contains(&RetryOn::Status(status)) {
                    ticket.record(BreakerOutcome::Success);
                    let overhead = sent.duration_since(record.started());
                    m.overhead.observe(overhead.as_secs_f64());
                    return Step::Final(Answer::Upstream(response, place));
                }
                // 429 is a failure for retry, not for the breaker.
                ticket.record(if status == 429 {
                    BreakerOutcome::Ignored
                } else {
                    BreakerOutcome::Failure
                });
                (
                    AttemptResult::Status(status),
                    Answer::Upstream(response, place),
                )
            }
            Ok(Err(e)) => {
                ticket.record(BreakerOutcome::Failure);
                m.attempt(AttemptResult::Connect).inc();
                let detail = error_chain(&e);
                tracing::warn!(
                    request_id = record.request_id().to_str().unwrap_or("-"),
                    upstream = %up.name,
                    attempt = tries,
                    error = %detail,
                    "upstream attempt failed"
                );
                let message = if e.is_connect() {
                    format!("cannot connect to upstream `{}`: {detail}", up.name)
                } else {
                    format!(
                        "upstream `{}` closed the connection before answering: {detail}",
                        up.name
                    )
                };
                drop(place);
                (
                    AttemptResult::Connect,
                    Answer::Weir(ProxyError::new(Reject::UpstreamConnect, message)),
                )
            }
            Err(_) => {
                ticket.record(BreakerOutcome::Failure);
                m.attempt(AttemptResult::Timeout).inc();
                tracing::warn!(
                    request_id = record.request_id().to_str().unwrap_or("-"),
                    upstream = %up.name,
                    attempt = tries,
                    "upstream sent no response headers in time"
                );
                drop(place);
                let message = format!(
                    "upstream `{}` sent no response headers within {wait:?}",
                    up.name
                );
                (
                    AttemptResult::Timeout,
                    Answer::Weir(ProxyError::new(Reject::UpstreamTimeout, message)),
                )
            }
        };

        let listed = match kind {
            AttemptResult::Connect => policy.retry.on.contains(&RetryOn::Connect),
            AttemptResult::Timeout => policy.retry.on.contains(&RetryOn::Timeout),
            AttemptResult::Status(_) => true,
        };
        if !listed {
            return Step::Final(failure);
        }
        let mut failure = failure;
        let mut wait = up.backoff.delay(tries - 1, fastrand::f64());
        if let Answer::Upstream(response, _) = &failure {
            if response.status() == http::StatusCode::TOO_MANY_REQUESTS {
                let (quota, answer) = peek_quota(failure, policy.timeouts.idle).await;
                if quota {
                    // Out of quota, not rate: waiting will not help.
                    return Step::Final(answer);
                }
                failure = answer;
            }
        }
        if policy.retry.respect_retry_after {
            let demanded = match &failure {
                Answer::Upstream(response, _) => {
                    demanded_wait(response.headers(), SystemTime::now())
                }
                Answer::Buffered(parts, _) => demanded_wait(&parts.headers, SystemTime::now()),
                Answer::Weir(_) => None,
            };
            if let Some(demanded) = demanded {
                if demanded > policy.retry.backoff.max {
                    // A longer wait than we would ever wait: the client decides.
                    return Step::Final(failure);
                }
                wait = demanded;
            }
        }
        if tries >= policy.retry.attempts || !body.available() || Instant::now() + wait >= deadline
        {
            return Step::Exhausted(failure);
        }
        if !state.withdraw_retry(Instant::now()) {
            m.retry_budget_exhausted.inc();
            tracing::debug!(upstream = %up.name, "retry budget spent");
            return Step::Exhausted(failure);
        }
        m.retry(kind).inc();
        // Free the connection and the place before waiting.
        drop(failure);
        tokio::time::sleep(wait).await;
    }
}

/// Reads a small 429 body to tell `insufficient_quota` (never retried) from
/// a rate limit. Returns the answer with its body read, if it was.
async fn peek_quota(answer: Answer, idle: Duration) -> (bool, Answer) {
    let Answer::Upstream(response, place) = answer else {
        return (false, answer);
    };
    let small = response
        .body()
        .size_hint()
        .upper()
        .is_some_and(|n| n <= QUOTA_PEEK_LIMIT);
    if !small {
        return (false, Answer::Upstream(response, place));
    }
    let (parts, body) = response.into_parts();
    let bytes = match tokio::time::timeout(idle, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        // Unreadable: treat as an empty rate-limit answer.
        _ => Bytes::new(),
    };
    drop(place);
    let quota = serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|json| {
        let error = &json["error"];
        error["code"] == "insufficient_quota" || error["type"] == "insufficient_quota"
    });
    (quota, Answer::Buffered(parts, bytes))
}

fn error_chain(e: &hyper_util::client::legacy::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
