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
    Closed,
    Open,
    HalfOpen,
}

impl State {
    /// The value of `weir_circuit_state`.
    pub fn gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
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

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open {
        since: Instant,
    },
    /// `running` trials admitted and not yet recorded; `passed` succeeded.
    HalfOpen {
        running: u32,
        passed: u32,
    },
}

#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    consecutive_failures: u32,
    failure_rate: f64,
    min_requests: u64,
    open_for: Duration,
    trials: u32,
    phase: Phase,
    generation: u64,
    /// Failures in a row while closed.
    streak: u32,
    results: SlidingWindow<Tally>,
}

impl CircuitBreaker {
    /// Refuses zero thresholds, a `failure_rate` outside (0, 1], and a zero
    /// `window` or `open_for`.
    pub fn try_new(policy: &BreakerPolicy, now: Instant) -> Result<Self, String> {
        let positive = [
            ("consecutive_failures", policy.consecutive_failures),
            ("min_requests", policy.min_requests),
            ("half_open_requests", policy.half_open_requests),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(format!("circuit_breaker.{name} must be at least 1"));
        }
        if !(policy.failure_rate > 0.0 && policy.failure_rate <= 1.0) {
            return Err("circuit_breaker.failure_rate must be above 0 and at most 1".into());
        }
        if policy.window.is_zero() || policy.open_for.is_zero() {
            return Err("circuit_breaker.window and open_for must be longer than zero".into());
        }
        Ok(Self {
            consecutive_failures: policy.consecutive_failures,
            failure_rate: policy.failure_rate,
            min_requests: u64::from(policy.min_requests),
            open_for: policy.open_for,
            trials: policy.half_open_requests,
            phase: Phase::Closed,
            generation: 0,
            streak: 0,
            results: SlidingWindow::new(policy.window, now),
        })
    }

    pub fn state(&self) -> State {
        match self.phase {
            Phase::Closed => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// May a request go? Open turns half-open at the first call once
    /// `open_for` has passed; that call is the first trial.
    pub fn admit(&mut self, now: Instant) -> (Admission, Option<Transition>) {
        match self.phase {
            Phase::Closed => (Admission::Allow(self.permit()), None),
            Phase::Open { since } => {
                let open = now.saturating_duration_since(since);
                if open < self.open_for {
                    let retry_after = self.open_for - open;
                    return (Admission::Reject { retry_after }, None);
                }
                let transition = self.enter(
                    Phase::HalfOpen {
                        running: 1,
                        passed: 0,
                    },
                    now,
                );
                (Admission::Allow(self.permit()), Some(transition))
            }
            Phase::HalfOpen { running, passed } => {
                // Never more trials than needed to close: running + passed.
                if running.saturating_add(passed) >= self.trials {
                    let retry_after = TRIALS_RUNNING.min(self.open_for);
                    return (Admission::Reject { retry_after }, None);
                }
                self.phase = Phase::HalfOpen {
                    running: running + 1,
                    passed,
                };
                (Admission::Allow(self.permit()), None)
            }
        }
    }

    /// Records the result of a request admitted with `permit`. Results from
    /// an earlier generation change nothing.
    pub fn record(&mut self, permit: Permit, outcome: Outcome, now: Instant) -> Option<Transition> {
        if permit.generation != self.generation {
            return None;
        }
        match (self.phase, outcome) {
            (Phase::Closed, Outcome::Success) => {
                self.streak = 0;
                let tally = self.results.slot(now);
                tally.successes = tally.successes.saturating_add(1);
                None
            }
            (Phase::Closed, Outcome::Failure) => {
                self.streak = self.streak.saturating_add(1);
                let tally = self.results.slot(now);
                tally.failures = tally.failures.saturating_add(1);
                self.tripped(now)
                    .then(|| self.enter(Phase::Open { since: now }, now))
            }
            // A duplicate record of a trial (permits are `Copy`) finds none running.
            (Phase::HalfOpen { running: 0, .. }, _) => None,
            (Phase::HalfOpen { running, passed }, Outcome::Success) => {
                if passed + 1 >= self.trials {
                    return Some(self.enter(Phase::Closed, now));
                }
                self.phase = Phase::HalfOpen {
                    running: running - 1,
                    passed: passed + 1,
                };
                None
            }
            (Phase::HalfOpen { .. }, Outcome::Failure) => {
                Some(self.enter(Phase::Open { since: now }, now))
            }
            (Phase::HalfOpen { running, passed }, Outcome::Ignored) => {
                self.phase = Phase::HalfOpen {
                    running: running - 1,
                    passed,
                };
                None
            }
            (Phase::Closed, Outcome::Ignored) | (Phase::Open { .. }, _) => None,
        }
    }

    fn permit(&self) -> Permit {
        Permit {
            generation: self.generation,
            probe: matches!(self.phase, Phase::HalfOpen { .. }),
        }
    }

    /// Consecutive failures reached, or enough results and too many failed.
    fn tripped(&mut self, now: Instant) -> bool {
        if self.streak >= self.consecutive_failures {
            return true;
        }
        let (successes, failures) = self
            .results
            .slots(now)
            .iter()
            .fold((0u64, 0u64), |(s, f), t| {
                (s.saturating_add(t.successes), f.saturating_add(t.failures))
            });
        let results = successes.saturating_add(failures);
        results >= self.min_requests && failures as f64 / results as f64 >= self.failure_rate
    }

    /// Moves to `phase` with fresh counters and a new generation.
    fn enter(&mut self, phase: Phase, now: Instant) -> Transition {
        let from = self.state();
        self.phase = phase;
        self.generation = self.generation.wrapping_add(1);
        self.streak = 0;
        self.results.slot(now);
        self.results.clear();
        Transition {
            from,
            to: self.state(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use Outcome::{Failure, Ignored, Success};

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    fn policy(consecutive: u32, rate: f64, min_requests: u32, trials: u32) -> BreakerPolicy {
        BreakerPolicy {
            consecutive_failures: consecutive,
            failure_rate: rate,
            min_requests,
            window: 10 * S,
            open_for: 30 * S,
            half_open_requests: trials,
        }
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

    const OPENED: Option<Transition> = Some(Transition {
        from: State::Closed,
        to: State::Open,
    });

    /// A breaker with three trials, opened at `t0`.
    fn opened(t0: Instant) -> CircuitBreaker {
        let mut breaker = CircuitBreaker::try_new(&policy(1, 0.5, 20, 3), t0).unwrap();
        assert_eq!(call(&mut breaker, Failure, t0), OPENED);
        breaker
    }

    #[test]
    fn refuses_zero_thresholds_and_bad_rates() {
        let t0 = Instant::now();
        for bad in [
            policy(0, 0.5, 1, 1),
            policy(1, 0.5, 0, 1),
            policy(1, 0.5, 1, 0),
        ] {
            assert!(CircuitBreaker::try_new(&bad, t0).is_err());
        }
        for rate in [0.0, 1.5, f64::NAN] {
            assert!(CircuitBreaker::try_new(&policy(1, rate, 1, 1), t0).is_err());
        }
        let zero_window = BreakerPolicy {
            window: Duration::ZERO,
            ..policy(1, 1.0, 1, 1)
        };
        assert!(CircuitBreaker::try_new(&zero_window, t0).is_err());
        assert_eq!(State::HalfOpen.gauge(), 2);
        assert_eq!(State::HalfOpen.as_str(), "half_open");
    }

    #[test]
    fn opens_after_consecutive_failures() {
        let t0 = Instant::now();
        let mut breaker = CircuitBreaker::try_new(&policy(3, 1.0, 100, 1), t0).unwrap();
        for outcome in [Failure, Failure, Success, Failure, Ignored, Failure] {
            assert_eq!(
                call(&mut breaker, outcome, t0),
                None,
                "a success resets the run"
            );
        }
        assert_eq!(call(&mut breaker, Failure, t0), OPENED);
        assert_eq!(breaker.state(), State::Open);
    }

    #[test]
    fn opens_on_failure_rate_once_min_requests_reached() {
        let t0 = Instant::now();
        let mut breaker = CircuitBreaker::try_new(&policy(100, 0.5, 10, 1), t0).unwrap();
        for outcome in [
            Failure, Failure, Failure, Success, Success, Success, Success, Success,
        ] {
            assert_eq!(call(&mut breaker, outcome, t0), None);
        }
        assert_eq!(
            call(&mut breaker, Failure, t0 + S),
            None,
            "4 of 9: too few results"
        );
        assert_eq!(call(&mut breaker, Failure, t0 + S), OPENED, "5 of 10");
    }

    #[test]
    fn old_results_slide_out_of_the_window() {
        let t0 = Instant::now();
        for (later, expected) in [(t0 + 9999 * MS, OPENED), (t0 + 10 * S, None)] {
            let mut breaker = CircuitBreaker::try_new(&policy(100, 0.5, 4, 1), t0).unwrap();
            for _ in 0..3 {
                assert_eq!(call(&mut breaker, Failure, t0), None, "too few results");
            }
            assert_eq!(call(&mut breaker, Failure, later), expected);
        }
    }

    #[test]
    fn rejects_with_the_time_left_while_open() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        let reject = |retry_after| (Admission::Reject { retry_after }, None);
        assert_eq!(breaker.admit(t0 + 10 * S), reject(20 * S));
        assert_eq!(breaker.admit(t0 + 29 * S), reject(S));
        let (admission, transition) = breaker.admit(t0 + 30 * S);
        assert!(matches!(admission, Admission::Allow(p) if p.is_probe()));
        assert_eq!(
            transition,
            Some(Transition {
                from: State::Open,
                to: State::HalfOpen
            })
        );
    }

    #[test]
    fn half_open_admits_only_the_trial_requests() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        let later = t0 + 30 * S;
        let first = allow(&mut breaker, later);
        allow(&mut breaker, later);
        allow(&mut breaker, later);
        assert_eq!(breaker.admit(later).0, Admission::Reject { retry_after: S });
        assert_eq!(breaker.record(first, Success, later), None);
        assert!(
            matches!(breaker.admit(later).0, Admission::Reject { .. }),
            "3 of 3 used"
        );
    }

    #[test]
    fn closes_after_all_trials_succeed() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        let later = t0 + 30 * S;
        let trials = [0; 3].map(|_| allow(&mut breaker, later));
        assert_eq!(breaker.record(trials[0], Success, later), None);
        assert_eq!(breaker.record(trials[1], Success, later), None);
        let closed = Some(Transition {
            from: State::HalfOpen,
            to: State::Closed,
        });
        assert_eq!(breaker.record(trials[2], Success, later), closed);
        assert!(!allow(&mut breaker, later).is_probe());
    }

    #[test]
    fn reopens_when_a_trial_fails() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        let later = t0 + 30 * S;
        let trials = [0; 2].map(|_| allow(&mut breaker, later));
        assert_eq!(breaker.record(trials[0], Success, later), None);
        let reopened = Some(Transition {
            from: State::HalfOpen,
            to: State::Open,
        });
        assert_eq!(breaker.record(trials[1], Failure, later), reopened);
        assert_eq!(
            breaker.admit(later + S).0,
            Admission::Reject {
                retry_after: 29 * S
            }
        );
    }

    #[test]
    fn ignored_results_free_trial_slots() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        let later = t0 + 30 * S;
        let trials = [0; 3].map(|_| allow(&mut breaker, later));
        assert_eq!(breaker.record(trials[0], Ignored, later), None);
        let again = allow(&mut breaker, later);
        assert!(matches!(breaker.admit(later).0, Admission::Reject { .. }));
        for permit in [trials[1], trials[2]] {
            assert_eq!(breaker.record(permit, Success, later), None);
        }
        assert!(
            breaker.record(again, Success, later).is_some(),
            "three real successes"
        );
    }

    #[test]
    fn stale_permits_are_ignored() {
        let t0 = Instant::now();
        let mut breaker = CircuitBreaker::try_new(&policy(1, 0.5, 20, 1), t0).unwrap();
        let slow = allow(&mut breaker, t0);
        assert_eq!(call(&mut breaker, Failure, t0), OPENED);
        let trial = allow(&mut breaker, t0 + 30 * S);
        assert_eq!(breaker.record(slow, Success, t0 + 31 * S), None);
        assert_eq!(breaker.state(), State::HalfOpen);
        assert!(breaker.record(trial, Success, t0 + 31 * S).is_some());
        assert_eq!(
            breaker.record(trial, Failure, t0 + 31 * S),
            None,
            "from half-open"
        );
        assert_eq!(breaker.state(), State::Closed);
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
            let mut breaker = CircuitBreaker::try_new(&policy(consecutive, rate, min_requests, trials), now).unwrap();
            let mut held: Vec<Permit> = Vec::new();
            for op in ops {
                let transition = match op {
                    Op::Admit => match breaker.admit(now) {
                        (Admission::Allow(permit), t) => { held.push(permit); t }
                        (Admission::Reject { retry_after }, t) => {
                            prop_assert!(retry_after > Duration::ZERO && retry_after <= 30 * S);
                            prop_assert_ne!(breaker.state(), State::Closed);
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
                if let Phase::HalfOpen { running, passed } = breaker.phase {
                    let current = held.iter().filter(|p| p.generation == breaker.generation).count();
                    prop_assert!(held.iter().all(|p| p.generation != breaker.generation || p.probe));
                    prop_assert_eq!(current, running as usize);
                    prop_assert!(running + passed <= trials);
                }
            }
        }
    }
}
