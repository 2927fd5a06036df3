//! SIGTERM-style drain: not ready at once, new connections refused, running
//! requests and streams finish, then weir exits cleanly.

use bytes::Bytes;

use crate::support::*;

#[tokio::test]
async fn a_running_stream_finishes_while_new_connections_are_refused() {
    let (upstream, mut streams) = MockUpstream::held_streams().await;
    let mut weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n",
        upstream.url()
    )))
    .await;
    assert_eq!(weir.admin_get("/readyz").await.0, 200);

    let client = client();
    let (events, mut body) =
        open_stream(&client, &weir.url("/v1/chat/completions"), &mut streams).await;

    weir.begin_shutdown();

    // Not ready, and no longer accepting.
    let mut refused = false;
    for _ in 0..500 {
        let ready = weir.admin_get("/readyz").await.0;
        let connect = tokio::net::TcpStream::connect(weir.proxy).await;
        if ready == 503 && connect.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        refused,
        "draining weir is not ready and refuses new connections"
    );

    // The stream in flight goes on to its end.
    for n in 2..=3 {
        let event = format!("data: {n}\n\n");
        events.send(Bytes::from(event.clone())).await.unwrap();
        assert_eq!(next_chunk(&mut body).await.unwrap().unwrap(), event);
    }
    drop(events);
    assert!(next_chunk(&mut body).await.is_none());

    tokio::time::timeout(PATIENCE, weir.join())
        .await
        .expect("weir exits once the stream is done")
        .expect("weir exits cleanly");
}
