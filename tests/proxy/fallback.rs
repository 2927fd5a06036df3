//! Fallback: when an upstream is open or its attempts are spent, the
//! request goes to its `fallback`, under that upstream's own policy.

use http::Response;

use crate::support::upstream::full;
use crate::support::*;

#[tokio::test]
async fn the_fallback_takes_over_when_the_primary_fails_and_while_it_is_open() {
    let primary = MockUpstream::start(|_| async {
        Response::builder().status(503).body(full("down")).unwrap()
    })
    .await;
    let backup = MockUpstream::fixed("from backup").await;
    let weir = TestWeir::start(&policy(&format!(
        "  primary:\n    route: /v1\n    url: {}\n    fallback: backup\n    retry:\n      attempts: 2\n      backoff: {{ base: 1ms, max: 10ms }}\n    circuit_breaker:\n      consecutive_failures: 2\n      open_for: 60s\n  backup:\n    route: /backup\n    url: {}\n",
        primary.url(),
        backup.url()
    )))
    .await;

    // Attempts spent on the primary: the backup answers.
    let response = send(post(&weir.url("/v1/chat/completions"), "{}")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-weir-upstream"], "backup");
    assert_eq!(response.headers()["x-weir-attempts"], "3");
    assert_eq!(body_string(response).await, "from backup");
    assert_eq!(primary.hits(), 2);

    // The primary's breaker is open now: straight to the backup.
    let response = send(post(&weir.url("/v1/chat/completions"), "{}")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-weir-upstream"], "backup");
    assert_eq!(response.headers()["x-weir-attempts"], "1");
    assert_eq!(primary.hits(), 2);
    assert_eq!(backup.hits(), 2);
    assert_eq!(
        weir.metric(r#"weir_rejected_total{reason="circuit_open",upstream="primary"}"#)
            .await,
        1.0
    );
    assert_eq!(
        weir.metric(r#"weir_requests_total{code="200",outcome="ok",upstream="backup"}"#)
            .await,
        2.0
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn the_last_failure_reaches_the_client_when_every_fallback_fails() {
    let down = || async { Response::builder().status(502).body(full("down")).unwrap() };
    let a = MockUpstream::start(move |_| down()).await;
    let b = MockUpstream::start(move |_| down()).await;
    let weir = TestWeir::start(&policy(&format!(
        "  a:\n    route: /a\n    url: {}\n    fallback: b\n    retry:\n      attempts: 1\n  b:\n    route: /b\n    url: {}\n    retry:\n      attempts: 1\n",
        a.url(),
        b.url()
    )))
    .await;
    let response = send(get(&weir.url("/a/x"))).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["x-weir-upstream"], "b");
    assert_eq!(response.headers()["x-weir-attempts"], "2");
    assert_eq!(response.headers()["x-should-retry"], "false");
    assert_eq!((a.hits(), b.hits()), (1, 1));
    weir.shutdown().await;
}
