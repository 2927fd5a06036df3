//! A request to `route` + rest goes to `url` + rest, query kept; the longest
//! route wins; anything else is `404 no_route`.

use crate::support::*;

#[tokio::test]
async fn strips_the_route_joins_the_base_path_and_keeps_the_query() {
    let upstream = MockUpstream::start(|request| async move {
        let uri = request.uri().to_string();
        http::Response::new(crate::support::upstream::full(uri))
    })
    .await;
    let weir = TestWeir::start(&policy(&format!(
        "  echo:\n    route: /openai\n    url: {}/base/v1\n",
        upstream.url()
    )))
    .await;

    let response = send(get(&weir.url("/openai/chat/completions?x=1&y=%20z"))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        body_string(response).await,
        "/base/v1/chat/completions?x=1&y=%20z"
    );

    let response = send(get(&weir.url("/openai"))).await;
    assert_eq!(body_string(response).await, "/base/v1");
    weir.shutdown().await;
}

#[tokio::test]
async fn the_longest_route_wins_on_a_segment_boundary() {
    let short = MockUpstream::fixed("short").await;
    let long = MockUpstream::fixed("long").await;
    let weir = TestWeir::start(&policy(&format!(
        "  short:\n    route: /api\n    url: {}\n  long:\n    route: /api/embeddings\n    url: {}\n",
        short.url(),
        long.url()
    )))
    .await;

    let response = send(get(&weir.url("/api/embeddings/v1"))).await;
    assert_eq!(response.headers()["x-weir-upstream"], "long");
    assert_eq!(body_string(response).await, "long");

    let response = send(get(&weir.url("/api/chat"))).await;
    assert_eq!(response.headers()["x-weir-upstream"], "short");
    assert_eq!(body_string(response).await, "short");

    // `/api/embeddingsX` is not under `/api/embeddings`, but is under `/api`.
    let response = send(get(&weir.url("/api/embeddingsX"))).await;
    assert_eq!(body_string(response).await, "short");

    // `/apix` matches no route at all.
    let response = send(get(&weir.url("/apix"))).await;
    assert_eq!(response.status(), 404);
    weir.shutdown().await;
}

#[tokio::test]
async fn no_route_is_a_404_in_the_openai_error_shape() {
    let upstream = MockUpstream::fixed("x").await;
    let weir = TestWeir::start(&policy(&format!(
        "  a:\n    route: /a\n    url: {}\n",
        upstream.url()
    )))
    .await;
    let response = send(get(&weir.url("/elsewhere"))).await;
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-weir-reject"], "no_route");
    assert!(response.headers().contains_key("x-request-id"));
    let json = body_json(response).await;
    assert_eq!(json["error"]["code"], "no_route");
    assert_eq!(json["error"]["type"], "weir_no_route");
    assert!(json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/elsewhere"));
    assert_eq!(upstream.hits(), 0);
    assert_eq!(
        weir.metric(r#"weir_rejected_total{reason="no_route",upstream="none"}"#)
            .await,
        1.0
    );
    weir.shutdown().await;
}
