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
