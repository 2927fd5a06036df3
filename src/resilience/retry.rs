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
        if now + wait >= deadline {
            return Stop(GiveUp::Deadline);
        }
        if !budget.withdraw(now) {
            return Stop(GiveUp::BudgetSpent);
        }
        Decision::Retry { wait }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackoffPolicy;

    const MS: Duration = Duration::from_millis(1);

    fn rules(attempts: u32) -> RetryRules {
        RetryRules::new(&RetryPolicy {
            attempts,
            backoff: BackoffPolicy {
                base: 100 * MS,
                max: 1000 * MS,
            },
            ..RetryPolicy::default()
        })
    }

    fn plenty(now: Instant) -> RetryBudget {
        RetryBudget::new(1.0, 1000, Duration::from_secs(10), now)
    }

    fn attempt(number: u32, failure: Failure) -> Attempt {
        Attempt {
            number,
            failure,
            demanded: None,
            replayable: true,
        }
    }

    fn far(now: Instant) -> Instant {
        now + Duration::from_secs(600)
    }

    #[test]
    fn a_listed_failure_is_retried_after_full_jitter_backoff() {
        let now = Instant::now();
        let r = rules(3);
        let mut budget = plenty(now);
        // Jitter 0.5 of the ceiling: 100 ms × 2^(n-1), halved.
        for (number, expected) in [(1, 50), (2, 100)] {
            let d = r.decide(
                &attempt(number, Failure::Status(503)),
                0.5,
                now,
                far(now),
                &mut budget,
            );
            assert_eq!(
                d,
                Decision::Retry {
                    wait: expected * MS
                },
                "attempt {number}"
            );
        }
        let d = r.decide(
            &attempt(1, Failure::Connect),
            0.0,
            now,
            far(now),
            &mut budget,
        );
        assert_eq!(
            d,
            Decision::Retry {
                wait: Duration::ZERO
            }
        );
    }

    #[test]
    fn a_failure_retry_on_does_not_list_is_final() {
        let now = Instant::now();
        let mut r = rules(3);
        r.on = vec![RetryOn::Status(503)];
        let mut budget = plenty(now);
        for failure in [Failure::Connect, Failure::Timeout, Failure::Status(502)] {
            let d = r.decide(&attempt(1, failure), 0.5, now, far(now), &mut budget);
            assert_eq!(d, Decision::GiveUp(GiveUp::NotListed), "{failure:?}");
        }
        assert!(!GiveUp::NotListed.exhausted());
    }

    #[test]
    fn out_of_quota_is_never_retried_and_is_final() {
        let now = Instant::now();
        let d = rules(3).decide(
            &attempt(1, Failure::Quota),
            0.5,
            now,
            far(now),
            &mut plenty(now),
        );
        assert_eq!(d, Decision::GiveUp(GiveUp::Quota));
        assert!(!GiveUp::Quota.exhausted());
    }

    #[test]
    fn a_demanded_wait_replaces_the_backoff_up_to_backoff_max() {
        let now = Instant::now();
        let r = rules(3);
        let mut budget = plenty(now);
        let mut a = attempt(1, Failure::Status(429));
        a.demanded = Some(700 * MS);
        assert_eq!(
            r.decide(&a, 0.9, now, far(now), &mut budget),
            Decision::Retry { wait: 700 * MS }
        );
        a.demanded = Some(1001 * MS);
        let d = r.decide(&a, 0.9, now, far(now), &mut budget);
        assert_eq!(d, Decision::GiveUp(GiveUp::DemandedTooLong(1001 * MS)));
        assert!(!GiveUp::DemandedTooLong(MS).exhausted());
    }

    #[test]
    fn a_demanded_wait_is_ignored_when_respect_retry_after_is_off() {
        let now = Instant::now();
        let mut r = rules(3);
        r.respect_retry_after = false;
        let mut a = attempt(1, Failure::Status(429));
        a.demanded = Some(Duration::from_secs(3600));
        let d = r.decide(&a, 0.0, now, far(now), &mut plenty(now));
        assert_eq!(
            d,
            Decision::Retry {
                wait: Duration::ZERO
            }
        );
    }

    #[test]
    fn the_last_attempt_is_exhausted() {
        let now = Instant::now();
        let d = rules(2).decide(
            &attempt(2, Failure::Timeout),
            0.5,
            now,
            far(now),
            &mut plenty(now),
        );
        assert_eq!(d, Decision::GiveUp(GiveUp::AttemptsSpent));
        let d = rules(1).decide(
            &attempt(1, Failure::Timeout),
            0.5,
            now,
            far(now),
            &mut plenty(now),
        );
        assert_eq!(d, Decision::GiveUp(GiveUp::AttemptsSpent));
        assert!(GiveUp::AttemptsSpent.exhausted());
    }

    #[test]
    fn a_body_already_streamed_is_not_resent() {
        let now = Instant::now();
        let mut a = attempt(1, Failure::Connect);
        a.replayable = false;
        let d = rules(3).decide(&a, 0.5, now, far(now), &mut plenty(now));
        assert_eq!(d, Decision::GiveUp(GiveUp::BodySent));
        assert!(GiveUp::BodySent.exhausted());
    }

    #[test]
    fn a_wait_past_the_deadline_is_not_started() {
        let now = Instant::now();
        let mut a = attempt(1, Failure::Status(503));
        a.demanded = Some(300 * MS);
        let r = rules(3);
        let d = r.decide(&a, 0.0, now, now + 300 * MS, &mut plenty(now));
        assert_eq!(d, Decision::GiveUp(GiveUp::Deadline));
        let d = r.decide(&a, 0.0, now, now + 301 * MS, &mut plenty(now));
        assert_eq!(d, Decision::Retry { wait: 300 * MS });
    }

    #[test]
    fn a_spent_budget_stops_the_retry_and_only_a_retry_withdraws() {
        let now = Instant::now();
        // No floor, no deposits: nothing to withdraw.
        let mut empty = RetryBudget::new(0.0, 0, Duration::from_secs(10), now);
        let r = rules(3);
        let d = r.decide(
            &attempt(1, Failure::Status(503)),
            0.5,
            now,
            far(now),
            &mut empty,
        );
        assert_eq!(d, Decision::GiveUp(GiveUp::BudgetSpent));
        assert!(GiveUp::BudgetSpent.exhausted());

        // One retry's worth: a give-up for another reason keeps it.
        let mut one = RetryBudget::new(1.0, 0, Duration::from_secs(10), now);
        one.deposit(now);
        let final_ = r.decide(
            &attempt(3, Failure::Status(503)),
            0.5,
            now,
            far(now),
            &mut one,
        );
        assert_eq!(final_, Decision::GiveUp(GiveUp::AttemptsSpent));
        let retried = r.decide(
            &attempt(1, Failure::Status(503)),
            0.5,
            now,
            far(now),
            &mut one,
        );
        assert!(matches!(retried, Decision::Retry { .. }));
        let spent = r.decide(
            &attempt(1, Failure::Status(503)),
            0.5,
            now,
            far(now),
            &mut one,
        );
        assert_eq!(spent, Decision::GiveUp(GiveUp::BudgetSpent));
    }

    /// A request's whole retry sequence on the paused clock: the waits the
    /// decisions ask for add up against `timeouts.total`.
    #[tokio::test(start_paused = true)]
    async fn waits_run_against_the_deadline_on_the_paused_clock() {
        let start = Instant::now();
        let deadline = start + 250 * MS;
        let r = rules(5);
        let mut budget = plenty(start);
        let mut waits = Vec::new();
        for number in 1.. {
            let a = attempt(number, Failure::Status(503));
            // Jitter at the top of its range: 100, 200, 400 ms ceilings.
            match r.decide(&a, 0.999_999, Instant::now(), deadline, &mut budget) {
                Decision::Retry { wait } => {
                    waits.push(wait);
                    tokio::time::sleep(wait).await;
                }
                Decision::GiveUp(why) => {
                    assert_eq!(why, GiveUp::Deadline);
                    break;
                }
            }
        }
        assert_eq!(waits.len(), 1, "{waits:?}");
        assert!(waits[0] < 100 * MS && waits[0] > 99 * MS, "{waits:?}");
        // The paused clock sleeps to the next whole millisecond.
        let slept = Instant::now() - start;
        assert!(slept >= waits[0] && slept <= waits[0] + MS, "{slept:?}");
    }
}
