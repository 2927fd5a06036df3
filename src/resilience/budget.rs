//! Retries kept under a share of requests.
//!
//! Why budgets and not max retries? `attempts: 3` bounds what one request may
//! cost, not what all of them cost together: when an upstream is failing for
//! everyone, every request retries and the load on the struggling upstream
//! triples, which is how a blip becomes an outage (a retry storm). A budget
//! bounds retries as a share of recent traffic, so retries smooth over
//! scattered failures but cannot multiply load during a broad one; a small
//! floor keeps retries possible for a quiet upstream. This is Finagle's and
//! linkerd's retry budget (Envoy's `retry_budget` applies the same idea to
//! the requests in flight).
//!
//! Requests and retries are counted in [`SLOTS`] slots of `window / 10` each
//! (one second for the production 10 s window) that slide with time, so
//! memory is constant and nothing is kept per request.

use std::time::Duration;

use tokio::time::Instant;

/// How many slots a sliding window is cut into.
pub(crate) const SLOTS: usize = 10;

/// Slack for `f64` rounding in `ratio × deposits` (e.g. `0.1 × 30`).
const ROUNDING: f64 = 1e-9;

/// Counts kept in [`SLOTS`] slots of equal width that slide with time: the
/// newest slot holds what happened since its start, and a slot is cleared as
/// it falls out. Summing all slots gives the bucket-aligned window: the
/// current slot plus the nine before it. Shared with the circuit breaker.
#[derive(Debug, Clone)]
pub(crate) struct SlidingWindow<C> {
    epoch: Instant,
    width: Duration,
    /// The newest slot, in widths since `epoch`.
    head: u64,
    slots: [C; SLOTS],
}

impl<C: Default + Copy> SlidingWindow<C> {
    /// `window` is cut into [`SLOTS`] slots (at least a nanosecond each).
    pub(crate) fn new(window: Duration, now: Instant) -> Self {
        Self {
            epoch: now,
            width: (window / SLOTS as u32).max(Duration::from_nanos(1)),
            head: 0,
            slots: [C::default(); SLOTS],
        }
    }

    /// The window actually covered: [`SLOTS`] whole slots.
    pub(crate) fn span(&self) -> Duration {
        self.width.saturating_mul(SLOTS as u32)
    }

    /// The slot `now` falls in, after clearing the slots that slid out. An
    /// instant earlier than the newest slot counts in the newest slot.
    pub(crate) fn slot(&mut self, now: Instant) -> &mut C {
        let elapsed = now.saturating_duration_since(self.epoch).as_nanos();
        let index = u64::try_from(elapsed / self.width.as_nanos()).unwrap_or(u64::MAX);
        if index > self.head {
            let stale = (index - self.head).min(SLOTS as u64);
            for step in 1..=stale {
                self.slots[(self.head.wrapping_add(step) % SLOTS as u64) as usize] = C::default();
            }
            self.head = index;
        }
        &mut self.slots[(self.head % SLOTS as u64) as usize]
    }

    /// Every slot of the window, after sliding it to `now`.
    pub(crate) fn slots(&mut self, now: Instant) -> &[C; SLOTS] {
        self.slot(now);
        &self.slots
    }

    pub(crate) fn clear(&mut self) {
        self.slots = [C::default(); SLOTS];
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Flow {
    deposits: u64,
    withdrawals: u64,
}

/// Retries allowed: at most `ratio` × requests seen in the last `window` plus
/// `min_per_second` × window-seconds, counted in `window / 10` slots that
/// slide.
///
/// The exact guarantee: a retry is granted only if, counting it, the retries
/// in the bucket-aligned window (the current slot and the nine before it) are
/// at most `ratio × deposits` in those slots `+ min_per_second × window`.
/// Because a slot leaves the window whole, a real-time interval of length
/// `window` may also hold the retries granted in the slot that just left.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    ratio: f64,
    reserve: f64,
    flows: SlidingWindow<Flow>,
}

impl RetryBudget {
    /// `window` is 10 s in production. A negative or NaN `ratio` is taken as
    /// zero (only the floor remains).
    pub fn new(ratio: f64, min_per_second: u32, window: Duration, now: Instant) -> Self {
        let flows = SlidingWindow::new(window, now);
        Self {
            ratio: ratio.max(0.0),
            reserve: f64::from(min_per_second) * flows.span().as_secs_f64(),
            flows,
        }
    }

    /// Counts one original (non-retry) request.
    pub fn deposit(&mut self, now: Instant) {
        self.flows.slot(now).deposits += 1;
    }

    /// Asks for one retry: `true` when allowed (and counted), `false` when
    /// the budget is spent (and nothing is counted).
    pub fn withdraw(&mut self, now: Instant) -> bool {
        let flows = self.flows.slots(now);
        let deposits: u64 = flows.iter().map(|flow| flow.deposits).sum();
        let withdrawals: u64 = flows.iter().map(|flow| flow.withdrawals).sum();
        let allowed = self.ratio * deposits as f64 + self.reserve + ROUNDING;
        if withdrawals as f64 + 1.0 > allowed {
            return false;
        }
        self.flows.slot(now).withdrawals += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const WINDOW: Duration = Duration::from_secs(10);

    fn grants(budget: &mut RetryBudget, now: Instant) -> usize {
        (0..1000).take_while(|_| budget.withdraw(now)).count()
    }

    #[test]
    fn the_floor_allows_min_per_second_for_the_window_with_no_traffic() {
        let t0 = Instant::now();
        let mut budget = RetryBudget::new(0.2, 5, WINDOW, t0);
        assert_eq!(grants(&mut budget, t0), 50);
        assert!(!budget.withdraw(t0 + Duration::from_secs(9)));
    }

    #[test]
    fn the_ratio_allows_a_fifth_of_deposits() {
        let t0 = Instant::now();
        let mut budget = RetryBudget::new(0.2, 0, WINDOW, t0);
        assert!(!budget.withdraw(t0));
        for _ in 0..100 {
            budget.deposit(t0);
        }
        assert_eq!(grants(&mut budget, t0 + Duration::from_secs(1)), 20);
        for _ in 0..5 {
            budget.deposit(t0 + Duration::from_secs(2));
        }
        assert_eq!(grants(&mut budget, t0 + Duration::from_secs(2)), 1);
    }

    #[test]
    fn odd_ratios_are_not_lost_to_rounding() {
        let t0 = Instant::now();
        let mut budget = RetryBudget::new(0.1, 0, WINDOW, t0);
        for _ in 0..30 {
            budget.deposit(t0);
        }
        assert_eq!(grants(&mut budget, t0), 3);
    }

    #[test]
    fn old_deposits_slide_out_of_the_window() {
        let t0 = Instant::now();
        let mut budget = RetryBudget::new(0.2, 0, WINDOW, t0);
        for _ in 0..100 {
            budget.deposit(t0);
        }
        assert_eq!(grants(&mut budget, t0), 20);
        let last_moment = t0 + Duration::from_millis(9_999);
        assert_eq!(grants(&mut budget, last_moment), 0);
        for _ in 0..10 {
            budget.deposit(last_moment);
        }
        // The first slot leaves whole: its 100 deposits and its 20 retries.
        assert_eq!(grants(&mut budget, t0 + WINDOW), 2);
    }

    #[test]
    fn spent_retries_come_back_as_they_slide_out() {
        let t0 = Instant::now();
        let mut budget = RetryBudget::new(0.0, 1, WINDOW, t0);
        assert_eq!(grants(&mut budget, t0), 10);
        assert_eq!(grants(&mut budget, t0 + Duration::from_secs(5)), 0);
        assert_eq!(grants(&mut budget, t0 + WINDOW), 10);
        assert_eq!(grants(&mut budget, t0 + Duration::from_secs(1_000_000)), 10);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Deposit,
        Withdraw,
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Deposit),
            3 => Just(Op::Withdraw),
            1 => (0u64..3_000).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Every grant keeps the retries in the bucket-aligned window within
        /// `ratio × deposits + floor`, and no retry is refused while there is
        /// room (checked against a model that keeps every event).
        #[test]
        fn grants_stay_within_the_bucket_aligned_window(
            ratio in prop_oneof![Just(0.0), Just(0.1), Just(0.2), 0.0f64..1.0],
            min_per_second in 0u32..4,
            window_ms in 1_000u64..20_000,
            ops in prop::collection::vec(op(), 1..400),
        ) {
            let t0 = Instant::now();
            let window = Duration::from_millis(window_ms);
            let width = (window / 10).as_nanos();
            let floor = f64::from(min_per_second) * (window / 10 * 10).as_secs_f64();
            let mut budget = RetryBudget::new(ratio, min_per_second, window, t0);
            let mut now = t0;
            let mut events: Vec<(u128, bool)> = Vec::new(); // (slot, is_retry)
            for op in ops {
                let slot = (now - t0).as_nanos() / width;
                let count = |events: &[(u128, bool)], retry: bool| {
                    events.iter().filter(|&&(s, r)| r == retry && s + 10 > slot).count() as f64
                };
                match op {
                    Op::Deposit => {
                        budget.deposit(now);
                        events.push((slot, false));
                    }
                    Op::Withdraw => {
                        let room = count(&events, true) + 1.0
                            <= ratio * count(&events, false) + floor + 1e-9;
                        let granted = budget.withdraw(now);
                        prop_assert_eq!(granted, room);
                        if granted {
                            events.push((slot, true));
                            prop_assert!(
                                count(&events, true) <= ratio * count(&events, false) + floor + 1e-9
                            );
                        }
                    }
                    Op::Advance(ms) => now += Duration::from_millis(ms),
                }
            }
        }
    }
}
