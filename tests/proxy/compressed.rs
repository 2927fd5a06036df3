//! Compressed answers are counted: the client gets the upstream's bytes as
//! sent, weir reads a decoded copy (gzip, deflate, br, zstd; JSON and SSE).
//! Stream usage injection asks the upstream for plain bytes, since it must
//! remove the event it added.

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;

use crate::support::upstream::full;
use crate::support::*;

fn encode(coding: &str, plain: &[u8]) -> Vec<u8> {
    match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(plain).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(plain).unwrap();
            e.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            e.write_all(plain).unwrap();
            drop(e);
            out
        }
        "zstd" => zstd::encode_all(plain, 3).unwrap(),
        other => panic!("{other}"),
    }
}

const JSON: &str = r#"{"id":"c","object":"chat.completion","model":"gpt-4o","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46}}"#;
const SSE: &str = "data: {\"model\":\"gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n";

fn tokens(model: &str, kind: &str) -> String {
    format!(r#"weir_tokens_total{{model="{model}",tenant="t",type="{kind}",upstream="llm"}}"#)
}

fn chat(url: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::post(url)
        .header("content-type", "application/json")
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .header("x-weir-tenant", "t")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// An upstream answering `plain` encoded with the coding the test names in
/// the path (`/gzip/...`), or plain when the request asks for identity.
async fn encoding_upstream(
    plain: &'static str,
    content_type: &'static str,
) -> (MockUpstream, Arc<Mutex<Vec<String>>>) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    let upstream = MockUpstream::start(move |request| {
        let accept = request
            .headers()
            .get("accept-encoding")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        log.lock().unwrap().push(accept.clone());
        let coding = request
            .uri()
            .path()
            .split('/')
            .nth(1)
            .unwrap_or("")
            .to_owned();
        async move {
            let response = Response::builder().header("content-type", content_type);
            if accept == "identity" {
                return response.body(full(plain)).unwrap();
            }
            response
                .header("content-encoding", coding.as_str())
                .body(full(encode(&coding, plain.as_bytes())))
                .unwrap()
        }
    })
    .await;
    (upstream, asked)
}

#[tokio::test]
async fn compressed_json_is_counted_and_passed_on_as_sent() {
    let (upstream, _) = encoding_upstream(JSON, "application/json").await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n    kind: openai\n",
        upstream.url()
    )))
    .await;
    for (n, coding) in ["gzip", "deflate", "br", "zstd"].iter().enumerate() {
        let url = weir.url(&format!("/{coding}/v1/chat/completions"));
        let response = send(chat(&url, r#"{"model":"gpt-4o","messages":[]}"#)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-encoding"], *coding);
        let body = body_bytes(response).await;
        assert_eq!(
            &body[..],
            &encode(coding, JSON.as_bytes())[..],
            "{coding}: bytes as sent"
        );
        let counted = (n + 1) as f64;
        assert_eq!(
            weir.metric_eventually(&tokens("gpt-4o", "prompt"), 12.0 * counted)
                .await,
            12.0 * counted,
            "{coding}"
        );
        assert_eq!(
            weir.metric(&tokens("gpt-4o", "completion")).await,
            34.0 * counted
        );
    }
    assert_eq!(
        weir.metric(r#"weir_usage_missing_total{upstream="llm"}"#)
            .await,
        0.0
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn compressed_streams_are_counted_and_injection_asks_for_plain_bytes() {
    let (upstream, asked) = encoding_upstream(SSE, "text/event-stream").await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n    kind: openai\n",
        upstream.url()
    )))
    .await;
    // The client asked for usage itself: nothing to strip, bytes as sent.
    let with_usage =
        r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
    for (n, coding) in ["gzip", "br", "zstd", "deflate"].iter().enumerate() {
        let url = weir.url(&format!("/{coding}/v1/chat/completions"));
        let response = send(chat(&url, with_usage)).await;
        assert_eq!(response.headers()["content-encoding"], *coding);
        let body = body_bytes(response).await;
        assert_eq!(&body[..], &encode(coding, SSE.as_bytes())[..], "{coding}");
        let counted = (n + 1) as f64;
        assert_eq!(
            weir.metric_eventually(&tokens("gpt-4o", "prompt"), 7.0 * counted)
                .await,
            7.0 * counted,
            "{coding}"
        );
    }
    // weir injects include_usage: it asks for identity and strips the event.
    let without = r#"{"model":"gpt-4o","stream":true,"messages":[]}"#;
    let response = send(chat(&weir.url("/gzip/v1/chat/completions"), without)).await;
    assert!(response.headers().get("content-encoding").is_none());
    let text = body_string(response).await;
    assert!(
        !text.contains("\"usage\""),
        "the injected usage event is removed: {text}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(
        asked.lock().unwrap().last().map(String::as_str),
        Some("identity")
    );
    assert_eq!(
        weir.metric_eventually(&tokens("gpt-4o", "prompt"), 35.0)
            .await,
        35.0
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn an_encoding_weir_cannot_read_counts_as_missing_usage() {
    let upstream = MockUpstream::start(|_| async {
        Response::builder()
            .header("content-type", "application/json")
            .header("content-encoding", "compress")
            .body(full("compressed with LZW, not really"))
            .unwrap()
    })
    .await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n    kind: openai\n",
        upstream.url()
    )))
    .await;
    let response = send(chat(&weir.url("/v1/chat/completions"), r#"{"model":"m"}"#)).await;
    assert_eq!(response.status(), 200);
    body_bytes(response).await;
    assert_eq!(
        weir.metric_eventually(r#"weir_usage_missing_total{upstream="llm"}"#, 1.0)
            .await,
        1.0
    );
    weir.shutdown().await;
}
