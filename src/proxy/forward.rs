//! Phase 3, forward: one request to its upstream and the answer back.

use std::error::Error as _;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::body::{Body, RequestBody, Streaming};
use super::headers::{self, X_FORWARDED_PROTO, X_REQUEST_ID, X_WEIR_ATTEMPTS, X_WEIR_UPSTREAM};
use super::{ClientConn, ProxyError, Record, Reject};
use crate::metrics::{AttemptResult, Outcome};
use crate::upstream::Upstream;

pub(super) async fn forward(
    upstream: &Arc<Upstream>,
    target: Result<Uri, http::Error>,
    request: Request<Incoming>,
    conn: ClientConn,
    mut record: Record,
) -> Response<Body> {
    let policy = &upstream.policy;
    let deadline = record.started() + policy.timeouts.total;
    let target = match target {
        Ok(uri) => uri,
        Err(e) => {
            // The client's path was valid for it but not joined to the base path.
            let error = ProxyError::new(
                Reject::NoRoute,
                format!("cannot build the upstream URL: {e}"),
            );
            return reject(upstream, error, record);
        }
    };

    let (mut parts, body) = request.into_parts();
    parts.uri = target;
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
    for (name, value) in &policy.headers.0 {
        h.insert(name.clone(), value.clone());
    }
    let upstream_request = Request::from_parts(parts, RequestBody::Incoming(body));

    record.add_attempt();
    let sent = Instant::now();
    let wait = policy
        .timeouts
        .first_byte
        .min(deadline.saturating_duration_since(sent));
    let result = tokio::time::timeout(wait, upstream.client.request(upstream_request)).await;
    let answered = Instant::now();
    let m = &upstream.metrics;
    let response = match result {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            let connect = e.is_connect();
            m.attempt(AttemptResult::Connect).inc();
            let detail = error_chain(&e);
            let message = if connect {
                format!("cannot connect to upstream `{}`: {detail}", upstream.name)
            } else {
                format!(
                    "upstream `{}` closed the connection before answering: {detail}",
                    upstream.name
                )
            };
            tracing::warn!(request_id = record.request_id().to_str().unwrap_or("-"), upstream = %upstream.name, error = %detail, "upstream request failed");
            return reject(
                upstream,
                ProxyError::new(Reject::UpstreamConnect, message),
                record,
            );
        }
        Err(_) => {
            m.attempt(AttemptResult::Timeout).inc();
            let message = format!(
                "upstream `{}` sent no response headers within {:?}",
                upstream.name, wait
            );
            tracing::warn!(request_id = record.request_id().to_str().unwrap_or("-"), upstream = %upstream.name, "upstream timed out before the first byte");
            return reject(
                upstream,
                ProxyError::new(Reject::UpstreamTimeout, message),
                record,
            );
        }
    };
    let status = response.status().as_u16();
    m.attempt(AttemptResult::Status(status)).inc();
    m.first_byte
        .observe(answered.duration_since(sent).as_secs_f64());
    record.set_status(status);

    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    stamp(&mut parts.headers, upstream, &record);
    let started = record.started();
    let body = Streaming::new(body, policy.timeouts.idle, deadline, record);
    let response = Response::from_parts(parts, Body::Upstream { inner: body });
    // Time in weir itself: before the attempt was sent, and after its
    // headers came back until the response is handed to hyper.
    let overhead = sent.duration_since(started) + answered.elapsed();
    m.overhead.observe(overhead.as_secs_f64());
    response
}

/// weir's own answer for a failed or refused request.
fn reject(upstream: &Upstream, error: ProxyError, mut record: Record) -> Response<Body> {
    let reason = error.reason;
    upstream.metrics.rejected(reason).inc();
    record.set_status(reason.status().as_u16());
    record.finish(match reason.side() {
        super::Side::Upstream => Outcome::UpstreamError,
        _ => Outcome::Rejected,
    });
    let mut response = error.into_response();
    stamp(response.headers_mut(), upstream, &record);
    response
}

/// The headers every response carries.
fn stamp(headers: &mut http::HeaderMap, upstream: &Upstream, record: &Record) {
    headers.insert(X_WEIR_UPSTREAM, upstream.name_header.clone());
    headers.insert(X_WEIR_ATTEMPTS, attempts_value(record.attempts()));
    headers.insert(X_REQUEST_ID, record.request_id().clone());
}

fn attempts_value(n: u32) -> HeaderValue {
    const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match SMALL.get(n as usize) {
        Some(s) => HeaderValue::from_static(s),
        None => HeaderValue::from(n),
    }
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
