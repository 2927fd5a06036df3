//! Phase 4, account: what one request did, counted exactly once.
//!
//! A [`Record`] is created when a request is routed and travels with it, into
//! the response body for streams. Dropping it records the request: its
//! duration, its `weir_requests_total` outcome (`cancelled` when nothing
//! finished it: the client went away) and the access log line.

use std::sync::Arc;

use http::HeaderValue;
use tokio::time::Instant;

use crate::metrics::{Outcome, UpstreamMetrics};
use crate::upstream::Place;

pub struct Record {
    metrics: Arc<UpstreamMetrics>,
    upstream: Arc<str>,
    started: Instant,
    request_id: HeaderValue,
    status: u16,
    attempts: u32,
    bytes: u64,
    outcome: Option<Outcome>,
    /// The bulkhead place of the attempt that answered, held to the end.
    place: Option<Place>,
}

/// The code label of a request that ended before any status was sent,
/// as nginx logs a client that closed the request.
const CLIENT_CLOSED: u16 = 499;

impl Outcome {
    /// The outcome of an upstream answer passed to the client whole.
    pub fn for_status(status: u16) -> Outcome {
        if status >= 500 {
            Outcome::UpstreamError
        } else {
            Outcome::Ok
        }
    }
}

impl Record {
    pub fn new(
        metrics: Arc<UpstreamMetrics>,
        upstream: Arc<str>,
        started: Instant,
        request_id: HeaderValue,
    ) -> Self {
        Self {
            metrics,
            upstream,
            started,
            request_id,
            status: 0,
            attempts: 0,
            bytes: 0,
            outcome: None,
            place: None,
        }
    }

    /// Counts the request under the upstream that answers it (a fallback).
    pub fn set_upstream(&mut self, metrics: Arc<UpstreamMetrics>, upstream: Arc<str>) {
        self.metrics = metrics;
        self.upstream = upstream;
    }

    /// Keeps the bulkhead place until the request ends.
    pub fn hold(&mut self, place: Place) {
        self.place = Some(place);
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    pub fn add_attempt(&mut self) {
        self.attempts += 1;
    }

    pub fn request_id(&self) -> &HeaderValue {
        &self.request_id
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn streamed(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }

    pub fn finish(&mut self, outcome: Outcome) {
        self.outcome.get_or_insert(outcome);
    }

    /// A stream that broke after the status went out.
    pub fn fail_stream(&mut self, error: &dyn std::fmt::Display) {
        if self.outcome.is_none() {
            tracing::warn!(
                request_id = self.request_id.to_str().unwrap_or("-"),
                upstream = %self.upstream,
                error = %error,
                "response stream aborted"
            );
            self.outcome = Some(Outcome::UpstreamError);
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        self.place.take();
        let m = &self.metrics;
        let outcome = self.outcome.unwrap_or(Outcome::Cancelled);
        let code = if self.status == 0 {
            CLIENT_CLOSED
        } else {
            self.status
        };
        m.request(code, outcome).inc();
        let elapsed = self.started.elapsed();
        m.duration.observe(elapsed.as_secs_f64());
        tracing::debug!(
            target: "weir::access",
            request_id = self.request_id.to_str().unwrap_or("-"),
            upstream = %self.upstream,
            status = code,
            outcome = outcome.as_str(),
            attempts = self.attempts,
            bytes = self.bytes,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
        );
    }
}
