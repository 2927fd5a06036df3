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
mod tests;
