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
mod tests;
