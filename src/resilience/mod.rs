//! The resilience primitives: small state machines that never await, never
//! log and never touch metrics. Time is passed in (`tokio::time::Instant`,
//! so tests can pause the clock) and randomness is injected; they return what
//! happened and the request pipeline (`crate::proxy`) logs and counts.
//!
//! - [`backoff`]: exponential backoff with full jitter, and the waits an
//!   upstream demands (`Retry-After`, `x-ratelimit-reset-*`).
//! - [`budget`]: retries kept under a share of requests.
//! - [`breaker`]: the circuit breaker.
//! - [`bulkhead`]: at most N requests at the upstream, a bounded FIFO queue.
//! - [`bucket`]: token buckets for rate limits.
//! - [`retry`]: after a failed attempt, retry after a wait or give up.

pub mod backoff;
pub mod breaker;
pub mod bucket;
pub mod budget;
pub mod bulkhead;
pub mod retry;
