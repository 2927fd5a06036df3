//! Token accounting: the tokens weir counts are the tokens the upstream
//! reported, per tenant and model, streamed or not; stream usage injection
//! is invisible to the client; the usage log matches the metrics and never
//! slows a request; token rate limits isolate tenants.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::support::mock_llm::MockConfig;
use crate::support::upstream::full;
use crate::support::*;

fn chat(url: &str, tenant: &str, body: &str) -> Request<Full<Bytes>> {
    Request::post(url)
        .header("content-type", "application/json")
        .header("x-weir-tenant", tenant)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

fn tokens(upstream: &str, model: &str, tenant: &str, kind: &str) -> String {
    format!(
        r#"weir_tokens_total{{model="{model}",tenant="{tenant}",type="{kind}",upstream="{upstream}"}}"#
    )
}

async fn llm_weir(extra: &str) -> (TestWeir, tokio::task::JoinHandle<std::io::Result<()>>) {
    let (url, mock) = start_mock_llm(MockConfig {
        chunks: 5,
        ..Default::default()
    })
    .await;
    let weir = TestWeir::start(&format!(
        "{extra}{}",
        policy(&format!("  llm:\n    route: /v1\n    url: {url}/v1\n"))
    ))
    .await;
    (weir, mock)
}

#[tokio::test]
async fn non_streamed_chat_and_embeddings_are_counted_per_tenant_and_model() {
    let (weir, _mock) = llm_weir("").await;
    // Four words of prompt, five completion tokens (the mock's `chunks`).
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"one two three four"}]}"#;
    for _ in 0..2 {
        let response = send(chat(&weir.url("/v1/chat/completions"), "team-a", body)).await;
        assert_eq!(body_json(response).await["usage"]["prompt_tokens"], 4);
    }
    send(chat(&weir.url("/v1/chat/completions"), "team-b", body)).await;
    let embed = r#"{"model":"text-embedding-3-small","input":["a b c","d e"]}"#;
    body_bytes(send(chat(&weir.url("/v1/embeddings"), "team-b", embed)).await).await;

    let text = weir.scrape().await;
    assert_eq!(
        metric_value(&text, &tokens("llm", "gpt-4o", "team-a", "prompt")),
        8.0
    );
    assert_eq!(
        metric_value(&text, &tokens("llm", "gpt-4o", "team-a", "completion")),
        10.0
    );
    assert_eq!(
        metric_value(&text, &tokens("llm", "gpt-4o", "team-b", "prompt")),
        4.0
    );
    assert_eq!(
        metric_value(
            &text,
            &tokens("llm", "text-embedding-3-small", "team-b", "prompt")
        ),
        5.0
    );
    assert_eq!(
        metric_value(&text, r#"weir_usage_missing_total{upstream="llm"}"#),
        0.0
    );
    assert!(
        !text.contains(r#"type="cached""#) && !text.contains(r#"type="reasoning""#),
        "no zero series for token types the upstream never reported"
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn stream_usage_is_injected_counted_and_hidden_from_the_client() {
    let (weir, _mock) = llm_weir("").await;
    let body = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi there"}]}"#;
    let response = send(chat(&weir.url("/v1/chat/completions"), "team-a", body)).await;
    assert_eq!(response.status(), 200);
    let text = body_string(response).await;
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.last(), Some(&"data: [DONE]"));
    for event in &events[..events.len() - 1] {
        let json: serde_json::Value =
            serde_json::from_str(event.trim_start_matches("data: ")).unwrap();
        assert!(
            json["choices"].as_array().is_some_and(|c| !c.is_empty()),
            "every chunk the client sees has a choice: {event}"
        );
    }
    // The mock reports usage only when asked: these counts prove the injection.
    let text = weir.scrape().await;
    assert_eq!(
        metric_value(&text, &tokens("llm", "gpt-4o-mini", "team-a", "prompt")),
        2.0
    );
    assert_eq!(
        metric_value(&text, &tokens("llm", "gpt-4o-mini", "team-a", "completion")),
        5.0
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn a_client_that_asked_for_stream_usage_keeps_its_usage_event() {
    let (weir, _mock) = llm_weir("").await;
    let body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"a b c"}]}"#;
    let text = body_string(send(chat(&weir.url("/v1/chat/completions"), "t", body)).await).await;
    assert!(
        text.contains(r#""choices":[]"#),
        "the usage-only event reaches the client: {text}"
    );
    assert!(text.contains(r#""prompt_tokens":3"#));
    assert_eq!(weir.metric(&tokens("llm", "m", "t", "prompt")).await, 3.0);
    weir.shutdown().await;
}

#[tokio::test]
async fn without_injection_a_stream_without_usage_counts_as_missing() {
    let (url, _mock) = start_mock_llm(MockConfig::default()).await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /v1\n    url: {url}/v1\n    accounting:\n      inject_stream_usage: false\n"
    )))
    .await;
    let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let text = body_string(send(chat(&weir.url("/v1/chat/completions"), "t", body)).await).await;
    assert!(!text.contains(r#""choices":[]"#));
    let scrape = weir.scrape().await;
    assert_eq!(
        metric_value(&scrape, r#"weir_usage_missing_total{upstream="llm"}"#),
        1.0
    );
    assert_eq!(
        metric_value(&scrape, &tokens("llm", "m", "t", "prompt")),
        0.0
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn responses_api_usage_is_counted_streamed_and_not() {
    let upstream = MockUpstream::start(|request| async move {
        let streamed = request.uri().query() == Some("stream");
        if !streamed {
            return http::Response::builder()
                .header("content-type", "application/json")
                .body(full(r#"{"id":"resp_1","object":"response","model":"gpt-4.1","output":[],"usage":{"input_tokens":11,"input_tokens_details":{"cached_tokens":4},"output_tokens":7,"output_tokens_details":{"reasoning_tokens":2},"total_tokens":18}}"#))
                .unwrap();
        }
        let events = concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"model\":\"gpt-4.1\"}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"model\":\"gpt-4.1\",\"usage\":{\"input_tokens\":3,\"output_tokens\":5,\"total_tokens\":8}}}\n\n",
        );
        http::Response::builder()
            .header("content-type", "text/event-stream")
            .body(full(events))
            .unwrap()
    })
    .await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /v1\n    url: {}\n",
        upstream.url()
    )))
    .await;
    body_bytes(
        send(chat(
            &weir.url("/v1/responses"),
            "t",
            r#"{"model":"gpt-4.1","input":"hi"}"#,
        ))
        .await,
    )
    .await;
    let streamed = send(chat(
        &weir.url("/v1/responses?stream"),
        "t",
        r#"{"model":"gpt-4.1","input":"hi","stream":true}"#,
    ))
    .await;
    assert!(body_string(streamed).await.contains("response.completed"));
    let text = weir.scrape().await;
    assert_eq!(
        metric_value(&text, &tokens("llm", "gpt-4.1", "t", "prompt")),
        14.0
    );
    assert_eq!(
        metric_value(&text, &tokens("llm", "gpt-4.1", "t", "completion")),
        12.0
    );
    assert_eq!(
        metric_value(&text, &tokens("llm", "gpt-4.1", "t", "cached")),
        4.0
    );
    assert_eq!(
        metric_value(&text, &tokens("llm", "gpt-4.1", "t", "reasoning")),
        2.0
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn a_bearer_key_is_a_tenant_by_its_hash_and_labels_are_capped() {
    let (weir, _mock) = llm_weir("metrics:\n  max_models: 1\n").await;
    for model in ["first", "second", "third"] {
        let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"x"}}]}}"#);
        let request = Request::post(weir.url("/v1/chat/completions"))
            .header("authorization", "Bearer sk-test-secret")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        body_bytes(send(request).await).await;
    }
    let text = weir.scrape().await;
    assert!(!text.contains("sk-test-secret"));
    let tenant = text
        .lines()
        .find_map(|l| l.split("tenant=\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    assert!(tenant.starts_with("key-"), "{tenant}");
    assert_eq!(
        metric_value(&text, &tokens("llm", "first", &tenant, "prompt")),
        1.0
    );
    assert_eq!(
        metric_value(&text, &tokens("llm", "other", &tenant, "prompt")),
        2.0
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn usage_log_lines_match_the_metrics() {
    let dir = Scratch::new("usage-log");
    let path = dir.0.join("usage.jsonl");
    let (weir, _mock) = llm_weir(&format!("usage_log: {}\n", path.display())).await;
    let plain = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"one two"}]}"#;
    let streamed = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"one two three"}]}"#;
    let mut ids = Vec::new();
    for (tenant, body) in [("a", plain), ("a", streamed), ("b", plain)] {
        let response = send(chat(&weir.url("/v1/chat/completions"), tenant, body)).await;
        ids.push(
            response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        body_bytes(response).await;
    }
    let text = weir.scrape().await;
    weir.shutdown().await;

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (line, id) in lines.iter().zip(&ids) {
        assert_eq!(line["request_id"], id.as_str());
        assert_eq!(line["upstream"], "llm");
        assert_eq!(line["model"], "gpt-4o");
        assert_eq!(line["status"], 200);
        assert_eq!(line["attempts"], 1);
        assert!(line["duration_ms"].as_f64().unwrap() >= 0.0);
        assert!(line["ts"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(lines[1]["streamed"], true);
    assert_eq!(lines[0]["streamed"], false);
    for tenant in ["a", "b"] {
        for (kind, field) in [
            ("prompt", "prompt_tokens"),
            ("completion", "completion_tokens"),
        ] {
            let logged: u64 = lines
                .iter()
                .filter(|l| l["tenant"] == tenant)
                .map(|l| l[field].as_u64().unwrap())
                .sum();
            assert_eq!(
                metric_value(&text, &tokens("llm", "gpt-4o", tenant, kind)),
                logged as f64,
                "{tenant} {kind}"
            );
        }
    }
}

#[tokio::test]
async fn a_saturated_usage_log_drops_events_without_slowing_requests() {
    let dir = Scratch::new("usage-fifo");
    let fifo = dir.0.join("usage.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    // A reader that opens the pipe but does not read until told: the writer
    // thread blocks once the pipe's buffer is full.
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let reader_path = fifo.clone();
    let reader = std::thread::spawn(move || {
        let mut file = std::fs::File::open(reader_path).unwrap();
        wait.recv().unwrap();
        let mut all = String::new();
        std::io::Read::read_to_string(&mut file, &mut all).unwrap();
        all.lines().count()
    });
    let (url, _mock) = start_mock_llm(MockConfig::default()).await;
    let yaml = format!(
        "usage_log: {}\n{}",
        fifo.display(),
        policy(&format!("  llm:\n    route: /v1\n    url: {url}/v1\n"))
    );
    let parsed = weir::config::parse(&yaml, "t.yaml", &|_| None).unwrap();
    let weir = TestWeir::start_with(
        parsed,
        weir::Options {
            usage_queue_capacity: 8,
        },
    )
    .await;

    let body = r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#;
    let total = 2000;
    let client = client();
    for _ in 0..(total / 50) {
        let batch: Vec<_> = (0..50)
            .map(|_| {
                tokio::spawn(client.request(chat(&weir.url("/v1/chat/completions"), "t", body)))
            })
            .collect();
        for b in batch {
            let response = tokio::time::timeout(PATIENCE, b)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(response.status(), 200);
            body_bytes(response).await;
        }
    }
    let dropped = weir.metric("weir_usage_events_dropped_total").await;
    assert!(dropped > 0.0, "the blocked log dropped events");

    go.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), weir.shutdown())
        .await
        .unwrap();
    let written = reader.join().unwrap();
    assert_eq!(
        written as f64 + dropped,
        total as f64,
        "every event is written or counted as dropped"
    );
}

#[tokio::test]
async fn a_tenant_in_token_debt_is_limited_and_others_are_not() {
    let (url, _mock) = start_mock_llm(MockConfig {
        chunks: 50,
        ..Default::default()
    })
    .await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /v1\n    url: {url}/v1\n    rate_limit:\n      tokens_per_minute: 60\n      key: tenant\n"
    )))
    .await;
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hello there you"}]}"#;
    // 53 tokens of a 60-token minute: still positive.
    assert_eq!(
        send(chat(&weir.url("/v1/chat/completions"), "heavy", body))
            .await
            .status(),
        200
    );
    // 106: in debt by 46 tokens.
    let second = send(chat(&weir.url("/v1/chat/completions"), "heavy", body)).await;
    assert_eq!(second.status(), 200);
    body_bytes(second).await;
    let limited = send(chat(&weir.url("/v1/chat/completions"), "heavy", body)).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["x-weir-reject"], "rate_limited");
    // 46 tokens of debt refill at 1 token/s.
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((45..=48).contains(&wait), "retry-after {wait}");
    assert_eq!(
        send(chat(&weir.url("/v1/chat/completions"), "light", body))
            .await
            .status(),
        200
    );
    weir.shutdown().await;
}
