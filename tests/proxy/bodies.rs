//! Bodies stream both ways intact, whatever their size.

use http::Request;
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};

use crate::support::upstream::full;
use crate::support::*;

const TEN_MIB: usize = 10 * 1024 * 1024;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn ten_mib_bodies_pass_both_ways_intact() {
    // The upstream hashes what it received and answers with 10 MiB of its own.
    let upstream = MockUpstream::start(|request| async move {
        let received = request.into_body().collect().await.unwrap().to_bytes();
        http::Response::builder()
            .header("x-received-len", received.len())
            .header("x-received-sha256", hex(&Sha256::digest(&received)))
            .body(full(pattern(TEN_MIB, 7)))
            .unwrap()
    })
    .await;
    let weir = TestWeir::start(&policy(&format!(
        "  big:\n    route: /big\n    url: {}\n",
        upstream.url()
    )))
    .await;

    for client in [client(), h2c_client()] {
        let sent = pattern(TEN_MIB, 3);
        let request = Request::post(weir.url("/big/upload"))
            .body(Full::from(sent.clone()))
            .unwrap();
        let response = tokio::time::timeout(PATIENCE, client.request(request))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["x-received-len"],
            TEN_MIB.to_string().as_str()
        );
        assert_eq!(
            response.headers()["x-received-sha256"],
            hex(&Sha256::digest(&sent)).as_str()
        );
        let body = body_bytes(response).await;
        assert_eq!(body.len(), TEN_MIB);
        assert!(
            body[..] == pattern(TEN_MIB, 7)[..],
            "response body corrupted"
        );
    }
    weir.shutdown().await;
}

/// An upstream that reads the whole request body before answering.
async fn reading_upstream() -> MockUpstream {
    MockUpstream::start(|request: http::Request<hyper::body::Incoming>| async move {
        let read = request.into_body().collect().await;
        let status = if read.is_ok() { 200 } else { 400 };
        http::Response::builder()
            .status(status)
            .body(full("read"))
            .unwrap()
    })
    .await
}

fn chunked_post(path: &str, len: usize) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nhost: weir\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{len:x}\r\n"
    )
    .into_bytes();
    out.extend(std::iter::repeat_n(b'a', len));
    out.extend_from_slice(b"\r\n0\r\n\r\n");
    out
}

#[tokio::test]
async fn a_body_over_max_request_body_is_413_whether_its_length_is_known_or_not() {
    let upstream = reading_upstream().await;
    let weir = TestWeir::start(&format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nlimits:\n  max_request_body: 1KiB\nupstreams:\n  held:\n    route: /held\n    url: {0}\n    kind: openai\n  streamed:\n    route: /streamed\n    url: {0}\n    kind: generic\n    retry:\n      attempts: 1\n",
        upstream.url()
    ))
    .await;
    // Declared: refused before anything is sent.
    let response = send(post(
        &weir.url("/held/v1/chat/completions"),
        vec![b'a'; 2000],
    ))
    .await;
    assert_eq!(response.status(), 413);
    assert_eq!(response.headers()["x-weir-reject"], "body_too_large");
    assert_eq!(upstream.hits(), 0);
    // Chunked, read for replay: refused once past the limit.
    let answer =
        crate::support::raw::exchange(weir.proxy, &chunked_post("/held/v1/chat/completions", 2000))
            .await;
    assert_eq!(crate::support::raw::status(&answer), 413, "{answer}");
    assert_eq!(upstream.hits(), 0);
    // Chunked and streamed through: cut at the limit, answered 413.
    let answer =
        crate::support::raw::exchange(weir.proxy, &chunked_post("/streamed/upload", 2000)).await;
    assert_eq!(crate::support::raw::status(&answer), 413, "{answer}");
    // At the limit: passes.
    let response = send(post(
        &weir.url("/held/v1/chat/completions"),
        vec![b'a'; 1024],
    ))
    .await;
    assert_eq!(response.status(), 200);
    let answer =
        crate::support::raw::exchange(weir.proxy, &chunked_post("/streamed/upload", 1024)).await;
    assert_eq!(crate::support::raw::status(&answer), 200, "{answer}");
    assert_eq!(
        weir.metric(r#"weir_rejected_total{reason="body_too_large",upstream="held"}"#)
            .await,
        2.0
    );
    weir.shutdown().await;
}
