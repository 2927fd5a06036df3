//! Retries: transient failures absorbed with backoff, `Retry-After`
//! honoured or passed on, resets retried, bodies replayed, quota never
//! retried, and the budget stopping a retry storm.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Response;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::support::upstream::full;
use crate::support::*;

/// An upstream that answers `status` (with `headers`) to the first `n`
/// requests, then 200 with the SHA-256 of the request body.
async fn failing_first(
    n: usize,
    status: u16,
    headers: &'static [(&'static str, &'static str)],
) -> MockUpstream {
    let seen = Arc::new(AtomicUsize::new(0));
    MockUpstream::start(move |request| {
        let seen = seen.clone();
        async move {
            let body = request.into_body().collect().await.unwrap().to_bytes();
            if seen.fetch_add(1, Ordering::SeqCst) < n {
                let mut response = Response::builder().status(status);
                for (k, v) in headers {
                    response = response.header(*k, *v);
                }
                return response
                    .body(full(r#"{"error":{"message":"busy","code":"busy"}}"#))
                    .unwrap();
            }
            let digest: String = Sha256::digest(&body)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            Response::new(full(digest))
        }
    })
    .await
}

fn quick_retry(url: &str, extra: &str) -> String {
    policy(&format!(
        "  llm:\n    route: /\n    url: {url}\n    retry:\n      backoff: {{ base: 1ms, max: 5s }}\n{extra}"
    ))
}

#[tokio::test]
async fn transient_503s_are_absorbed() {
    let upstream = failing_first(2, 503, &[]).await;
    let weir = TestWeir::start(&quick_retry(&upstream.url(), "")).await;
    let response = send(post(&weir.url("/v1/chat/completions"), "{}")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-weir-attempts"], "3");
    assert!(!response.headers().contains_key("x-should-retry"));
    assert_eq!(upstream.hits(), 3);
    assert_eq!(
        weir.metric(r#"weir_retries_total{reason="503",upstream="llm"}"#)
            .await,
        2.0
    );
    assert_eq!(
        weir.metric(r#"weir_upstream_attempts_total{result="503",upstream="llm"}"#)
            .await,
        2.0
    );
    assert_eq!(
        weir.metric(r#"weir_upstream_attempts_total{result="ok",upstream="llm"}"#)
            .await,
        1.0
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn exhausted_attempts_pass_the_upstream_error_on_with_should_retry_false() {
    let upstream = failing_first(usize::MAX, 503, &[]).await;
    let weir = TestWeir::start(&quick_retry(&upstream.url(), "")).await;
    let response = send(post(&weir.url("/v1/chat/completions"), "{}")).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["x-weir-attempts"], "3");
    assert_eq!(response.headers()["x-should-retry"], "false");
    assert!(
        !response.headers().contains_key("x-weir-reject"),
        "the upstream's own error"
    );
    assert_eq!(body_json(response).await["error"]["code"], "busy");
    assert_eq!(upstream.hits(), 3);
    weir.shutdown().await;
}

#[tokio::test]
async fn a_429_with_a_short_retry_after_is_waited_and_retried() {
    let upstream = failing_first(1, 429, &[("retry-after", "1")]).await;
    let weir = TestWeir::start(&quick_retry(&upstream.url(), "")).await;
    let started = Instant::now();
    let response = send(post(&weir.url("/v1/chat/completions"), "{}")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-weir-attempts"], "2");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited {:?}",
        started.elapsed()
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn a_429_demanding_a_long_wait_goes_to_the_client_at_once() {
    let upstream = failing_first(1, 429, &[("retry-after", "120")]).await;
    let weir = TestWeir::start(&quick_retry(&upstream.url(), "")).await;
    // Not held for the two minutes asked: answered within the harness's
    // patience, after one attempt.
    let response = tokio::time::timeout(
        PATIENCE,
        client().request(post(&weir.url("/v1/chat/completions"), "{}")),
    )
    .await
    .expect("answered without waiting out the retry-after")
    .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "120");
    assert_eq!(response.headers()["x-weir-attempts"], "1");
    assert_eq!(upstream.hits(), 1);
    weir.shutdown().await;
}

#[tokio::test]
async fn openai_reset_headers_set_the_wait() {
    let upstream = failing_first(
        1,
        429,
        &[
            ("x-ratelimit-reset-requests", "300ms"),
            ("x-ratelimit-remaining-requests", "0"),
        ],
    )
    .await;
    let weir = TestWeir::start(&quick_retry(&upstream.url(), "")).await;
    let started = Instant::now();
    let response = send(post(&weir.url("/v1/chat/completions"), "{}")).await;
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    weir.shutdown().await;
}

#[tokio::test]
async fn insufficient_quota_is_never_retried() {
    let upstream = MockUpstream::start(|_| async {
        Response::builder()
            .status(429)
            .header("content-type", "application/json")
            .body(full(r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#))
            .unwrap()
    })
    .await;
    let weir = TestWeir::start(&quick_retry(&upstream.url(), "")).await;
    let response = send(post(&weir.url("/v1/chat/completions"), "{}")).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["x-weir-attempts"], "1");
    assert_eq!(
        body_json(response).await["error"]["code"],
        "insufficient_quota"
    );
    assert_eq!(upstream.hits(), 1);
    weir.shutdown().await;
}

#[tokio::test]
async fn a_post_body_is_replayed_intact_on_retry() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let recorded = bodies.clone();
    let upstream = MockUpstream::start(move |request| {
        let recorded = recorded.clone();
        async move {
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let mut all = recorded.lock().unwrap();
            all.push(body.clone());
            if all.len() == 1 {
                return Response::builder()
                    .status(502)
                    .body(full("bad gateway"))
                    .unwrap();
            }
            Response::new(full(body))
        }
    })
    .await;
    let weir = TestWeir::start(&quick_retry(&upstream.url(), "")).await;
    let payload: String = (0..100_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let payload =
        format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{payload}"}}]}}"#);
    let response = send(post(&weir.url("/v1/chat/completions"), payload.clone())).await;
    assert_eq!(response.status(), 200);
    assert_eq!(body_string(response).await, payload);
    let all = bodies.lock().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0], all[1]);
}

#[tokio::test]
async fn a_connection_reset_before_the_answer_is_retried() {
    // A raw upstream: the first connection is closed, unanswered, once the
    // request arrives; later ones get a proper answer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let server = tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            if count.fetch_add(1, Ordering::SeqCst) == 0 {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                drop(stream);
                continue;
            }
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_| async {
                    Ok::<_, std::convert::Infallible>(Response::new(full("recovered")))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    let weir = TestWeir::start(&quick_retry(&format!("http://{addr}"), "")).await;
    let response = send(post(&weir.url("/v1/chat/completions"), "{}")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-weir-attempts"], "2");
    assert_eq!(body_string(response).await, "recovered");
    assert_eq!(
        weir.metric(r#"weir_retries_total{reason="connect",upstream="llm"}"#)
            .await,
        1.0
    );
    server.abort();
    weir.shutdown().await;
}

#[tokio::test]
async fn the_budget_stops_a_retry_storm() {
    let upstream = failing_first(usize::MAX, 503, &[]).await;
    // Breaker thresholds out of reach: this test is about the budget alone.
    let weir = TestWeir::start(&quick_retry(
        &upstream.url(),
        "      budget: { ratio: 0.2, min_per_second: 5 }\n    circuit_breaker:\n      consecutive_failures: 1000000\n      min_requests: 1000000\n    concurrency:\n      max_in_flight: 1000\n      max_queue: 1000\n",
    ))
    .await;
    let client = client();
    let mut handles = Vec::new();
    let requests = 1000;
    for chunk in 0..(requests / 50) {
        let _ = chunk;
        let batch: Vec<_> = (0..50)
            .map(|_| tokio::spawn(client.request(post(&weir.url("/v1/x"), "{}"))))
            .collect();
        for h in batch {
            handles.push(h.await.unwrap().unwrap());
        }
    }
    for response in handles {
        assert_eq!(response.status(), 503);
    }
    let hits = upstream.hits();
    // Without a budget: 3,000 attempts. With it: the 1,000 first attempts,
    // 20 % of them, plus the floor of 5/s over the 10 s window.
    let allowed = requests + requests / 5 + 5 * 10;
    assert!(
        hits <= allowed,
        "{hits} upstream attempts, budget allows {allowed}"
    );
    assert!(hits > requests, "some retries happen within the budget");
    let exhausted = weir
        .metric(r#"weir_retry_budget_exhausted_total{upstream="llm"}"#)
        .await;
    assert!(exhausted > 0.0);
    weir.shutdown().await;
}
