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
