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
