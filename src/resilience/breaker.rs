//! The circuit breaker.
//!
//! Why a breaker when there are retries and budgets? Those decide whether one
//! request tries again; none of them notices that the upstream as a whole is
//! down. A breaker does: after a run of failures, or a high failure rate over
//! a window, it stops sending for `open_for`, so clients fail fast (or go to
//! the fallback) instead of queueing behind timeouts, and the upstream gets
//! room to recover. Then a few trial requests decide whether it has.
//!
//! The states follow resilience4j: a sliding time window of 10 slots, with a
//! minimum number of results before the rate counts; consecutive failures as
//! a second, faster trigger; a half-open state with a fixed number of trials.
//! Each transition starts a new generation: a result recorded with a
//! [`Permit`] from an earlier generation is ignored, so a slow response from
//! before the breaker opened cannot close it.
//!
//! Every [`Permit`] must be recorded, as [`Outcome::Ignored`] if nothing is
//! known (the client went away): an unrecorded trial keeps its slot.

use std::time::Duration;

use tokio::time::Instant;

use super::budget::SlidingWindow;
use crate::config::BreakerPolicy;

/// The `retry_after` of a request turned away while trials are running: a
/// trial usually answers within a second or so, and `Retry-After` speaks in
/// whole seconds. Never longer than `open_for`.
const TRIALS_RUNNING: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl State {
    /// The value of `weir_circuit_state`: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> i64 {
        self as i64
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// Leave to send one request; give it back to [`CircuitBreaker::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    generation: u64,
    probe: bool,
}

impl Permit {
    /// Whether this request is a half-open trial.
    pub fn is_probe(self) -> bool {
        self.probe
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allow(Permit),
    Reject { retry_after: Duration },
}

/// What a request's result means to the breaker. `Ignored`: a cancelled
/// request, or a 429 (the upstream is up, only busy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
}

#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    successes: u64,
    failures: u64,
}

/// A breaker setting that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit_breaker.{field} {message}")]
pub struct BreakerError {
    pub field: &'static str,
    pub message: &'static str,
}

#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    consecutive_failures: u32,
    failure_rate: f64,
    min_requests: u64,
    open_for: Duration,
    trials: u32,
    state: State,
    /// Bumped on every transition; permits carry the one they were issued in.
    generation: u64,
    /// When the state last changed: the start of `open_for` when open.
    since: Instant,
    /// Closed: failures in a row, and the results in the window.
    streak: u32,
    results: SlidingWindow<Tally>,
    /// Half-open: trials admitted and not yet recorded, and trials passed.
    running: u32,
    passed: u32,
}

impl CircuitBreaker {
    /// Refuses the settings [`BreakerPolicy::problems`] names: zero
    /// thresholds, a `failure_rate` outside (0, 1], a zero `window` or
    /// `open_for`. `weir check` reports the same rules, so a loaded policy
    /// always passes.
    pub fn try_new(policy: &BreakerPolicy, now: Instant) -> Result<Self, BreakerError> {
        if let Some((field, message)) = policy.problems().next() {
            return Err(BreakerError { field, message });
        }
        Ok(Self {
            consecutive_failures: policy.consecutive_failures,
            failure_rate: policy.failure_rate,
            min_requests: u64::from(policy.min_requests),
            open_for: policy.open_for,
            trials: policy.half_open_requests,
            state: State::Closed,
            generation: 0,
            since: now,
            streak: 0,
            results: SlidingWindow::new(policy.window, now),
            running: 0,
            passed: 0,
        })
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// May a request go? Open turns half-open at the first call once
    /// `open_for` has passed, and that call is the first trial. Half-open
    /// admits no more trials than it takes to close (running + passed).
    pub fn admit(&mut self, now: Instant) -> (Admission, Option<Transition>) {
        let mut transition = None;
        match self.state {
            State::Closed => {}
            State::Open => {
                let open = now.saturating_duration_since(self.since);
                if open < self.open_for {
                    let retry_after = self.open_for - open;
                    return (Admission::Reject { retry_after }, None);
                }
                transition = Some(self.enter(State::HalfOpen, now));
            }
            State::HalfOpen => {
                if self.running.saturating_add(self.passed) >= self.trials {
                    let retry_after = TRIALS_RUNNING.min(self.open_for);
                    return (Admission::Reject { retry_after }, None);
                }
            }
        }
        let probe = self.state == State::HalfOpen;
        if probe {
            self.running += 1;
        }
        let generation = self.generation;
        (Admission::Allow(Permit { generation, probe }), transition)
    }

    /// Records the result of a request admitted with `permit`. Results from
    /// an earlier generation change nothing.
    pub fn record(&mut self, permit: Permit, outcome: Outcome, now: Instant) -> Option<Transition> {
        if permit.generation != self.generation || permit.probe != (self.state == State::HalfOpen) {
            return None;
        }
        match (self.state, outcome) {
            (State::Closed, Outcome::Success) => {
                self.streak = 0;
                self.results.slot(now).successes += 1;
            }
            (State::Closed, Outcome::Failure) => {
                self.streak = self.streak.saturating_add(1);
                self.results.slot(now).failures += 1;
                if self.tripped(now) {
                    return Some(self.enter(State::Open, now));
                }
            }
            // `running` is 0 only if a trial's (`Copy`) permit is recorded twice.
            (State::HalfOpen, _) if self.running > 0 => {
                self.running -= 1;
                match outcome {
                    Outcome::Success => self.passed += 1,
                    Outcome::Failure => return Some(self.enter(State::Open, now)),
                    Outcome::Ignored => {}
                }
                if self.passed >= self.trials {
                    return Some(self.enter(State::Closed, now));
                }
            }
            _ => {}
        }
        None
    }

    /// Consecutive failures reached, or enough results and too many failed.
    fn tripped(&mut self, now: Instant) -> bool {
        let window = self.results.slots(now).iter();
        let (successes, failures) = window.fold((0, 0), |(s, f), tally| {
            (s + tally.successes, f + tally.failures)
        });
        let results = successes + failures;
        self.streak >= self.consecutive_failures
            || (results >= self.min_requests
                && failures as f64 / results as f64 >= self.failure_rate)
    }

    /// Moves to `to` with fresh counters and a new generation.
    fn enter(&mut self, to: State, now: Instant) -> Transition {
        let from = std::mem::replace(&mut self.state, to);
        self.generation = self.generation.wrapping_add(1);
        self.since = now;
        self.streak = 0;
        self.results.clear();
        (self.running, self.passed) = (0, 0);
        Transition { from, to }
    }
}

#[cfg(test)]
mod tests {
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
}
