//! Phase 3, one attempt: send the request through the upstream's pooled
//! client under `timeouts.first_byte`, then classify what came back for the
//! breaker and the retry decision.

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::admit::Ticket;
use super::respond::Answer;
use super::{ProxyError, Record, Reject};
use crate::metrics::AttemptResult;
use crate::resilience::backoff::demanded_wait;
use crate::resilience::breaker::Outcome as BreakerOutcome;
use crate::resilience::retry::Failure;
use crate::upstream::{BodyTooLarge, Place, RequestBody, Upstream};

/// A 429 body is read (to tell quota from rate) only up to this size.
const QUOTA_PEEK_LIMIT: u64 = 64 * 1024;

/// What one attempt came to.
pub(super) enum Classified {
    /// An answer to pass on: a success, or a status the policy does not retry.
    Answered(Answer),
    /// A failure the retry decision weighs; `answer` goes to the client if
    /// no retry follows.
    Failed {
        failure: Failure,
        result: AttemptResult,
        demanded: Option<Duration>,
        answer: Answer,
    },
}

/// The request of one attempt: the shared parts, the policy's `headers`,
/// and this attempt's body.
pub(super) fn request(
    up: &Upstream,
    parts: &Parts,
    uri: &Uri,
    body: RequestBody,
) -> Request<RequestBody> {
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri.clone();
    *request.version_mut() = Version::HTTP_11;
    let h = request.headers_mut();
    *h = parts.headers.clone();
    for (name, value) in &up.policy.headers.0 {
        h.insert(name.clone(), value.clone());
    }
    request
}

/// Sends `request` and classifies the result. `number` is 1 for the first
/// attempt; `ticket` records the breaker outcome, `place` the bulkhead.
pub(super) async fn send(
    up: &Arc<Upstream>,
    request: Request<RequestBody>,
    number: u32,
    ticket: Ticket<'_>,
    place: Place,
    record: &mut Record,
) -> Classified {
    let policy = &up.policy;
    let m = &up.metrics;
    let deadline = record.started() + policy.timeouts.total;
    record.add_attempt();
    let sent = Instant::now();
    let wait = policy
        .timeouts
        .first_byte
        .min(deadline.saturating_duration_since(sent));
    let result = tokio::time::timeout(wait, up.client.request(request)).await;
    let answered = Instant::now();
    match result {
        Ok(Ok(response)) => {
            let status = response.status().as_u16();
            m.attempt(AttemptResult::Status(status)).inc();
            m.first_byte
                .observe(answered.duration_since(sent).as_secs_f64());
            if !up.retry.retries_status(status) {
                ticket.record(BreakerOutcome::Success);
                let overhead = sent.duration_since(record.started());
                m.overhead.observe(overhead.as_secs_f64());
                return Classified::Answered(Answer::Upstream(response, place));
            }
            // 429 is a failure for retry, not for the breaker.
            ticket.record(if status == 429 {
                BreakerOutcome::Ignored
            } else {
                BreakerOutcome::Failure
            });
            let mut answer = Answer::Upstream(response, place);
            let mut failure = Failure::Status(status);
            if status == 429 {
                let (quota, read) = peek_quota(answer, policy.timeouts.idle).await;
                answer = read;
                if quota {
                    failure = Failure::Quota;
                }
            }
            let demanded = answer
                .upstream_headers()
                .and_then(|headers| demanded_wait(headers, SystemTime::now()));
            Classified::Failed {
                failure,
                result: AttemptResult::Status(status),
                demanded,
                answer,
            }
        }
        Ok(Err(e)) if cause::<BodyTooLarge>(&e).is_some() => {
            // The client's fault, not the upstream's: nothing to retry.
            ticket.record(BreakerOutcome::Ignored);
            drop(place);
            let message = cause::<BodyTooLarge>(&e)
                .map(ToString::to_string)
                .unwrap_or_default();
            Classified::Answered(Answer::Weir(ProxyError::new(Reject::BodyTooLarge, message)))
        }
        Ok(Err(e)) => {
            ticket.record(BreakerOutcome::Failure);
            m.attempt(AttemptResult::Connect).inc();
            drop(place);
            let detail = error_chain(&e);
            tracing::warn!(
                request_id = record.request_id().to_str().unwrap_or("-"),
                upstream = %up.name,
                attempt = number,
                error = %detail,
                "upstream attempt failed"
            );
            let (reason, message) = if e.is_connect() {
                let message = format!("cannot connect to upstream `{}`: {detail}", up.name);
                (Reject::UpstreamConnect, message)
            } else if spoke_garbage(&e) {
                let message = format!(
                    "upstream `{}` answered with invalid HTTP: {detail}",
                    up.name
                );
                (Reject::UpstreamProtocol, message)
            } else {
                let message = format!(
                    "upstream `{}` closed the connection before answering: {detail}",
                    up.name
                );
                (Reject::UpstreamConnect, message)
            };
            Classified::Failed {
                failure: Failure::Connect,
                result: AttemptResult::Connect,
                demanded: None,
                answer: Answer::Weir(ProxyError::new(reason, message)),
            }
        }
        Err(_) => {
            ticket.record(BreakerOutcome::Failure);
            m.attempt(AttemptResult::Timeout).inc();
            drop(place);
            tracing::warn!(
                request_id = record.request_id().to_str().unwrap_or("-"),
                upstream = %up.name,
                attempt = number,
                "upstream sent no response headers in time"
            );
            let message = format!(
                "upstream `{}` sent no response headers within {wait:?}",
                up.name
            );
            Classified::Failed {
                failure: Failure::Timeout,
                result: AttemptResult::Timeout,
                demanded: None,
                answer: Answer::Weir(ProxyError::new(Reject::UpstreamTimeout, message)),
            }
        }
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

/// The first error of type `E` in `error`'s source chain.
fn cause<'e, E: std::error::Error + 'static>(
    error: &'e (dyn std::error::Error + 'static),
) -> Option<&'e E> {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        source = e.source();
    }
    None
}

/// Whether the upstream's answer could not be parsed as HTTP (a bad status
/// line or header, a malformed length), as opposed to no answer at all.
fn spoke_garbage(error: &(dyn std::error::Error + 'static)) -> bool {
    cause::<hyper::Error>(error).is_some_and(|e| e.is_parse() || e.is_parse_status())
}
