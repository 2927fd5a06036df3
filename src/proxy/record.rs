//! Phase 4, account: what one request did, counted exactly once.
//!
//! A [`Record`] is created when a request is routed and travels with it, into
//! the response body for streams. Dropping it records the request: its
//! duration and `weir_requests_total` outcome (`cancelled` when nothing
//! finished it: the client went away), the tokens its answer reported, the
//! usage event, the token rate limit charge, and the access log line.

use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderValue;
use tokio::time::Instant;

use crate::metrics::Outcome;
use crate::upstream::{Place, Upstream};
use crate::usage::account::Accountant;
use crate::usage::log::UsageEvent;
use crate::usage::Usage;

pub struct Record {
    upstream: Arc<Upstream>,
    accountant: Arc<Accountant>,
    started: Instant,
    request_id: HeaderValue,
    tenant: Arc<str>,
    request_model: Option<String>,
    /// Whether a successful answer should report usage (a completion or
    /// embedding call to a usage-reporting upstream).
    expects_usage: bool,
    status: u16,
    attempts: u32,
    bytes: u64,
    streamed: bool,
    outcome: Option<Outcome>,
    /// `(model, usage)` read from the answer, when it was tapped.
    reported: Option<(Option<String>, Option<Usage>)>,
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
        upstream: Arc<Upstream>,
        accountant: Arc<Accountant>,
        started: Instant,
        request_id: HeaderValue,
        tenant: Arc<str>,
    ) -> Self {
        Self {
            upstream,
            accountant,
            started,
            request_id,
            tenant,
            request_model: None,
            expects_usage: false,
            status: 0,
            attempts: 0,
            bytes: 0,
            streamed: false,
            outcome: None,
            reported: None,
            place: None,
        }
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

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn set_request(&mut self, model: Option<String>, expects_usage: bool) {
        self.request_model = model;
        self.expects_usage = expects_usage;
    }

    /// Counts the request under the upstream that answers it (a fallback).
    pub fn set_upstream(&mut self, upstream: Arc<Upstream>) {
        self.upstream = upstream;
    }

    /// Keeps the bulkhead place until the request ends.
    pub fn hold(&mut self, place: Place) {
        self.place = Some(place);
    }

    pub fn streamed(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }

    pub fn set_streamed(&mut self, sse: bool) {
        self.streamed = sse;
    }

    pub fn report(&mut self, reported: Option<(Option<String>, Option<Usage>)>) {
        self.reported = reported;
    }

    pub fn finish(&mut self, outcome: Outcome) {
        self.outcome.get_or_insert(outcome);
    }

    /// A stream that broke after the status went out.
    pub fn fail_stream(&mut self, error: &dyn std::fmt::Display) {
        if self.outcome.is_none() {
            tracing::warn!(
                request_id = self.request_id.to_str().unwrap_or("-"),
                upstream = %self.upstream.name,
                error = %error,
                "response stream aborted"
            );
            self.outcome = Some(Outcome::UpstreamError);
        }
    }

    fn account(&mut self, outcome: Outcome, elapsed: std::time::Duration) {
        let up = &self.upstream;
        let (model, usage) = match self.reported.take() {
            Some((model, usage)) => (model.or_else(|| self.request_model.take()), usage),
            None => (self.request_model.take(), None),
        };
        let model_label = model.as_deref().unwrap_or("unknown");
        match &usage {
            Some(usage) => {
                self.accountant
                    .count(&up.name, model_label, &self.tenant, usage);
                up.state
                    .charge_tokens(&self.tenant, usage.total(), Instant::now());
            }
            None if self.expects_usage
                && outcome == Outcome::Ok
                && (200..300).contains(&self.status) =>
            {
                up.metrics.usage_missing.inc();
            }
            None => {}
        }
        if let Some(log) = &self.accountant.log {
            log.record(UsageEvent {
                ts: SystemTime::now(),
                request_id: self.request_id.to_str().unwrap_or("-").to_owned(),
                upstream: up.name.clone(),
                tenant: self.tenant.clone(),
                model,
                status: self.status,
                attempts: self.attempts,
                prompt_tokens: usage.as_ref().map(|u| u.prompt),
                completion_tokens: usage.as_ref().map(|u| u.completion),
                duration_ms: elapsed.as_secs_f64() * 1000.0,
                streamed: self.streamed,
            });
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        self.place.take();
        let outcome = self.outcome.unwrap_or(Outcome::Cancelled);
        if self.status == 0 {
            self.status = CLIENT_CLOSED;
        }
        let elapsed = self.started.elapsed();
        let m = &self.upstream.metrics;
        m.request(self.status, outcome).inc();
        m.duration.observe(elapsed.as_secs_f64());
        tracing::debug!(
            target: "weir::access",
            request_id = self.request_id.to_str().unwrap_or("-"),
            upstream = %self.upstream.name,
            status = self.status,
            outcome = outcome.as_str(),
            attempts = self.attempts,
            bytes = self.bytes,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
        );
        self.account(outcome, elapsed);
    }
}
