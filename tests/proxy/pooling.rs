//! One pooled keep-alive client per upstream: connections are reused,
//! replaced when idle-expired, warmed at start, and h2 multiplexes.

use crate::support::*;

#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let upstream = MockUpstream::fixed("ok").await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n",
        upstream.url()
    )))
    .await;
    for _ in 0..50 {
        let response = send(get(&weir.url("/v1/models"))).await;
        assert_eq!(body_string(response).await, "ok");
    }
    assert_eq!(upstream.hits(), 50);
    assert_eq!(upstream.connections(), 1);
    assert_eq!(
        weir.metric(r#"weir_upstream_connections_opened_total{upstream="llm"}"#)
            .await,
        1.0
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn an_idle_expired_connection_is_closed_and_replaced() {
    let upstream = MockUpstream::fixed("ok").await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n    pool:\n      idle_timeout: 200ms\n",
        upstream.url()
    )))
    .await;
    body_string(send(get(&weir.url("/a"))).await).await;
    assert_eq!(upstream.connections(), 1);
    // The pool closes the idle connection by itself.
    eventually("the idle connection is closed", || {
        upstream.open_connections() == 0
    })
    .await;
    body_string(send(get(&weir.url("/b"))).await).await;
    assert_eq!(upstream.connections(), 2);
    assert_eq!(
        weir.metric(r#"weir_upstream_connections_opened_total{upstream="llm"}"#)
            .await,
        2.0
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn warm_connections_are_opened_at_start() {
    let upstream = MockUpstream::fixed("ok").await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n    pool:\n      warm: 3\n",
        upstream.url()
    )))
    .await;
    eventually("three warm connections", || {
        upstream.open_connections() == 3
    })
    .await;
    // They are pooled: three concurrent requests open nothing new.
    let requests = (0..3).map(|_| send(get(&weir.url("/x"))));
    for response in futures_join(requests).await {
        assert_eq!(response.status(), 200);
    }
    assert_eq!(upstream.connections(), 3);
    weir.shutdown().await;
}

#[tokio::test]
async fn http2_upstream_multiplexes_on_one_connection() {
    let upstream = MockUpstream::start(|request| async move {
        http::Response::new(crate::support::upstream::full(format!(
            "{:?}",
            request.version()
        )))
    })
    .await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n    pool:\n      http2: true\n",
        upstream.url()
    )))
    .await;
    let requests = (0..20).map(|_| send(get(&weir.url("/x"))));
    for response in futures_join(requests).await {
        assert_eq!(body_string(response).await, "HTTP/2.0");
    }
    assert_eq!(upstream.connections(), 1);
    weir.shutdown().await;
}

async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test]
async fn connections_the_upstream_closed_are_never_a_client_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Answers one request per connection, claims keep-alive, then closes:
    // the way servers behave when their idle timeout is shorter than ours.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut read = 0;
                while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok",
                    )
                    .await;
                let _ = stream.shutdown().await;
            });
        }
    });
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: http://{addr}\n    retry:\n      attempts: 1\n"
    )))
    .await;
    for _ in 0..30 {
        let response = send(get(&weir.url("/x"))).await;
        assert_eq!(response.status(), 200);
        assert_eq!(body_string(response).await, "ok");
    }
    server.abort();
    weir.shutdown().await;
}
