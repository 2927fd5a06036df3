use super::*;
use proptest::prelude::*;
use Outcome::{Failure, Ignored, Success};
use State::{Closed, HalfOpen, Open};

const S: Duration = Duration::from_secs(1);

fn breaker(t0: Instant, consecutive: u32, rate: f64, min: u32, trials: u32) -> CircuitBreaker {
    let policy = BreakerPolicy {
        consecutive_failures: consecutive,
        failure_rate: rate,
        min_requests: min,
        window: 10 * S,
        open_for: 30 * S,
        half_open_requests: trials,
    };
    CircuitBreaker::try_new(&policy, t0).unwrap()
}

fn allow(breaker: &mut CircuitBreaker, now: Instant) -> Permit {
    match breaker.admit(now).0 {
        Admission::Allow(permit) => permit,
        reject => panic!("expected a permit, got {reject:?}"),
    }
}

/// Records one result for a fresh permit.
fn call(breaker: &mut CircuitBreaker, outcome: Outcome, now: Instant) -> Option<Transition> {
    let permit = allow(breaker, now);
    breaker.record(permit, outcome, now)
}

fn moved(from: State, to: State) -> Option<Transition> {
    Some(Transition { from, to })
}

fn rejected(retry_after: Duration) -> Admission {
    Admission::Reject { retry_after }
}

/// A breaker with three trials, opened at `t0`.
fn opened(t0: Instant) -> CircuitBreaker {
    let mut breaker = breaker(t0, 1, 0.5, 20, 3);
    assert_eq!(call(&mut breaker, Failure, t0), moved(Closed, Open));
    breaker
}

#[test]
fn refuses_zero_thresholds_and_bad_rates() {
    let spoilers: [fn(&mut BreakerPolicy); 8] = [
        |p| p.consecutive_failures = 0,
        |p| p.min_requests = 0,
        |p| p.half_open_requests = 0,
        |p| p.failure_rate = 0.0,
        |p| p.failure_rate = 1.5,
        |p| p.failure_rate = f64::NAN,
        |p| p.window = Duration::ZERO,
        |p| p.open_for = Duration::ZERO,
    ];
    for spoil in spoilers {
        let mut policy = BreakerPolicy::default();
        spoil(&mut policy);
        assert!(CircuitBreaker::try_new(&policy, Instant::now()).is_err());
    }
    assert_eq!((HalfOpen.gauge(), HalfOpen.as_str()), (2, "half_open"));
}

#[test]
fn opens_after_consecutive_failures() {
    let t0 = Instant::now();
    let mut breaker = breaker(t0, 3, 1.0, 100, 1);
    // A success resets the run; an ignored result does not.
    for outcome in [Failure, Failure, Success, Failure, Ignored, Failure] {
        assert_eq!(call(&mut breaker, outcome, t0), None);
    }
    assert_eq!(call(&mut breaker, Failure, t0), moved(Closed, Open));
    assert_eq!(breaker.state(), Open);
}

#[test]
fn opens_on_failure_rate_once_min_requests_reached() {
    let t0 = Instant::now();
    let mut breaker = breaker(t0, 100, 0.5, 10, 1);
    for outcome in [
        Failure, Failure, Failure, Failure, Success, Success, Success,
    ] {
        assert_eq!(call(&mut breaker, outcome, t0), None);
    }
    assert_eq!(call(&mut breaker, Success, t0 + S), None);
    assert_eq!(call(&mut breaker, Failure, t0 + S), None, "5 of 9");
    assert_eq!(call(&mut breaker, Success, t0 + S), None, "5 of 10");
    assert_eq!(
        call(&mut breaker, Failure, t0 + S),
        moved(Closed, Open),
        "6 of 11"
    );
}

#[test]
fn old_results_slide_out_of_the_window() {
    let t0 = Instant::now();
    for (later, expected) in [(9_999, moved(Closed, Open)), (10_000, None)] {
        let mut breaker = breaker(t0, 100, 0.5, 4, 1);
        for _ in 0..3 {
            assert_eq!(call(&mut breaker, Failure, t0), None, "too few results");
        }
        let later = t0 + Duration::from_millis(later);
        assert_eq!(call(&mut breaker, Failure, later), expected);
    }
}

#[test]
fn rejects_with_the_time_left_while_open() {
    let t0 = Instant::now();
    let mut breaker = opened(t0);
    assert_eq!(breaker.admit(t0 + 10 * S), (rejected(20 * S), None));
    assert_eq!(breaker.admit(t0 + 29 * S), (rejected(S), None));
    let (admission, transition) = breaker.admit(t0 + 30 * S);
    assert!(matches!(admission, Admission::Allow(p) if p.is_probe()));
    assert_eq!(transition, moved(Open, HalfOpen));
}

#[test]
fn half_open_admits_only_the_trial_requests() {
    let later = Instant::now() + 30 * S;
    let mut breaker = opened(later - 30 * S);
    let trials = [0; 3].map(|_| allow(&mut breaker, later));
    assert_eq!(breaker.admit(later).0, rejected(S));
    assert_eq!(breaker.record(trials[0], Success, later), None);
    assert_eq!(
        breaker.admit(later).0,
        rejected(S),
        "one passed, two running"
    );
}

#[test]
fn closes_after_all_trials_succeed() {
    let later = Instant::now() + 30 * S;
    let mut breaker = opened(later - 30 * S);
    let trials = [0; 3].map(|_| allow(&mut breaker, later));
    assert_eq!(breaker.record(trials[0], Success, later), None);
    assert_eq!(breaker.record(trials[1], Success, later), None);
    let closed = breaker.record(trials[2], Success, later);
    assert_eq!(closed, moved(HalfOpen, Closed));
    assert!(!allow(&mut breaker, later).is_probe());
}

#[test]
fn reopens_when_a_trial_fails() {
    let later = Instant::now() + 30 * S;
    let mut breaker = opened(later - 30 * S);
    let trials = [0; 2].map(|_| allow(&mut breaker, later));
    assert_eq!(breaker.record(trials[0], Success, later), None);
    let reopened = breaker.record(trials[1], Failure, later);
    assert_eq!(reopened, moved(HalfOpen, Open));
    assert_eq!(breaker.admit(later + S).0, rejected(29 * S));
}

#[test]
fn ignored_results_free_trial_slots() {
    let later = Instant::now() + 30 * S;
    let mut breaker = opened(later - 30 * S);
    let trials = [0; 3].map(|_| allow(&mut breaker, later));
    assert_eq!(breaker.record(trials[0], Ignored, later), None);
    let again = allow(&mut breaker, later);
    assert_eq!(breaker.admit(later).0, rejected(S));
    for permit in [trials[1], trials[2]] {
        assert_eq!(breaker.record(permit, Success, later), None);
    }
    let closed = breaker.record(again, Success, later);
    assert_eq!(closed, moved(HalfOpen, Closed), "three real successes");
}

#[test]
fn stale_permits_are_ignored() {
    let t0 = Instant::now();
    let mut breaker = breaker(t0, 1, 0.5, 20, 1);
    let slow = allow(&mut breaker, t0);
    assert_eq!(call(&mut breaker, Failure, t0), moved(Closed, Open));
    let trial = allow(&mut breaker, t0 + 30 * S);
    assert_eq!(breaker.record(slow, Success, t0 + 31 * S), None);
    assert_eq!(breaker.state(), HalfOpen);
    assert!(breaker.record(trial, Success, t0 + 31 * S).is_some());
    assert_eq!(breaker.record(trial, Failure, t0 + 31 * S), None);
    assert_eq!(breaker.state(), Closed);
}

#[derive(Debug, Clone)]
enum Op {
    Admit,
    Record(usize, Outcome),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let outcome = prop_oneof![Just(Success), Just(Failure), Just(Ignored)];
    prop_oneof![
        2 => Just(Op::Admit),
        2 => (any::<usize>(), outcome).prop_map(|(i, o)| Op::Record(i, o)),
        1 => (0u64..40_000).prop_map(Op::Advance),
    ]
}

proptest! {
    /// While half-open, the trials admitted and unrecorded never exceed
    /// `half_open_requests`, whatever the callers do.
    #[test]
    fn never_more_trials_than_allowed(
        consecutive in 1u32..5,
        rate in 0.1f64..=1.0,
        min_requests in 1u32..10,
        trials in 1u32..4,
        ops in prop::collection::vec(op(), 1..300),
    ) {
        let mut now = Instant::now();
        let mut breaker = breaker(now, consecutive, rate, min_requests, trials);
        let mut held: Vec<Permit> = Vec::new();
        for op in ops {
            let transition = match op {
                Op::Admit => match breaker.admit(now) {
                    (Admission::Allow(permit), t) => { held.push(permit); t }
                    (Admission::Reject { retry_after }, t) => {
                        prop_assert!(retry_after > Duration::ZERO && retry_after <= 30 * S);
                        prop_assert_ne!(breaker.state(), Closed);
                        t
                    }
                },
                Op::Record(_, _) if held.is_empty() => None,
                Op::Record(i, outcome) => {
                    let permit = held.swap_remove(i % held.len());
                    breaker.record(permit, outcome, now)
                }
                Op::Advance(ms) => { now += Duration::from_millis(ms); None }
            };
            if let Some(t) = transition {
                prop_assert_ne!(t.from, t.to);
                prop_assert_eq!(t.to, breaker.state());
            }
            if breaker.state == HalfOpen {
                let current = held.iter().filter(|p| p.generation == breaker.generation);
                prop_assert_eq!(current.count(), breaker.running as usize);
                prop_assert!(breaker.running + breaker.passed <= trials);
            }
        }
    }
}
