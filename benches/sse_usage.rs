//! Why: every streamed answer weir proxies passes through the SSE usage
//! parser, and every non-streamed one through `parse_json`, so their cost is
//! paid on the hot path of each request. This measures their throughput on
//! realistic input: a 200-event chat stream (about 55 KB) fed one event per
//! chunk and in 64-byte chunks, in pass-through and strip mode, and a typical
//! 1 KB chat completion.
//!
//! `cargo bench --bench sse_usage` (add `-- --quick` for a fast look).

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weir::usage::json::parse_json;
use weir::usage::sse::SseUsage;

const HEAD: &str = r#"{"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_eb9dce56a8","choices":"#;

/// A chat stream as OpenAI sends it with `include_usage`: a role chunk, 196
/// content chunks, a finish chunk, the usage-only chunk and `[DONE]`.
fn chat_stream() -> Vec<Bytes> {
    let chunk = |choices: &str, usage: &str| {
        Bytes::from(format!("data: {HEAD}{choices},\"usage\":{usage}}}\n\n"))
    };
    let choice = |delta: &str, finish: &str| {
        format!(r#"[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]"#)
    };
    let mut events = vec![chunk(
        &choice(
            r#"{"role":"assistant","content":"","refusal":null}"#,
            "null",
        ),
        "null",
    )];
    for i in 0..196 {
        let delta = format!(r#"{{"content":" word{i}"}}"#);
        events.push(chunk(&choice(&delta, "null"), "null"));
    }
    events.push(chunk(&choice("{}", r#""stop""#), "null"));
    events.push(chunk(
        "[]",
        r#"{"prompt_tokens":1117,"completion_tokens":197,"total_tokens":1314,"prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}"#,
    ));
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

/// The same bytes cut into `size`-byte chunks, zero-copy.
fn rechunk(events: &[Bytes], size: usize) -> Vec<Bytes> {
    let all = Bytes::from(events.concat());
    (0..all.len())
        .step_by(size)
        .map(|at| all.slice(at..all.len().min(at + size)))
        .collect()
}

fn stream(chunks: &[Bytes], strip: bool) -> usize {
    let mut parser = SseUsage::new(strip);
    let mut forwarded = 0;
    for chunk in chunks {
        forwarded += parser.feed(chunk).map_or(chunk.len(), |out| out.len());
    }
    forwarded += parser.finish().map_or(0, |rest| rest.len());
    assert!(parser.usage().is_some() && parser.model().is_some());
    forwarded
}

fn sse(c: &mut Criterion) {
    let events = chat_stream();
    let bytes: usize = events.iter().map(Bytes::len).sum();
    let small = rechunk(&events, 64);
    let mut group = c.benchmark_group("sse_usage");
    group.throughput(Throughput::Bytes(bytes as u64));
    for (mode, strip) in [("pass_through", false), ("strip", true)] {
        group.bench_function(format!("{mode}/event_per_chunk"), |b| {
            b.iter(|| stream(black_box(&events), strip))
        });
        group.bench_function(format!("{mode}/64_byte_chunks"), |b| {
            b.iter(|| stream(black_box(&small), strip))
        });
    }
    group.finish();
}

fn json(c: &mut Criterion) {
    let content = "The quick brown fox jumps over the lazy dog. ".repeat(16);
    let body = format!(
        r#"{{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","created":1741570283,"model":"gpt-4o-2024-08-06","choices":[{{"index":0,"message":{{"role":"assistant","content":"{content}","refusal":null,"annotations":[]}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":1117,"completion_tokens":46,"total_tokens":1163,"prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}},"service_tier":"default","system_fingerprint":"fp_fc9f1d7035"}}"#
    );
    let mut group = c.benchmark_group("parse_json");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("chat_completion_1k", |b| {
        b.iter(|| parse_json(black_box(body.as_bytes())))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = sse, json
}
criterion_main!(benches);
