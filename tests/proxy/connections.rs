//! Client connections weir closes: silent and slow ones at
//! `header_timeout` from accept, idle keep-alive ones at
//! `client_idle_timeout` (never a request in flight, however quiet), and
//! the longest idle first when `max_connections` are open; the admin
//! listener answers while the proxy port is full.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::raw;
use crate::support::*;

fn limited(limits: &str, upstream: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nshutdown:\n  drain_timeout: 5s\nlimits:\n{limits}upstreams:\n  llm:\n    route: /\n    url: {upstream}\n"
    )
}

const CLOSED: &str = "weir_connections_closed_total";

#[tokio::test]
async fn a_connection_that_never_sends_a_byte_is_closed_at_the_header_timeout() {
    let upstream = MockUpstream::fixed("ok").await;
    let weir = TestWeir::start(&limited("  header_timeout: 300ms\n", &upstream.url())).await;
    let mut silent = TcpStream::connect(weir.proxy).await.unwrap();
    assert_eq!(
        weir.metric_eventually(r#"weir_client_connections{listener="proxy"}"#, 1.0)
            .await,
        1.0
    );
    assert!(
        raw::closes(&mut silent).await,
        "the silent connection is closed"
    );
    assert_eq!(
        weir.metric_eventually(&format!(r#"{CLOSED}{{reason="header_timeout"}}"#), 1.0)
            .await,
        1.0
    );
    assert_eq!(
        weir.metric_eventually(r#"weir_client_connections{listener="proxy"}"#, 0.0)
            .await,
        0.0
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn a_head_sent_a_byte_at_a_time_is_cut_at_the_header_timeout() {
    let upstream = MockUpstream::fixed("ok").await;
    let weir = TestWeir::start(&limited("  header_timeout: 300ms\n", &upstream.url())).await;
    let mut slow = TcpStream::connect(weir.proxy).await.unwrap();
    slow.write_all(b"GET /v1/models HTTP/1.1\r\n")
        .await
        .unwrap();
    // Keep dripping header bytes; weir must close the connection anyway.
    let dripping = async {
        loop {
            if slow.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(PATIENCE, dripping)
        .await
        .expect("weir closes a slow head");
    assert_eq!(upstream.hits(), 0);
    assert_eq!(
        weir.metric_eventually(&format!(r#"{CLOSED}{{reason="header_timeout"}}"#), 1.0)
            .await,
        1.0
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_and_a_quiet_stream_is_not() {
    // The stream's events are 1 s apart, longer than the idle timeout.
    let (upstream, mut streams) = MockUpstream::held_streams().await;
    let weir = TestWeir::start(&limited(
        "  header_timeout: 10s\n  client_idle_timeout: 300ms\n",
        &upstream.url(),
    ))
    .await;
    let client = client();
    let (events, mut body) =
        open_stream(&client, &weir.url("/v1/chat/completions"), &mut streams).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    events.send(Bytes::from("data: 2\n\n")).await.unwrap();
    assert_eq!(next_chunk(&mut body).await.unwrap().unwrap(), "data: 2\n\n");
    drop(events);
    assert!(
        next_chunk(&mut body).await.is_none(),
        "the stream ended, intact"
    );
    assert_eq!(
        weir.metric(&format!(r#"{CLOSED}{{reason="idle"}}"#)).await,
        0.0
    );

    // A keep-alive connection after its answer: closed once idle.
    let mut stream = TcpStream::connect(weir.proxy).await.unwrap();
    stream
        .write_all(b"GET /v1/models HTTP/1.1\r\nhost: weir\r\n\r\n")
        .await
        .unwrap();
    let events = streams
        .recv()
        .await
        .expect("the request reaches the upstream");
    events.send(Bytes::from("data: [DONE]\n\n")).await.unwrap();
    drop(events); // the answer ends; the connection stays open, idle
    let answer = raw::read_to_close(&mut stream).await;
    assert_eq!(raw::status(&answer), 200, "{answer}");
    assert!(
        weir.metric_eventually(&format!(r#"{CLOSED}{{reason="idle"}}"#), 2.0)
            .await
            >= 1.0
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn past_max_connections_the_longest_idle_makes_room() {
    let upstream = MockUpstream::fixed("ok").await;
    let weir = TestWeir::start(&limited(
        "  header_timeout: 60s\n  max_connections: 2\n",
        &upstream.url(),
    ))
    .await;
    let mut oldest = TcpStream::connect(weir.proxy).await.unwrap();
    assert_eq!(
        weir.metric_eventually(r#"weir_client_connections{listener="proxy"}"#, 1.0)
            .await,
        1.0
    );
    let mut newer = TcpStream::connect(weir.proxy).await.unwrap();
    assert_eq!(
        weir.metric_eventually(r#"weir_client_connections{listener="proxy"}"#, 2.0)
            .await,
        2.0
    );
    // A real client arrives: served, and the oldest silent connection goes.
    let answer = raw::exchange(weir.proxy, &raw::get_closing("/v1/models")).await;
    assert_eq!(raw::status(&answer), 200, "{answer}");
    assert!(
        raw::closes(&mut oldest).await,
        "the longest idle was closed"
    );
    assert_eq!(
        weir.metric_eventually(&format!(r#"{CLOSED}{{reason="max_connections"}}"#), 1.0)
            .await,
        1.0
    );
    newer
        .write_all(b"GET /v1/models HTTP/1.1\r\nhost: weir\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = raw::read_to_close(&mut newer).await;
    assert_eq!(
        raw::status(&answer),
        200,
        "the newer one still works: {answer}"
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn with_every_connection_busy_newcomers_are_refused_and_admin_answers() {
    let (upstream, release) = MockUpstream::gated().await;
    let weir = TestWeir::start(&limited("  max_connections: 2\n", &upstream.url())).await;
    let client = client();
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let url = weir.url("/v1/models");
            tokio::spawn(async move { crate::support::client().request(get(&url)).await })
        })
        .collect();
    eventually("both requests reach the upstream", || upstream.hits() == 2).await;
    let mut refused = TcpStream::connect(weir.proxy).await.unwrap();
    let _ = refused.write_all(&raw::get_closing("/v1/models")).await;
    let answer = raw::read_to_close(&mut refused).await;
    assert!(answer.is_empty(), "refused without an answer: {answer}");
    let (status, metrics) = weir.admin_get("/metrics").await;
    assert_eq!(status, 200, "the admin listener answers");
    assert!(
        metrics.contains(r#"weir_connections_closed_total{reason="max_connections"} 1"#),
        "{metrics}"
    );
    release.send(true).unwrap();
    for b in busy {
        assert_eq!(
            b.await.unwrap().unwrap().status(),
            200,
            "nothing in flight was cut"
        );
    }
    drop(client);
    weir.shutdown().await;
}
