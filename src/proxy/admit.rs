//! Phase 2, admit: a place in the upstream's bulkhead (queueing if needed)
//! and the breaker ticket of one attempt.

use tokio::time::Instant;

use super::{ProxyError, Reject};
use crate::resilience::breaker::{Outcome as BreakerOutcome, Permit};
use crate::resilience::bulkhead::Refusal;
use crate::upstream::{Place, Upstream};

/// A place in the upstream's bulkhead, queueing if needed.
pub(super) async fn enter(up: &Upstream) -> Result<Place, ProxyError> {
    let m = &up.metrics;
    if let Some(permit) = up.state.bulkhead.try_enter() {
        return Ok(Place::new(permit, &m.in_flight));
    }
    let queued = Instant::now();
    let waited = {
        // Leaves the gauge when the wait ends or the client goes away.
        let _depth = GaugeGuard::inc(&m.queue_depth);
        up.state.bulkhead.wait().await
    };
    m.queue_wait.observe(queued.elapsed().as_secs_f64());
    match waited {
        Ok(permit) => Ok(Place::new(permit, &m.in_flight)),
        Err(Refusal::Overloaded) => Err(ProxyError::new(
            Reject::Overloaded,
            format!(
                "upstream `{}` is at its concurrency limit and its queue is full",
                up.name
            ),
        )),
        Err(Refusal::QueueTimeout) => Err(ProxyError::new(
            Reject::QueueTimeout,
            format!(
                "waited {:?} for a place at upstream `{}`",
                up.policy.concurrency.queue_timeout, up.name
            ),
        )),
    }
}

/// Increments a gauge now and decrements it when dropped.
struct GaugeGuard<'a>(&'a prometheus::IntGauge);

impl<'a> GaugeGuard<'a> {
    fn inc(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Records the breaker result exactly once; a request dropped mid-attempt
/// (the client left) frees its half-open trial slot.
pub(super) struct Ticket<'a> {
    pub(super) up: &'a Upstream,
    pub(super) permit: Option<Permit>,
}

impl Ticket<'_> {
    pub(super) fn record(mut self, outcome: BreakerOutcome) {
        if let Some(permit) = self.permit.take() {
            let up = self.up;
            up.state
                .record(&up.name, &up.metrics, permit, outcome, Instant::now());
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            let up = self.up;
            up.state.record(
                &up.name,
                &up.metrics,
                permit,
                BreakerOutcome::Ignored,
                Instant::now(),
            );
        }
    }
}
