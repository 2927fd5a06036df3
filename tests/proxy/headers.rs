//! Header hygiene: hop-by-hop headers removed both ways, `host` rewritten,
//! `x-forwarded-*` set, `x-request-id` kept or generated and echoed, policy
//! `headers` replacing the client's, `x-weir-*` on every response.

use http::Request;
use http_body_util::Full;

use crate::support::upstream::full;
use crate::support::*;

/// An upstream that answers with the request headers it saw, as JSON.
async fn header_echo() -> MockUpstream {
    MockUpstream::start(|request| async move {
        let mut seen = serde_json::Map::new();
        for (name, value) in request.headers() {
            seen.insert(name.to_string(), value.to_str().unwrap_or("?").into());
        }
        http::Response::builder()
            .header("connection", "x-upstream-private")
            .header("x-upstream-private", "secret")
            .header("x-upstream-public", "yes")
            .body(full(serde_json::Value::Object(seen).to_string()))
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn request_headers_are_cleaned_rewritten_and_injected() {
    let upstream = header_echo().await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /llm\n    url: {}\n    headers:\n      authorization: Bearer policy-key\n      x-org: acme\n",
        upstream.url()
    )))
    .await;
    let request = Request::post(weir.url("/llm/v1/chat"))
        .header("host", "client.example")
        .header("connection", "keep-alive, x-client-private")
        .header("x-client-private", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic abc")
        .header("te", "trailers")
        .header("authorization", "Bearer client-key")
        .header("x-forwarded-for", "10.1.2.3")
        .header("x-request-id", "req-42")
        .header("x-app", "kept")
        .body(Full::from("{}"))
        .unwrap();
    let response = send(request).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-weir-upstream"], "llm");
    assert_eq!(response.headers()["x-weir-attempts"], "1");
    assert_eq!(response.headers()["x-request-id"], "req-42");
    assert_eq!(response.headers()["x-upstream-public"], "yes");
    assert!(
        !response.headers().contains_key("x-upstream-private"),
        "a header the upstream named in `connection` must not reach the client"
    );
    let seen = body_json(response).await;

    for gone in [
        "connection",
        "keep-alive",
        "x-client-private",
        "proxy-authorization",
        "te",
    ] {
        assert!(
            seen.get(gone).is_none(),
            "{gone} reached the upstream: {seen}"
        );
    }
    assert_eq!(seen["host"], upstream.addr.to_string());
    assert_eq!(seen["authorization"], "Bearer policy-key");
    assert_eq!(seen["x-org"], "acme");
    assert_eq!(seen["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-request-id"], "req-42");
    assert_eq!(seen["x-app"], "kept");
    weir.shutdown().await;
}

#[tokio::test]
async fn a_generated_request_id_is_sent_upstream_and_returned() {
    let upstream = header_echo().await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n",
        upstream.url()
    )))
    .await;
    let first = send(get(&weir.url("/x"))).await;
    let returned = first.headers()["x-request-id"].to_str().unwrap().to_owned();
    let seen = body_json(first).await;
    assert_eq!(seen["x-request-id"], returned.as_str());
    assert_eq!(returned.len(), 36, "a UUID: {returned}");

    let second = send(get(&weir.url("/x"))).await;
    assert_ne!(second.headers()["x-request-id"], returned.as_str());
    weir.shutdown().await;
}
