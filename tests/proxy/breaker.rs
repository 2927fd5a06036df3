//! The circuit breaker: opens on consecutive failures, rejects without
//! contacting the upstream, half-opens after `open_for`, closes when its
//! trial requests succeed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Response;

use crate::support::upstream::full;
use crate::support::*;

#[tokio::test]
async fn opens_rejects_half_opens_and_closes() {
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    let upstream = MockUpstream::start(move |_| {
        let ok = flag.load(Ordering::SeqCst);
        async move {
            let status = if ok { 200 } else { 500 };
            Response::builder().status(status).body(full("x")).unwrap()
        }
    })
    .await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n    retry:\n      attempts: 1\n    circuit_breaker:\n      consecutive_failures: 3\n      open_for: 400ms\n      half_open_requests: 2\n",
        upstream.url()
    )))
    .await;

    for _ in 0..3 {
        assert_eq!(send(get(&weir.url("/x"))).await.status(), 500);
    }
    // Open: rejected without contacting the upstream.
    let response = send(get(&weir.url("/x"))).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["x-weir-reject"], "circuit_open");
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(body_json(response).await["error"]["code"], "circuit_open");
    assert_eq!(upstream.hits(), 3);
    assert_eq!(
        weir.metric(r#"weir_circuit_state{upstream="llm"}"#).await,
        1.0
    );
    assert_eq!(
        weir.metric(r#"weir_rejected_total{reason="circuit_open",upstream="llm"}"#)
            .await,
        1.0
    );
    let (_, upstreams) = weir.admin_get("/upstreams").await;
    let json: serde_json::Value = serde_json::from_str(&upstreams).unwrap();
    assert_eq!(json["llm"]["breaker"], "open");

    // After open_for: half-open trials reach the healthy upstream and close it.
    healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(send(get(&weir.url("/x"))).await.status(), 200);
    assert_eq!(
        weir.metric(r#"weir_circuit_state{upstream="llm"}"#).await,
        2.0
    );
    assert_eq!(send(get(&weir.url("/x"))).await.status(), 200);
    assert_eq!(
        weir.metric(r#"weir_circuit_state{upstream="llm"}"#).await,
        0.0
    );
    assert_eq!(upstream.hits(), 5);
    for to in ["open", "half_open", "closed"] {
        let sample = format!(r#"weir_circuit_transitions_total{{to="{to}",upstream="llm"}}"#);
        assert_eq!(weir.metric(&sample).await, 1.0, "{sample}");
    }
    weir.shutdown().await;
}

#[tokio::test]
async fn a_failed_trial_opens_the_breaker_again() {
    let upstream =
        MockUpstream::start(|_| async { Response::builder().status(503).body(full("x")).unwrap() })
            .await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n    retry:\n      attempts: 1\n    circuit_breaker:\n      consecutive_failures: 1\n      open_for: 200ms\n",
        upstream.url()
    )))
    .await;
    assert_eq!(send(get(&weir.url("/x"))).await.status(), 503);
    assert_eq!(
        send(get(&weir.url("/x"))).await.headers()["x-weir-reject"],
        "circuit_open"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    let trial = send(get(&weir.url("/x"))).await;
    assert!(
        !trial.headers().contains_key("x-weir-reject"),
        "the trial reaches the upstream"
    );
    assert_eq!(
        send(get(&weir.url("/x"))).await.headers()["x-weir-reject"],
        "circuit_open"
    );
    assert_eq!(upstream.hits(), 2);
    weir.shutdown().await;
}

#[tokio::test]
async fn a_429_does_not_open_the_breaker() {
    let upstream = MockUpstream::start(|_| async {
        Response::builder()
            .status(429)
            .body(full("slow down"))
            .unwrap()
    })
    .await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n    retry:\n      attempts: 1\n    circuit_breaker:\n      consecutive_failures: 2\n",
        upstream.url()
    )))
    .await;
    for _ in 0..5 {
        assert_eq!(send(get(&weir.url("/x"))).await.status(), 429);
    }
    assert_eq!(upstream.hits(), 5);
    assert_eq!(
        weir.metric(r#"weir_circuit_state{upstream="llm"}"#).await,
        0.0
    );
    weir.shutdown().await;
}
