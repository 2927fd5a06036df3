//! The client's response: an upstream answer passed through, or weir's own,
//! stamped with the headers every response carries.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::Response;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::body::{Body, Streaming};
use super::headers::{self, X_REQUEST_ID, X_SHOULD_RETRY, X_WEIR_ATTEMPTS, X_WEIR_UPSTREAM};
use super::{ProxyError, Record};
use crate::metrics::Outcome;
use crate::upstream::{Place, Upstream};
use crate::usage::account::Tap;

/// What one upstream made of the request.
pub(super) enum Answer {
    /// The upstream's response, streamed to the client.
    Upstream(Response<Incoming>, Place),
    /// The upstream's response, already read whole.
    Buffered(http::response::Parts, Bytes),
    /// weir's own answer.
    Weir(ProxyError),
}

impl Answer {
    /// The upstream's response headers, when the upstream answered.
    pub(super) fn upstream_headers(&self) -> Option<&http::HeaderMap> {
        match self {
            Answer::Upstream(response, _) => Some(response.headers()),
            Answer::Buffered(parts, _) => Some(&parts.headers),
            Answer::Weir(_) => None,
        }
    }
}

pub(super) fn count_rejection(up: &Upstream, answer: &Answer) {
    if let Answer::Weir(error) = answer {
        up.metrics.rejected(error.reason).inc();
    }
}

/// Turns an answer into the client's response, stamped with the headers
/// every response carries.
pub(super) fn finish(
    up: &Arc<Upstream>,
    answer: Answer,
    exhausted: bool,
    strip: bool,
    mut record: Record,
) -> Response<Body> {
    count_rejection(up, &answer);
    let gave_up = exhausted && record.attempts() > 1;
    match answer {
        Answer::Upstream(response, place) => {
            record.set_status(response.status().as_u16());
            record.hold(place);
            let answered = Instant::now();
            let (mut parts, body) = response.into_parts();
            headers::drop_contradicting_length(&mut parts.headers);
            headers::strip_hop_by_hop(&mut parts.headers);
            stamp(&mut parts.headers, up, &record, gave_up);
            let deadline = record.started() + up.policy.timeouts.total;
            let tap =
                Tap::for_response(up.policy.kind, parts.status.as_u16(), &parts.headers, strip);
            record.set_streamed(tap.is_sse());
            if tap.rewrites() {
                // Removing the usage-only event changes the length.
                parts.headers.remove(header::CONTENT_LENGTH);
            }
            let body = Streaming::new(body, tap, up.policy.timeouts.idle, deadline, record);
            up.metrics
                .overhead
                .observe(answered.elapsed().as_secs_f64());
            Response::from_parts(parts, Body::Upstream { inner: body })
        }
        Answer::Buffered(mut parts, bytes) => {
            let status = parts.status.as_u16();
            record.set_status(status);
            record.finish(Outcome::for_status(status));
            headers::strip_hop_by_hop(&mut parts.headers);
            stamp(&mut parts.headers, up, &record, gave_up);
            Response::from_parts(parts, Body::full(bytes))
        }
        Answer::Weir(error) => {
            let reason = error.reason;
            record.set_status(reason.status().as_u16());
            record.finish(match reason.side() {
                super::Side::Upstream => Outcome::UpstreamError,
                _ => Outcome::Rejected,
            });
            let mut response = error.into_response();
            let upstream_failure = reason.side() == super::Side::Upstream;
            stamp(
                response.headers_mut(),
                up,
                &record,
                upstream_failure && record.attempts() > 1,
            );
            response
        }
    }
}

/// The headers every response carries.
fn stamp(headers: &mut http::HeaderMap, up: &Upstream, record: &Record, gave_up: bool) {
    headers.insert(X_WEIR_UPSTREAM, up.name_header.clone());
    headers.insert(X_WEIR_ATTEMPTS, attempts_value(record.attempts()));
    headers.insert(X_REQUEST_ID, record.request_id().clone());
    if gave_up {
        // weir already retried: SDKs must not multiply its attempts.
        headers.insert(X_SHOULD_RETRY, HeaderValue::from_static("false"));
    }
}

fn attempts_value(n: u32) -> HeaderValue {
    const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match SMALL.get(n as usize) {
        Some(s) => HeaderValue::from_static(s),
        None => HeaderValue::from(n),
    }
}
