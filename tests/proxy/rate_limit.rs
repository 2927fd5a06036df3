//! Request rate limits: token buckets, global or per tenant, answering
//! `429 rate_limited` with a `retry-after` that is right.

use http::Request;
use http_body_util::Full;

use crate::support::*;

fn as_tenant(url: &str, tenant: &str) -> Request<Full<bytes::Bytes>> {
    Request::get(url)
        .header("x-weir-tenant", tenant)
        .body(Full::default())
        .unwrap()
}

#[tokio::test]
async fn a_tenant_over_its_limit_does_not_limit_another() {
    let upstream = MockUpstream::fixed("ok").await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n    rate_limit:\n      requests_per_second: 0.5\n      burst: 2\n      key: tenant\n",
        upstream.url()
    )))
    .await;
    for _ in 0..2 {
        assert_eq!(
            send(as_tenant(&weir.url("/x"), "alpha")).await.status(),
            200
        );
    }
    let limited = send(as_tenant(&weir.url("/x"), "alpha")).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["x-weir-reject"], "rate_limited");
    // One request refills in 2 s at 0.5/s.
    assert_eq!(limited.headers()["retry-after"], "2");
    assert_eq!(body_json(limited).await["error"]["code"], "rate_limited");

    for _ in 0..2 {
        assert_eq!(send(as_tenant(&weir.url("/x"), "beta")).await.status(), 200);
    }
    assert_eq!(upstream.hits(), 4);
    assert_eq!(
        weir.metric(r#"weir_rejected_total{reason="rate_limited",upstream="llm"}"#)
            .await,
        1.0
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn a_global_limit_is_shared_by_every_tenant() {
    let upstream = MockUpstream::fixed("ok").await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n    rate_limit:\n      requests_per_second: 1\n      burst: 1\n",
        upstream.url()
    )))
    .await;
    assert_eq!(
        send(as_tenant(&weir.url("/x"), "alpha")).await.status(),
        200
    );
    let limited = send(as_tenant(&weir.url("/x"), "beta")).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "1");
    weir.shutdown().await;
}

#[tokio::test]
async fn a_huge_answer_never_sends_a_client_away_for_longer_than_the_window() {
    // 9,000,000 tokens in one answer (believable), against 100 a minute.
    let upstream = MockUpstream::json(
        r#"{"model":"m","choices":[],"usage":{"prompt_tokens":9000000,"completion_tokens":0}}"#,
    )
    .await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n    kind: openai\n    rate_limit:\n      tokens_per_minute: 100\n",
        upstream.url()
    )))
    .await;
    let first = send(post(&weir.url("/v1/chat/completions"), r#"{"model":"m"}"#)).await;
    assert_eq!(first.status(), 200);
    body_bytes(first).await;
    let mut limited = None;
    for _ in 0..50 {
        let response = send(post(&weir.url("/v1/chat/completions"), r#"{"model":"m"}"#)).await;
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
        body_bytes(response).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let limited = limited.expect("the debt is charged");
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "retry-after {wait}");
    weir.shutdown().await;
}
