//! The bulkhead: at most `max_in_flight` requests at an upstream, a FIFO
//! queue of at most `max_queue` behind them, each waiting `queue_timeout` at
//! most; beyond that a request is shed at once.
//!
//! Why a bulkhead per upstream: a slow or hanging upstream holds its
//! requests open. Without a bound, they pile up until they exhaust memory,
//! file descriptors or the client's patience for every other upstream too.
//! With one, the damage stays in that upstream's compartment: its extra
//! requests are refused fast (503 `overloaded` / `queue_timeout`) while the
//! other upstreams answer at normal latency.
//!
//! Built on tokio's semaphore, which is fair (FIFO): a permit freed goes to
//! the oldest waiter, and `try_enter` cannot jump the queue. The permit is
//! moved into the response body, so capacity is released exactly when the
//! response ends (or the client drops it), as tower's concurrency limit does.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The queue was full.
    Overloaded,
    /// Waited `queue_timeout` without a place.
    QueueTimeout,
}

pub struct Bulkhead {
    places: Arc<Semaphore>,
    limit: AtomicUsize,
    /// Places to retire as they come back, after a shrink found them taken.
    debt: AtomicUsize,
    max_queue: AtomicUsize,
    queue_timeout_ns: AtomicU64,
    queued: AtomicUsize,
    in_flight: AtomicUsize,
}

/// A place at the upstream; given back (or retired, after a shrink) on drop.
pub struct Pass {
    permit: Option<OwnedSemaphorePermit>,
    bulkhead: Arc<Bulkhead>,
}

impl std::fmt::Debug for Pass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pass")
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        let b = &self.bulkhead;
        b.in_flight.fetch_sub(1, Ordering::AcqRel);
        let retire = b
            .debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
            .is_ok();
        if let (true, Some(permit)) = (retire, self.permit.take()) {
            permit.forget();
        }
        // Give the permit back first (dropping it), then settle what a
        // shrink still owes from places that came back another way.
        drop(self.permit.take());
        b.settle();
    }
}

impl Bulkhead {
    pub fn new(max_in_flight: u32, max_queue: u32, queue_timeout: Duration) -> Arc<Self> {
        let limit = (max_in_flight as usize).clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Self {
            places: Arc::new(Semaphore::new(limit)),
            limit: AtomicUsize::new(limit),
            debt: AtomicUsize::new(0),
            max_queue: AtomicUsize::new(max_queue as usize),
            queue_timeout_ns: AtomicU64::new(nanos(queue_timeout)),
            queued: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// Applies new limits (a policy reload). Requests in flight keep their
    /// places; after a shrink, places are retired as they come back.
    pub fn resize(&self, max_in_flight: u32, max_queue: u32, queue_timeout: Duration) {
        let new = (max_in_flight as usize).clamp(1, Semaphore::MAX_PERMITS);
        let old = self.limit.swap(new, Ordering::AcqRel);
        if new > old {
            let mut grow = new - old;
            // Cancel retirements still owed before adding places.
            let cancelled = self
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                    Some(d - d.min(grow))
                })
                .map_or(0, |d| d.min(grow));
            grow -= cancelled;
            self.places.add_permits(grow);
        } else if new < old {
            let shrink = old - new;
            let forgotten = self.places.forget_permits(shrink);
            self.debt.fetch_add(shrink - forgotten, Ordering::AcqRel);
        }
        self.max_queue.store(max_queue as usize, Ordering::Release);
        self.queue_timeout_ns
            .store(nanos(queue_timeout), Ordering::Release);
    }

    /// Retires free places a shrink still owes. Places come back not only
    /// through a [`Pass`]: a waiter cancelled after the semaphore assigned it
    /// a place returns that place to the semaphore directly, and a debt
    /// only [`Pass`] drops paid would then leave more places than the limit.
    fn settle(&self) {
        while self.debt.load(Ordering::Acquire) > 0 {
            let owed = self.debt.load(Ordering::Acquire);
            let forgotten = self.places.forget_permits(owed);
            if forgotten == 0 {
                return;
            }
            // Passes may have paid part of the debt meanwhile: give back
            // what was forgotten beyond what is still owed.
            let before = self
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                    Some(d.saturating_sub(forgotten))
                })
                .unwrap_or(0);
            if before < forgotten {
                self.places.add_permits(forgotten - before);
                return;
            }
        }
    }

    /// A place now, if one is free and nobody waits.
    pub fn try_enter(self: &Arc<Self>) -> Option<Pass> {
        self.settle();
        let permit = self.places.clone().try_acquire_owned().ok()?;
        Some(self.pass(permit))
    }

    /// Waits in the FIFO queue for a place. Refuses at once when the queue is
    /// full. A caller that stops waiting (its future is dropped) leaves the
    /// queue at once.
    pub async fn wait(self: &Arc<Self>) -> Result<Pass, Refusal> {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.max_queue.load(Ordering::Acquire) {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Overloaded);
        }
        let _queued = Leave(&self.queued);
        let timeout = Duration::from_nanos(self.queue_timeout_ns.load(Ordering::Acquire));
        match tokio::time::timeout(timeout, self.places.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(self.pass(permit)),
            // The semaphore is never closed; treat it as full if it were.
            Ok(Err(_)) => Err(Refusal::Overloaded),
            Err(_) => Err(Refusal::QueueTimeout),
        }
    }

    fn pass(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Pass {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Pass {
            permit: Some(permit),
            bulkhead: self.clone(),
        }
    }

    /// Requests holding a place now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Requests waiting now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Leaves the queue when dropped: on a place, a timeout or a cancellation.
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn admits_up_to_the_limit_then_queues_then_sheds() {
        let bulkhead = Bulkhead::new(2, 1, Duration::from_secs(1));
        let a = bulkhead.try_enter().unwrap();
        let _b = bulkhead.try_enter().unwrap();
        assert!(bulkhead.try_enter().is_none());
        assert_eq!(bulkhead.in_flight(), 2);

        let waiting = bulkhead.wait();
        tokio::pin!(waiting);
        // Polled once: it is queued.
        assert!(futures_poll(&mut waiting).is_none());
        assert_eq!(bulkhead.queued(), 1);
        assert_eq!(bulkhead.wait().await.unwrap_err(), Refusal::Overloaded);

        drop(a);
        let permit = waiting.await.unwrap();
        assert_eq!(bulkhead.queued(), 0);
        assert_eq!(bulkhead.in_flight(), 2);
        drop(permit);
        assert_eq!(bulkhead.in_flight(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_request_times_out() {
        let bulkhead = Bulkhead::new(1, 4, Duration::from_millis(250));
        let _held = bulkhead.try_enter().unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(bulkhead.wait().await.unwrap_err(), Refusal::QueueTimeout);
        assert_eq!(started.elapsed(), Duration::from_millis(250));
        assert_eq!(bulkhead.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_is_first_in_first_out() {
        let bulkhead = Bulkhead::new(1, 8, Duration::from_secs(60));
        let held = bulkhead.try_enter().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for n in 0..5 {
            let (bulkhead, tx) = (bulkhead.clone(), tx.clone());
            tokio::spawn(async move {
                let permit = bulkhead.wait().await.unwrap();
                tx.send(n).unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
                drop(permit);
            });
            // Let each waiter enqueue before the next.
            tokio::task::yield_now().await;
        }
        drop(held);
        let mut order = Vec::new();
        for _ in 0..5 {
            order.push(rx.recv().await.unwrap());
        }
        assert_eq!(order, [0, 1, 2, 3, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_waiters_leave_the_queue_at_once() {
        let bulkhead = Bulkhead::new(1, 100, Duration::from_secs(60));
        let held = bulkhead.try_enter().unwrap();
        let waiters: Vec<_> = (0..50)
            .map(|_| {
                let bulkhead = bulkhead.clone();
                tokio::spawn(async move { bulkhead.wait().await.map(drop) })
            })
            .collect();
        tokio::task::yield_now().await;
        assert_eq!(bulkhead.queued(), 50);
        for w in &waiters {
            w.abort();
        }
        for w in waiters {
            let _ = w.await;
        }
        assert_eq!(bulkhead.queued(), 0);
        drop(held);
        assert_eq!(bulkhead.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shrink_keeps_requests_in_flight_and_retires_places_as_they_return() {
        let bulkhead = Bulkhead::new(3, 0, Duration::from_secs(1));
        let held: Vec<_> = (0..3).map(|_| bulkhead.try_enter().unwrap()).collect();
        bulkhead.resize(1, 0, Duration::from_secs(1));
        assert_eq!(bulkhead.in_flight(), 3, "nobody is cut off");
        let mut held = held.into_iter();
        drop(held.next());
        assert!(bulkhead.try_enter().is_none(), "2 still in flight, limit 1");
        drop(held.next());
        assert!(bulkhead.try_enter().is_none(), "1 still in flight, limit 1");
        drop(held.next());
        let one = bulkhead.try_enter().expect("the one remaining place");
        assert!(bulkhead.try_enter().is_none());
        drop(one);
        bulkhead.resize(2, 0, Duration::from_secs(1));
        let _a = bulkhead.try_enter().unwrap();
        let _b = bulkhead.try_enter().unwrap();
        assert!(bulkhead.try_enter().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn growing_cancels_retirements_still_owed() {
        let bulkhead = Bulkhead::new(2, 0, Duration::from_secs(1));
        let a = bulkhead.try_enter().unwrap();
        let b = bulkhead.try_enter().unwrap();
        bulkhead.resize(1, 0, Duration::from_secs(1));
        bulkhead.resize(3, 0, Duration::from_secs(1));
        let _c = bulkhead.try_enter().expect("a third place right away");
        drop((a, b));
        let _d = bulkhead.try_enter().unwrap();
        let _e = bulkhead.try_enter().unwrap();
        assert!(bulkhead.try_enter().is_none(), "exactly 3 places");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Enter,
        Queue,
        Release(usize),
        CancelWaiter(usize),
        Resize(u32),
        Tick,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Op::Enter),
            Just(Op::Queue),
            (0usize..16).prop_map(Op::Release),
            (0usize..16).prop_map(Op::CancelWaiter),
            (1u32..6).prop_map(Op::Resize),
            Just(Op::Tick),
        ]
    }

    proptest::proptest! {
        /// Whatever mix of entries, queued waiters, cancellations, timeouts
        /// and resizes: never more in flight than the limit once shrinks have
        /// drained, and every count back to zero when all have left.
        #[test]
        fn counts_return_to_zero(ops in proptest::collection::vec(op(), 1..60)) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            runtime.block_on(async move {
                let bulkhead = Bulkhead::new(2, 3, Duration::from_millis(50));
                let mut held: Vec<Pass> = Vec::new();
                let mut waiters: Vec<tokio::task::JoinHandle<Option<Pass>>> = Vec::new();
                let mut cancelled = Vec::new();
                for op in ops {
                    match op {
                        Op::Enter => held.extend(bulkhead.try_enter()),
                        Op::Queue => {
                            let b = bulkhead.clone();
                            waiters.push(tokio::spawn(async move { b.wait().await.ok() }));
                            tokio::task::yield_now().await;
                        }
                        Op::Release(i) if !held.is_empty() => {
                            held.swap_remove(i % held.len());
                        }
                        Op::CancelWaiter(i) if !waiters.is_empty() => {
                            let waiter = waiters.swap_remove(i % waiters.len());
                            waiter.abort();
                            cancelled.push(waiter);
                        }
                        Op::Resize(n) => bulkhead.resize(n, 3, Duration::from_millis(50)),
                        Op::Tick => tokio::time::sleep(Duration::from_millis(20)).await,
                        _ => {}
                    }
                    assert!(bulkhead.queued() <= 3, "the queue never exceeds max_queue");
                }
                // An aborted task's future is dropped when the scheduler next
                // runs it: awaiting its handle waits for exactly that.
                for w in cancelled.into_iter().chain(waiters) {
                    w.abort();
                    if let Ok(Some(pass)) = w.await {
                        drop(pass);
                    }
                }
                drop(held);
                assert_eq!(bulkhead.in_flight(), 0);
                assert_eq!(bulkhead.queued(), 0);
                // Every place the current limit allows is free again.
                let limit = bulkhead.limit.load(Ordering::Acquire);
                let all: Vec<_> = (0..limit).map(|_| bulkhead.try_enter().expect("a free place")).collect();
                assert!(bulkhead.try_enter().is_none(), "no more places than the limit");
                drop(all);
            });
        }
    }

    fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match std::pin::Pin::new(f).poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }
}
