//! `timeouts.first_byte` before the answer (504 `upstream_timeout`),
//! `timeouts.idle` and `timeouts.total` during a stream (the stream is cut),
//! and a refused connection (502 `upstream_connect`).

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::support::*;

#[tokio::test]
async fn no_answer_within_first_byte_is_a_504() {
    let upstream = MockUpstream::start(|_| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        http::Response::new(crate::support::upstream::full("late"))
    })
    .await;
    let weir = TestWeir::start(&policy(&format!(
        "  slow:\n    route: /\n    url: {}\n    timeouts:\n      first_byte: 200ms\n    retry:\n      attempts: 1\n",
        upstream.url()
    )))
    .await;
    let started = Instant::now();
    let response = send(get(&weir.url("/x"))).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(response.status(), 504);
    assert_eq!(response.headers()["x-weir-reject"], "upstream_timeout");
    assert_eq!(response.headers()["x-weir-upstream"], "slow");
    let json = body_json(response).await;
    assert_eq!(json["error"]["code"], "upstream_timeout");
    assert_eq!(
        weir.metric(r#"weir_upstream_attempts_total{result="timeout",upstream="slow"}"#)
            .await,
        1.0
    );
    assert_eq!(
        weir.metric(r#"weir_requests_total{code="504",outcome="upstream_error",upstream="slow"}"#)
            .await,
        1.0
    );
    weir.shutdown().await;
}

/// An upstream that sends `first` and then one event every `every` (or
/// nothing more when `None`), holding the stream open for a minute.
async fn trickle(every: Option<Duration>) -> MockUpstream {
    MockUpstream::start(move |_| async move {
        let (events, response) = sse_body();
        tokio::spawn(async move {
            let _ = events.send(Bytes::from_static(b"data: first\n\n")).await;
            let end = Instant::now() + Duration::from_secs(60);
            while Instant::now() < end {
                match every {
                    Some(gap) => {
                        tokio::time::sleep(gap).await;
                        if events
                            .send(Bytes::from_static(b"data: more\n\n"))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    None => {
                        events.closed().await;
                        return;
                    }
                }
            }
        });
        response
    })
    .await
}

async fn read_until_error(weir: &TestWeir) -> (usize, Duration) {
    let started = Instant::now();
    let response = send(get(&weir.url("/stream"))).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut chunks = 0;
    loop {
        match next_chunk(&mut body).await {
            Some(Ok(_)) => chunks += 1,
            Some(Err(_)) => return (chunks, started.elapsed()),
            None => panic!("the stream ended cleanly instead of being cut"),
        }
    }
}

#[tokio::test]
async fn a_stream_silent_for_longer_than_idle_is_cut() {
    let upstream = trickle(None).await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n    timeouts:\n      idle: 300ms\n",
        upstream.url()
    )))
    .await;
    let (chunks, elapsed) = read_until_error(&weir).await;
    assert_eq!(chunks, 1, "the first event arrives before the cut");
    assert!(
        elapsed >= Duration::from_millis(300),
        "cut after {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(10), "cut after {elapsed:?}");
    eventually("the upstream connection is closed", || {
        upstream.open_connections() == 0
    })
    .await;
    assert_eq!(
        weir.metric(r#"weir_requests_total{code="200",outcome="upstream_error",upstream="llm"}"#)
            .await,
        1.0
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn a_stream_longer_than_total_is_cut_even_while_active() {
    let upstream = trickle(Some(Duration::from_millis(50))).await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n    timeouts:\n      idle: 5s\n      total: 600ms\n",
        upstream.url()
    )))
    .await;
    let (chunks, elapsed) = read_until_error(&weir).await;
    assert!(chunks >= 2, "events flowed before the cut: {chunks}");
    assert!(
        elapsed >= Duration::from_millis(600),
        "cut after {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(10), "cut after {elapsed:?}");
    weir.shutdown().await;
}

#[tokio::test]
async fn a_refused_connection_is_a_502() {
    // A port that was just free: nothing listens there.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let weir = TestWeir::start(&policy(&format!(
        "  gone:\n    route: /\n    url: http://127.0.0.1:{port}\n    retry:\n      attempts: 1\n"
    )))
    .await;
    let response = send(get(&weir.url("/x"))).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["x-weir-reject"], "upstream_connect");
    let json = body_json(response).await;
    assert_eq!(json["error"]["code"], "upstream_connect");
    assert_eq!(json["error"]["type"], "weir_upstream_connect");
    assert!(json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("connect"));
    assert_eq!(
        weir.metric(r#"weir_upstream_attempts_total{result="connect",upstream="gone"}"#)
            .await,
        1.0
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stalls_its_body_gets_a_408_within_total() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = MockUpstream::fixed("never").await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n    timeouts:\n      total: 300ms\n",
        upstream.url()
    )))
    .await;
    let mut stream = tokio::net::TcpStream::connect(weir.proxy).await.unwrap();
    stream
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"model\":")
        .await
        .unwrap();
    // Each read is bounded: weir must answer, not wait for the 100 bytes.
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "weir answers before closing");
        answer.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&answer);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert_eq!(upstream.hits(), 0);
    weir.shutdown().await;
}
