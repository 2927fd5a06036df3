//! The retry decision: after a failed attempt, retry after this wait, or
//! give up, and why.
//!
//! Why one pure function? Every rule of when weir may try again is here, in
//! the order it applies, with time and randomness passed in: the policy's
//! list (`retry.on`), the upstream saying waiting will not help (an
//! `insufficient_quota` 429), the wait it demands (`Retry-After`,
//! `retry-after-ms`, `x-ratelimit-reset-*`, capped at `backoff.max`), the
//! attempts left, a body that can still be sent, the request's deadline, and
//! last the retry budget, the only rule that spends something. The proxy
//! only gathers the facts, asks, and sleeps or answers.
//!
//! A give-up says whether the upstream is *exhausted* (a fallback may take
//! over) or the answer is *final* (the client gets it as it is): a failure
//! the policy does not retry, or one the upstream says will not pass by
//! waiting, is final.

use std::time::Duration;

use tokio::time::Instant;

use super::backoff::Backoff;
use super::budget::RetryBudget;
use crate::config::{RetryOn, RetryPolicy};

/// What a failed attempt produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection, or it closed before the response headers.
    Connect,
    /// No response headers within `timeouts.first_byte`.
    Timeout,
    /// An answer whose status is in `retry.on`.
    Status(u16),
    /// A 429 that says the account is out of quota (`insufficient_quota`):
    /// it will not pass by waiting.
    Quota,
}

/// One failed attempt, as the proxy saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    pub failure: Failure,
    /// The wait the upstream demanded, if it named one.
    pub demanded: Option<Duration>,
    /// Whether the request body can be sent again.
    pub replayable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Retry { wait: Duration },
    GiveUp(GiveUp),
}

/// Why no retry follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// `retry.on` does not list the failure.
    NotListed,
    /// Out of quota: waiting will not help.
    Quota,
    /// The upstream demands a longer wait than `backoff.max`: the client
    /// decides whether to wait that long.
    DemandedTooLong(Duration),
    /// `retry.attempts` are spent.
    AttemptsSpent,
    /// The body streamed through once and cannot be sent again.
    BodySent,
    /// The wait would end past the request's `timeouts.total`.
    Deadline,
    /// The retry budget is spent.
    BudgetSpent,
}

impl GiveUp {
    /// Whether the upstream is exhausted, so a fallback may take over; else
    /// the answer goes to the client as it is.
    pub fn exhausted(self) -> bool {
        !matches!(
            self,
            GiveUp::NotListed | GiveUp::Quota | GiveUp::DemandedTooLong(_)
        )
    }
}

/// An upstream's retry rules, compiled once from its `retry` policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryRules {
    attempts: u32,
    on: Vec<RetryOn>,
    respect_retry_after: bool,
    max_wait: Duration,
    backoff: Backoff,
}

impl RetryRules {
    pub fn new(policy: &RetryPolicy) -> Self {
        Self {
            attempts: policy.attempts.max(1),
            on: policy.on.clone(),
            respect_retry_after: policy.respect_retry_after,
            max_wait: policy.backoff.max,
            backoff: Backoff::new(policy.backoff.base, policy.backoff.max),
        }
    }

    /// Whether an answer with `status` is a failure to retry (else it goes
    /// to the client as the upstream's answer).
    pub fn retries_status(&self, status: u16) -> bool {
        self.on.contains(&RetryOn::Status(status))
    }

    fn lists(&self, failure: Failure) -> bool {
        match failure {
            Failure::Connect => self.on.contains(&RetryOn::Connect),
            Failure::Timeout => self.on.contains(&RetryOn::Timeout),
            Failure::Status(status) => self.retries_status(status),
            Failure::Quota => self.retries_status(429),
        }
    }

    /// Decides what follows `attempt`. `jitter` is uniform in `[0, 1)`;
    /// `deadline` is the request's `timeouts.total`. Only a retry withdraws
    /// from `budget`.
    pub fn decide(
        &self,
        attempt: &Attempt,
        jitter: f64,
        now: Instant,
        deadline: Instant,
        budget: &mut RetryBudget,
    ) -> Decision {
        use Decision::GiveUp as Stop;
        if !self.lists(attempt.failure) {
            return Stop(GiveUp::NotListed);
        }
        if attempt.failure == Failure::Quota {
            return Stop(GiveUp::Quota);
        }
        let mut wait = self.backoff.delay(attempt.number.saturating_sub(1), jitter);
        if let Some(demanded) = attempt.demanded.filter(|_| self.respect_retry_after) {
            if demanded > self.max_wait {
                return Stop(GiveUp::DemandedTooLong(demanded));
            }
            wait = demanded;
        }
        if attempt.number >= self.attempts {
            return Stop(GiveUp::AttemptsSpent);
        }
        if !attempt.replayable {
            return Stop(GiveUp::BodySent);
        }
        if now.checked_add(wait).is_none_or(|end| end >= deadline) {
            return Stop(GiveUp::Deadline);
        }
        if !budget.withdraw(now) {
            return Stop(GiveUp::BudgetSpent);
        }
        Decision::Retry { wait }
    }
}

#[cfg(test)]
mod tests;
