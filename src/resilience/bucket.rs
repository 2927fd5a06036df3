//! Token buckets for rate limits.
//!
//! Why a bucket and not a count per second? A fixed window lets twice the rate
//! through across a window edge and then refuses everyone until the next one.
//! A bucket refills continuously: it allows a burst after a quiet spell, then
//! exactly the rate, and it can say how long until the next request fits,
//! which becomes the `Retry-After` of a `rate_limited` rejection.
//!
//! LLM tokens are known only once a response has been read, so a bucket also
//! takes unconditional charges that may leave it in debt: the tenant that
//! overspent waits until the debt is paid off ([`TokenBucket::check`]).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// Slack for `f64` rounding, so that waiting the wait reported is enough.
const ROUNDING: f64 = 1e-9;

/// The shortest wait [`TokenBucket::check`] reports.
const MIN_WAIT: Duration = Duration::from_millis(1);

/// A token bucket: `rate` per second, holds at most `burst`, starts full.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    balance: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// A negative or non-finite `rate` or `burst` is taken as zero.
    pub fn new(rate_per_second: f64, burst: f64, now: Instant) -> Self {
        let sane = |x: f64| if x.is_finite() && x > 0.0 { x } else { 0.0 };
        Self {
            rate: sane(rate_per_second),
            burst: sane(burst),
            balance: sane(burst),
            refilled: now,
        }
    }

    /// Takes `amount` if available, else `Err(wait until amount will be
    /// available)` and takes nothing. An `amount` above `burst` never fits:
    /// `Err(Duration::MAX)`.
    pub fn try_withdraw(&mut self, amount: f64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if amount <= self.balance + ROUNDING {
            self.balance -= amount.max(0.0);
            return Ok(());
        }
        if amount > self.burst {
            return Err(Duration::MAX);
        }
        Err(self.time_to_earn(amount - self.balance))
    }

    /// Takes `amount` unconditionally: the balance may go negative (debt),
    /// for costs known only afterwards (LLM tokens). A negative or
    /// non-finite `amount` is ignored.
    pub fn charge(&mut self, amount: f64, now: Instant) {
        self.refill(now);
        if amount.is_finite() && amount > 0.0 {
            self.balance -= amount;
        }
    }

    /// `Ok` while the balance is positive: neither empty nor in debt. Else
    /// `Err(wait until it is positive again)`, at least a millisecond.
    pub fn check(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.balance > 0.0 {
            return Ok(());
        }
        Err(self.time_to_earn(-self.balance).max(MIN_WAIT))
    }

    /// True when refilled to `burst`: the bucket is idle and can be dropped
    /// without changing what it would allow.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.balance >= self.burst
    }

    fn refill(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.refilled).as_secs_f64() * self.rate;
        self.balance = (self.balance + earned).min(self.burst);
        self.refilled = self.refilled.max(now);
    }

    /// How long the refill takes to earn `tokens`, rounded up to the
    /// nanosecond so that the wait is never too short.
    fn time_to_earn(&self, tokens: f64) -> Duration {
        let nanos = (tokens * 1e9 / self.rate).ceil();
        if nanos.is_nan() || nanos >= u64::MAX as f64 {
            return Duration::MAX;
        }
        Duration::from_nanos(nanos as u64)
    }
}

#[derive(Debug)]
struct Entry {
    bucket: TokenBucket,
    /// `KeyedBuckets::clock` at the last use.
    used: u64,
}

/// Buckets per key (tenant), bounded in number: when a new key would exceed
/// `max_keys`, full (idle) buckets are evicted first, then the least recently
/// used. Evicting an idle bucket changes nothing, since a new one starts full;
/// evicting a busy one forgives its debt, hence least recently used last.
///
/// An existing key costs a hash lookup and no allocation. A new key at
/// capacity costs a pass over all keys: fine for the thousands of tenants a
/// bound is set for.
#[derive(Debug)]
pub struct KeyedBuckets {
    rate: f64,
    burst: f64,
    max_keys: usize,
    clock: u64,
    buckets: HashMap<String, Entry>,
}

impl KeyedBuckets {
    /// `max_keys` below 1 is taken as 1.
    pub fn new(rate_per_second: f64, burst: f64, max_keys: usize) -> Self {
        Self {
            rate: rate_per_second,
            burst,
            max_keys: max_keys.max(1),
            clock: 0,
            buckets: HashMap::new(),
        }
    }

    pub fn try_withdraw(&mut self, key: &str, amount: f64, now: Instant) -> Result<(), Duration> {
        self.with_bucket(key, now, |bucket| bucket.try_withdraw(amount, now))
    }

    pub fn charge(&mut self, key: &str, amount: f64, now: Instant) {
        self.with_bucket(key, now, |bucket| bucket.charge(amount, now));
    }

    /// An unknown key has a full bucket: `Ok`, and nothing is stored.
    pub fn check(&mut self, key: &str, now: Instant) -> Result<(), Duration> {
        if !self.buckets.contains_key(key) {
            return TokenBucket::new(self.rate, self.burst, now).check(now);
        }
        self.with_bucket(key, now, |bucket| bucket.check(now))
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Applies `use_bucket` to the key's bucket, creating it (and making room
    /// for it) if the key is new.
    fn with_bucket<T>(
        &mut self,
        key: &str,
        now: Instant,
        use_bucket: impl FnOnce(&mut TokenBucket) -> T,
    ) -> T {
        self.clock += 1;
        if let Some(entry) = self.buckets.get_mut(key) {
            entry.used = self.clock;
            return use_bucket(&mut entry.bucket);
        }
        if self.buckets.len() >= self.max_keys {
            self.evict(now);
        }
        let mut bucket = TokenBucket::new(self.rate, self.burst, now);
        let result = use_bucket(&mut bucket);
        let used = self.clock;
        self.buckets.insert(key.to_owned(), Entry { bucket, used });
        result
    }

    /// Makes room for one key: every idle bucket goes, or else the least
    /// recently used one.
    fn evict(&mut self, now: Instant) {
        self.buckets.retain(|_, entry| !entry.bucket.is_full(now));
        if self.buckets.len() < self.max_keys {
            return;
        }
        let oldest = self.buckets.iter().min_by_key(|(_, entry)| entry.used);
        if let Some(key) = oldest.map(|(key, _)| key.clone()) {
            self.buckets.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(2.0, 3.0, t0);
        for _ in 0..3 {
            assert_eq!(bucket.try_withdraw(1.0, t0), Ok(()));
        }
        assert_eq!(bucket.try_withdraw(1.0, t0), Err(500 * MS));
        assert_eq!(
            bucket.try_withdraw(1.0, t0 + 250 * MS),
            Err(250 * MS),
            "half earned"
        );
        assert_eq!(bucket.try_withdraw(1.0, t0 + 500 * MS), Ok(()));
        assert_eq!(bucket.try_withdraw(2.0, t0 + 500 * MS), Err(1000 * MS));
        assert!(bucket.is_full(t0 + 2000 * MS));
        assert_eq!(bucket.try_withdraw(4.0, t0 + 2000 * MS), Err(Duration::MAX));
    }

    #[test]
    fn a_failed_withdrawal_takes_nothing() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1.0, 2.0, t0);
        assert_eq!(bucket.try_withdraw(1.5, t0), Ok(()));
        assert!(bucket.try_withdraw(1.0, t0).is_err());
        assert_eq!(bucket.try_withdraw(0.5, t0), Ok(()));
    }

    #[test]
    fn debt_from_charges_blocks_check_until_paid() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(100.0, 1000.0, t0);
        assert_eq!(bucket.check(t0), Ok(()));
        bucket.charge(1500.0, t0);
        assert_eq!(
            bucket.check(t0),
            Err(5000 * MS),
            "500 tokens of debt at 100/s"
        );
        assert_eq!(bucket.try_withdraw(1.0, t0), Err(5010 * MS));
        assert_eq!(
            bucket.check(t0 + 5000 * MS),
            Err(MS),
            "empty is not positive"
        );
        assert_eq!(bucket.check(t0 + 5001 * MS), Ok(()));
    }

    #[test]
    fn keyed_buckets_isolate_keys() {
        let t0 = Instant::now();
        let mut buckets = KeyedBuckets::new(1.0, 1.0, 10);
        assert_eq!(buckets.check("unseen", t0), Ok(()));
        assert!(buckets.is_empty(), "check stores nothing");
        assert_eq!(buckets.try_withdraw("a", 1.0, t0), Ok(()));
        assert_eq!(buckets.try_withdraw("a", 1.0, t0), Err(1000 * MS));
        assert_eq!(buckets.try_withdraw("b", 1.0, t0), Ok(()));
        buckets.charge("c", 3.0, t0);
        assert_eq!(buckets.check("c", t0), Err(2000 * MS));
        assert_eq!(
            buckets.check("a", t0),
            Err(MS),
            "empty: positive again at once"
        );
        assert_eq!(buckets.len(), 3);
    }

    #[test]
    fn bounded_keys_evict_idle_buckets_first() {
        let t0 = Instant::now();
        let mut buckets = KeyedBuckets::new(1.0, 1.0, 2);
        buckets.charge("debtor", 5.0, t0);
        buckets.charge("light", 1.0, t0 + MS);
        // At 2 s "light" has refilled (idle) while "debtor", older, still owes.
        assert_eq!(buckets.try_withdraw("new", 1.0, t0 + 2000 * MS), Ok(()));
        assert_eq!(buckets.len(), 2);
        assert!(
            buckets.check("debtor", t0 + 2000 * MS).is_err(),
            "kept, with its debt"
        );
        // Nothing idle now: the least recently used ("new") goes.
        assert_eq!(buckets.try_withdraw("newer", 1.0, t0 + 2000 * MS), Ok(()));
        assert_eq!(buckets.len(), 2);
        assert!(buckets.check("debtor", t0 + 2000 * MS).is_err());
        assert!(buckets.check("newer", t0 + 2000 * MS).is_err());
        assert_eq!(
            buckets.check("new", t0 + 2000 * MS),
            Ok(()),
            "evicted: fresh"
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Withdraw(f64),
        Charge(f64),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0.0f64..3.0).prop_map(Op::Withdraw),
            1 => (0.0f64..5.0).prop_map(Op::Charge),
            2 => (0u64..2_000).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// What goes through in any interval (withdrawn, plus charged before
        /// the last withdrawal) never exceeds `burst + rate × its length`, and
        /// waiting the wait a refusal reports is enough.
        #[test]
        fn never_more_than_burst_plus_rate_times_elapsed(
            rate in 0.1f64..100.0,
            burst in 0.0f64..50.0,
            ops in prop::collection::vec(op(), 1..300),
        ) {
            let t0 = Instant::now();
            let mut bucket = TokenBucket::new(rate, burst, t0);
            let (mut now, mut through) = (t0, 0.0);
            let mut starts: Vec<(Instant, f64)> = Vec::new(); // (when, through before)
            for op in ops {
                match op {
                    Op::Withdraw(amount) => {
                        starts.push((now, through));
                        match bucket.try_withdraw(amount, now) {
                            Ok(()) => through += amount,
                            Err(wait) if wait < Duration::MAX => {
                                let mut copy = bucket.clone();
                                prop_assert!(copy.try_withdraw(amount, now + wait).is_ok());
                                continue;
                            }
                            Err(_) => {
                                prop_assert!(amount > burst);
                                continue;
                            }
                        }
                        for &(start, before) in &starts {
                            let limit = burst + rate * (now - start).as_secs_f64();
                            prop_assert!(through - before <= limit + 1e-6);
                        }
                    }
                    Op::Charge(amount) => {
                        starts.push((now, through));
                        bucket.charge(amount, now);
                        through += amount;
                    }
                    Op::Advance(ms) => now += Duration::from_millis(ms),
                }
            }
        }
    }
}
