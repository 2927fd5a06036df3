//! One upstream's resilience state, behind short locks that are never held
//! across an `.await`: the breaker, the retry budget, the bulkhead and the
//! request rate limiter. Transitions are logged and counted here, so the
//! primitives in `crate::resilience` stay pure.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus::IntGauge;
use tokio::time::Instant;

use crate::config::{RateLimitKey, UpstreamPolicy};
use crate::metrics::UpstreamMetrics;
use crate::resilience::breaker::{
    self, Admission, BreakerError, CircuitBreaker, Permit, Transition,
};
use crate::resilience::bucket::{KeyedBuckets, TokenBucket};
use crate::resilience::budget::RetryBudget;
use crate::resilience::bulkhead::{Bulkhead, Pass};

/// How many tenants get a bucket of their own before idle ones are evicted.
const MAX_TENANT_BUCKETS: usize = 10_000;

/// The window of the retry budget (Finagle's and linkerd's default).
const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// The window of `tokens_per_minute`.
const TOKEN_WINDOW: Duration = Duration::from_secs(60);

/// Each part is shared so that a reload can carry it into the upstream's
/// next state when the policy it depends on did not change.
pub struct UpstreamState {
    breaker: Arc<Mutex<CircuitBreaker>>,
    budget: Arc<Mutex<RetryBudget>>,
    pub bulkhead: Arc<Bulkhead>,
    limiter: Option<Arc<RequestLimiter>>,
    /// `tokens_per_minute`: charged after the fact, may go into debt.
    tokens: Option<Arc<RequestLimiter>>,
}

/// Buckets for one rate, global or one per tenant.
enum RequestLimiter {
    Global(Mutex<TokenBucket>),
    Tenant(Mutex<KeyedBuckets>),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded state machines never panic mid-update; a poisoned lock
    // still holds consistent state.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl UpstreamState {
    pub fn try_new(policy: &UpstreamPolicy) -> Result<Self, BreakerError> {
        let now = Instant::now();
        let keyed = |key: RateLimitKey, rate: f64, burst: f64| match key {
            RateLimitKey::Global => {
                RequestLimiter::Global(Mutex::new(TokenBucket::new(rate, burst, now)))
            }
            RateLimitKey::Tenant => RequestLimiter::Tenant(Mutex::new(KeyedBuckets::new(
                rate,
                burst,
                MAX_TENANT_BUCKETS,
            ))),
        };
        let limiter = policy.rate_limit.as_ref().and_then(|rl| {
            let rate = rl.requests_per_second?;
            let burst = rl.burst.map_or(rate.ceil().max(1.0), f64::from);
            Some(Arc::new(keyed(rl.key, rate, burst)))
        });
        let tokens = policy.rate_limit.as_ref().and_then(|rl| {
            let per_minute = rl.tokens_per_minute? as f64;
            Some(Arc::new(keyed(rl.key, per_minute / 60.0, per_minute)))
        });
        let c = &policy.concurrency;
        Ok(Self {
            breaker: Arc::new(Mutex::new(CircuitBreaker::try_new(
                &policy.circuit_breaker,
                now,
            )?)),
            budget: Arc::new(Mutex::new(RetryBudget::new(
                policy.retry.budget.ratio,
                policy.retry.budget.min_per_second,
                BUDGET_WINDOW,
                now,
            ))),
            bulkhead: Bulkhead::new(c.max_in_flight, c.max_queue, c.queue_timeout),
            limiter,
            tokens,
        })
    }

    /// The state for `new`, keeping from `old` (built for `old_policy`) every
    /// part whose policy did not change: an open breaker stays open across a
    /// retry change, a tenant's bucket keeps its debt across a timeout
    /// change. The bulkhead is always kept and resized, so requests in
    /// flight keep their places.
    pub fn carry(
        &self,
        old_policy: &UpstreamPolicy,
        new: &UpstreamPolicy,
    ) -> Result<Self, BreakerError> {
        let mut next = Self::try_new(new)?;
        if old_policy.circuit_breaker == new.circuit_breaker {
            next.breaker = self.breaker.clone();
        }
        if old_policy.retry.budget == new.retry.budget {
            next.budget = self.budget.clone();
        }
        let c = &new.concurrency;
        self.bulkhead
            .resize(c.max_in_flight, c.max_queue, c.queue_timeout);
        next.bulkhead = self.bulkhead.clone();
        let (old_rl, new_rl) = (old_policy.rate_limit.as_ref(), new.rate_limit.as_ref());
        let request_part = |rl: Option<&crate::config::RateLimitPolicy>| {
            rl.map(|r| (r.requests_per_second.map(f64::to_bits), r.burst, r.key))
        };
        if request_part(old_rl) == request_part(new_rl) {
            next.limiter = self.limiter.clone();
        }
        let token_part =
            |rl: Option<&crate::config::RateLimitPolicy>| rl.map(|r| (r.tokens_per_minute, r.key));
        if token_part(old_rl) == token_part(new_rl) {
            next.tokens = self.tokens.clone();
        }
        Ok(next)
    }

    /// The request rate limit: `Err(wait)` when spent.
    pub fn limit_request(&self, tenant: &str, now: Instant) -> Result<(), Duration> {
        match self.limiter.as_deref() {
            None => Ok(()),
            Some(RequestLimiter::Global(bucket)) => lock(bucket).try_withdraw(1.0, now),
            Some(RequestLimiter::Tenant(buckets)) => lock(buckets).try_withdraw(tenant, 1.0, now),
        }
    }

    /// The token rate limit: `Err(wait)` while the key is in debt, the wait
    /// computed from the refill rate but never more than the limit's window
    /// (a minute): a client told to come back then may be told again, never
    /// sent away for longer than the limit itself spans.
    pub fn limit_tokens(&self, tenant: &str, now: Instant) -> Result<(), Duration> {
        let checked = match self.tokens.as_deref() {
            None => Ok(()),
            Some(RequestLimiter::Global(bucket)) => lock(bucket).check(now),
            Some(RequestLimiter::Tenant(buckets)) => lock(buckets).check(tenant, now),
        };
        checked.map_err(|wait| wait.min(TOKEN_WINDOW))
    }

    /// Charges the tokens a finished request really used.
    pub fn charge_tokens(&self, tenant: &str, tokens: u64, now: Instant) {
        match self.tokens.as_deref() {
            None => {}
            Some(RequestLimiter::Global(bucket)) => lock(bucket).charge(tokens as f64, now),
            Some(RequestLimiter::Tenant(buckets)) => {
                lock(buckets).charge(tenant, tokens as f64, now)
            }
        }
    }

    pub fn deposit(&self, now: Instant) {
        lock(&self.budget).deposit(now);
    }

    /// Runs `decide` with the retry budget, under its short lock.
    pub fn with_budget<T>(&self, decide: impl FnOnce(&mut RetryBudget) -> T) -> T {
        decide(&mut lock(&self.budget))
    }

    pub fn breaker_state(&self) -> breaker::State {
        lock(&self.breaker).state()
    }

    pub fn admit(&self, name: &str, metrics: &UpstreamMetrics, now: Instant) -> Admission {
        let (admission, transition) = lock(&self.breaker).admit(now);
        if let Some(t) = transition {
            report(name, metrics, t);
        }
        admission
    }

    pub fn record(
        &self,
        name: &str,
        metrics: &UpstreamMetrics,
        permit: Permit,
        outcome: breaker::Outcome,
        now: Instant,
    ) {
        let transition = lock(&self.breaker).record(permit, outcome, now);
        if let Some(t) = transition {
            report(name, metrics, t);
        }
    }
}

fn report(name: &str, metrics: &UpstreamMetrics, t: Transition) {
    metrics.circuit_state.set(t.to.gauge());
    metrics.circuit_transition(t.to.gauge() as usize).inc();
    match t.to {
        breaker::State::Open => {
            tracing::warn!(upstream = name, from = t.from.as_str(), "circuit opened")
        }
        _ => tracing::info!(
            upstream = name,
            from = t.from.as_str(),
            to = t.to.as_str(),
            "circuit state changed"
        ),
    }
}

/// A place at the upstream (a bulkhead permit), counted in `weir_in_flight`
/// for as long as it is held: until the response ends or is dropped.
pub struct Place {
    _pass: Pass,
    gauge: IntGauge,
}

impl Place {
    pub fn new(pass: Pass, gauge: &IntGauge) -> Self {
        gauge.inc();
        Self {
            _pass: pass,
            gauge: gauge.clone(),
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}
