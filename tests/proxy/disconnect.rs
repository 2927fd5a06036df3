//! A client that disconnects cancels its upstream request at once: the
//! upstream connection is closed and the request is counted `cancelled`.

use tokio::sync::mpsc;

use crate::support::*;

#[tokio::test]
async fn client_disconnect_mid_stream_closes_the_upstream_connection() {
    let (upstream, mut streams) = MockUpstream::held_streams().await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n",
        upstream.url()
    )))
    .await;

    let client = client();
    let (events, body) =
        open_stream(&client, &weir.url("/v1/chat/completions"), &mut streams).await;
    assert_eq!(upstream.open_connections(), 1);

    // The client goes away mid-stream.
    drop(body);
    drop(client);

    // The upstream sees its response abandoned: its connection closes and
    // the event channel's reader is gone, without any further write by it.
    tokio::time::timeout(PATIENCE, events.closed())
        .await
        .expect("the upstream response is dropped at once");
    eventually("the upstream connection is closed", || {
        upstream.open_connections() == 0
    })
    .await;
    let cancelled = r#"weir_requests_total{code="200",outcome="cancelled",upstream="llm"}"#;
    assert_eq!(weir.metric_eventually(cancelled, 1.0).await, 1.0);
    assert_eq!(weir.metric(r#"weir_in_flight{upstream="llm"}"#).await, 0.0);
    weir.shutdown().await;
}

#[tokio::test]
async fn client_disconnect_before_the_answer_cancels_the_upstream_request() {
    let (arrived_tx, mut arrived) = mpsc::channel::<()>(1);
    let upstream = MockUpstream::start(move |_| {
        let arrived_tx = arrived_tx.clone();
        async move {
            arrived_tx.send(()).await.unwrap();
            // Never answers.
            std::future::pending::<()>().await;
            unreachable!()
        }
    })
    .await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n",
        upstream.url()
    )))
    .await;
    let client = client();
    let pending = tokio::spawn(client.request(post(&weir.url("/v1/chat/completions"), "{}")));
    arrived.recv().await.unwrap();
    assert_eq!(upstream.open_connections(), 1);
    pending.abort();
    drop(client);
    eventually("the upstream connection is closed", || {
        upstream.open_connections() == 0
    })
    .await;
    let cancelled = r#"weir_requests_total{code="499",outcome="cancelled",upstream="llm"}"#;
    assert_eq!(weir.metric_eventually(cancelled, 1.0).await, 1.0);
    weir.shutdown().await;
}
