//! The retry decision and the parser of the waits upstreams demand: any
//! policy, attempt and headers, never a panic; a retry never waits past the
//! deadline or longer than `backoff.max`.
#![no_main]

use std::time::{Duration, SystemTime};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tokio::time::Instant;
use weir::config::{BackoffPolicy, RetryOn, RetryPolicy};
use weir::resilience::backoff::demanded_wait;
use weir::resilience::budget::RetryBudget;
use weir::resilience::retry::{Attempt, Decision, Failure, RetryRules};

#[derive(Arbitrary, Debug)]
struct Input {
    attempts: u32,
    on: Vec<(u8, u16)>,
    respect_retry_after: bool,
    base_ms: u64,
    max_ms: u64,
    number: u32,
    failure: (u8, u16),
    replayable: bool,
    jitter: f64,
    deadline_ms: u64,
    headers: Vec<(u8, String)>,
    ratio: f64,
    min_per_second: u32,
}

fuzz_target!(|input: Input| {
    let on = input
        .on
        .iter()
        .map(|&(kind, status)| match kind % 3 {
            0 => RetryOn::Connect,
            1 => RetryOn::Timeout,
            _ => RetryOn::Status(status),
        })
        .collect();
    let max = Duration::from_millis(input.max_ms);
    let policy = RetryPolicy {
        attempts: input.attempts,
        on,
        backoff: BackoffPolicy {
            base: Duration::from_millis(input.base_ms),
            max,
        },
        respect_retry_after: input.respect_retry_after,
        ..RetryPolicy::default()
    };
    let mut headers = http::HeaderMap::new();
    for (which, value) in &input.headers {
        let name = match which % 4 {
            0 => "retry-after",
            1 => "retry-after-ms",
            2 => "x-ratelimit-reset-requests",
            _ => "x-ratelimit-reset-tokens",
        };
        if let Ok(value) = http::HeaderValue::from_str(value) {
            headers.append(name, value);
        }
    }
    let demanded = demanded_wait(&headers, SystemTime::now());
    let failure = match input.failure.0 % 4 {
        0 => Failure::Connect,
        1 => Failure::Timeout,
        2 => Failure::Status(input.failure.1),
        _ => Failure::Quota,
    };
    let now = Instant::now();
    let deadline = now
        .checked_add(Duration::from_millis(input.deadline_ms))
        .unwrap_or(now);
    let mut budget = RetryBudget::new(
        input.ratio,
        input.min_per_second,
        Duration::from_secs(10),
        now,
    );
    let attempt = Attempt {
        number: input.number,
        failure,
        demanded,
        replayable: input.replayable,
    };
    let rules = RetryRules::new(&policy);
    if let Decision::Retry { wait } =
        rules.decide(&attempt, input.jitter, now, deadline, &mut budget)
    {
        assert!(now + wait < deadline, "waits past the deadline");
        assert!(
            wait <= max.max(Duration::from_millis(input.base_ms)),
            "{wait:?} over backoff.max"
        );
    }
});
