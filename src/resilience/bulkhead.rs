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

use std::sync::atomic::{AtomicUsize, Ordering};
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
    max_in_flight: usize,
    max_queue: usize,
    queue_timeout: Duration,
    queued: AtomicUsize,
}

impl Bulkhead {
    pub fn new(max_in_flight: u32, max_queue: u32, queue_timeout: Duration) -> Self {
        let max_in_flight = (max_in_flight as usize).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            places: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            max_queue: max_queue as usize,
            queue_timeout,
            queued: AtomicUsize::new(0),
        }
    }

    /// A place now, if one is free and nobody waits.
    pub fn try_enter(&self) -> Option<OwnedSemaphorePermit> {
        self.places.clone().try_acquire_owned().ok()
    }

    /// Waits in the FIFO queue for a place. Refuses at once when the queue is
    /// full. A caller that stops waiting (its future is dropped) leaves the
    /// queue at once.
    pub async fn wait(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.max_queue {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Overloaded);
        }
        let _queued = Leave(&self.queued);
        match tokio::time::timeout(self.queue_timeout, self.places.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; treat it as full if it were.
            Ok(Err(_)) => Err(Refusal::Overloaded),
            Err(_) => Err(Refusal::QueueTimeout),
        }
    }

    /// Requests holding a place now.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight - self.places.available_permits().min(self.max_in_flight)
    }

    /// Requests waiting now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
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
        let bulkhead = Arc::new(Bulkhead::new(1, 8, Duration::from_secs(60)));
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
        let bulkhead = Arc::new(Bulkhead::new(1, 100, Duration::from_secs(60)));
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

    fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match std::pin::Pin::new(f).poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }
}
