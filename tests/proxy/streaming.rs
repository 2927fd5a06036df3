//! A streamed (SSE) response reaches the client event by event as the
//! upstream sends it: nothing waits for the end.

use bytes::Bytes;

use crate::support::*;

#[tokio::test]
async fn each_event_reaches_the_client_while_the_upstream_holds_the_rest() {
    let (upstream, mut streams) = MockUpstream::held_streams().await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /v1\n    url: {}\n",
        upstream.url()
    )))
    .await;

    for client in [client(), h2c_client()] {
        let request = post(&weir.url("/v1/chat/completions"), r#"{"stream":true}"#);
        let pending = tokio::spawn(client.request(request));
        let events = streams.recv().await.unwrap();
        events
            .send(Bytes::from_static(b"data: {\"n\":1}\n\n"))
            .await
            .unwrap();
        let response = pending.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut body = response.into_body();

        // The first event arrives although the upstream has not finished.
        let first = next_chunk(&mut body).await.unwrap().unwrap();
        assert_eq!(first, "data: {\"n\":1}\n\n");

        for n in 2..=4 {
            let event = format!("data: {{\"n\":{n}}}\n\n");
            events.send(Bytes::from(event.clone())).await.unwrap();
            let got = next_chunk(&mut body).await.unwrap().unwrap();
            assert_eq!(got, event);
        }
        events
            .send(Bytes::from_static(b"data: [DONE]\n\n"))
            .await
            .unwrap();
        drop(events);
        let last = next_chunk(&mut body).await.unwrap().unwrap();
        assert_eq!(last, "data: [DONE]\n\n");
        let end = next_chunk(&mut body).await;
        assert!(
            end.is_none(),
            "stream ends after the upstream's end: {end:?}"
        );
    }
    assert_eq!(
        weir.metric(r#"weir_requests_total{code="200",outcome="ok",upstream="llm"}"#)
            .await,
        2.0
    );
    weir.shutdown().await;
}
