//! Tests of the SSE usage parser, byte splits and property tests included.

use proptest::prelude::*;

use super::*;

/// Real stream shapes (`\n` line ends here; tests rewrite them), each
/// with the model and `[prompt, completion, cached, reasoning]` it reports.
const CORPUS: [(&str, &str, Option<[u64; 4]>); 5] = [
    (CHAT, "gpt-4o-mini", Some([19, 10, 3, 2])),
    (TOOLS, "gpt-4o-mini", Some([80, 17, 0, 0])),
    (REFUSAL, "gpt-4o", Some([12, 5, 0, 0])),
    (RESPONSES, "gpt-4.1", Some([36, 87, 12, 64])),
    (NO_USAGE, "mock-gpt", None),
];

const CHAT: &str = r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","system_fingerprint":"fp_0","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","system_fingerprint":"fp_0","choices":[{"index":0,"delta":{"content":"Hello \"usage\": {"},"logprobs":null,"finish_reason":null}],"usage":null}

: keep-alive

data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","system_fingerprint":"fp_0","choices":[{"index":0,"delta":{"content":"usage"},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","system_fingerprint":"fp_0","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}

data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","system_fingerprint":"fp_0","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":3,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":2}}}

data: [DONE]"#;

const TOOLS: &str = r#"data: {"id":"c2","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}],"usage":null}

data: {"id":"c2","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"finish_reason":null}],"usage":null}

data: {"id":"c2","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":" \"Paris\", \"usage\""}}]},"finish_reason":null}],"usage":null}

data: {"id":"c2","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":": {\"x\": 1}}"}}]},"finish_reason":null}],"usage":null}

data: {"id":"c2","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":null}

data: {"id":"c2","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":80,"completion_tokens":17,"total_tokens":97}}

data: [DONE]"#;

const REFUSAL: &str = r#"data: {"id":"c3","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","refusal":""},"finish_reason":null}],"usage":null}

data: {"id":"c3","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"refusal":"I can't"},"finish_reason":null}],"usage":null}

data: {"id":"c3","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"refusal":" help."},"finish_reason":null}],"usage":null}

data: {"id":"c3","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}

data: {"id":"c3","object":"chat.completion.chunk","model":"gpt-4o","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,"completion_tokens_details":{"reasoning_tokens":0}}}

data: [DONE]"#;

const RESPONSES: &str = r#"event: response.created
data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","status":"in_progress","model":"gpt-4.1","output":[],"usage":null}}

event: response.output_text.delta
data: {"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi \"usage\": {\"input_tokens\": 99}"}

: ping

event: response.completed
data: {"type":"response.completed","sequence_number":2,"response":{"id":"resp_1","object":"response","status":"completed",
data: "model":"gpt-4.1","output":[{"type":"message","content":[{"type":"output_text","text":"Hi"}]}],"usage"
data: :{"input_tokens":36,"input_tokens_details":{"cached_tokens":12},"output_tokens":87,
data: "output_tokens_details":{"reasoning_tokens":64},"total_tokens":123}}}"#;

const NO_USAGE: &str = r#"retry: 3000
id: 1

data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","created":0,"model":"mock-gpt","choices":[{"index":0,"delta":{"content":"tok0 "},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","created":0,"model":"mock-gpt","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}

data: [DONE]"#;

fn usage([prompt, completion, cached, reasoning]: [u64; 4]) -> Usage {
    Usage {
        prompt,
        completion,
        cached,
        reasoning,
    }
}

/// A corpus stream with line ends by `mode` (`\n`, `\r\n`, `\r`, or
/// `\n`/`\r\n` mixed by the bits of `seed`), and the same bytes without
/// its usage-only event.
fn build(text: &str, mode: u8, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let (mut all, mut kept, mut n) = (Vec::new(), Vec::new(), 0);
    for event in text.split("\n\n") {
        let mut bytes = String::new();
        for line in event.split('\n').chain([""]) {
            n += 1;
            bytes += line;
            bytes += match mode {
                0 => "\n",
                1 => "\r\n",
                2 => "\r",
                _ if seed.rotate_right(n) & 1 == 1 => "\r\n",
                _ => "\n",
            };
        }
        all.extend_from_slice(bytes.as_bytes());
        if !event.contains(r#""choices":[],"usage":{"#) {
            kept.extend_from_slice(bytes.as_bytes());
        }
    }
    (all, kept)
}

/// Feeds `input` cut at `cuts` (sorted); returns the parser and what the
/// client received.
fn run(strip: bool, input: &[u8], cuts: &[usize]) -> (SseUsage, Vec<u8>) {
    let input = Bytes::copy_from_slice(input);
    let (mut parser, mut sent, mut from) = (SseUsage::new(strip), Vec::new(), 0);
    for &cut in cuts.iter().chain([input.len()].iter()) {
        let chunk = input.slice(from..cut);
        let out = parser.feed(&chunk);
        assert_eq!(out.is_some(), strip);
        sent.extend_from_slice(out.as_deref().unwrap_or(&chunk[..]));
        from = cut;
    }
    let rest = parser.finish();
    assert!(strip || rest.is_none());
    sent.extend_from_slice(&rest.unwrap_or_default());
    (parser, sent)
}

/// Model, usage and forwarded bytes as expected, and as one-shot parsing
/// gives them, in both modes.
fn check(which: usize, (input, kept): &(Vec<u8>, Vec<u8>), cuts: &[usize]) {
    let (_, model, expected) = CORPUS[which];
    for strip in [false, true] {
        let (parser, sent) = run(strip, input, cuts);
        let (one_shot, _) = run(strip, input, &[]);
        assert_eq!(parser.model(), Some(model));
        assert_eq!(parser.usage(), expected.map(usage).as_ref());
        assert_eq!(
            (parser.model(), parser.usage()),
            (one_shot.model(), one_shot.usage())
        );
        assert_eq!(parser.stripped(), strip && input != kept);
        assert!(sent == if strip { &kept[..] } else { &input[..] });
    }
}

#[test]
fn chat_stream_with_include_usage_chunk() {
    check(0, &build(CHAT, 0, 0), &[]);
    check(1, &build(TOOLS, 0, 0), &[]);
    check(2, &build(REFUSAL, 0, 0), &[]);
}

#[test]
fn responses_stream_with_multi_line_data() {
    check(3, &build(RESPONSES, 0, 0), &[]);
    check(3, &build(RESPONSES, 2, 0), &[]);
}

#[test]
fn crlf_comments_and_done() {
    for (which, (text, ..)) in CORPUS.iter().enumerate() {
        check(which, &build(text, 1, 0), &[]);
    }
}

#[test]
fn no_usage_is_none() {
    check(4, &build(NO_USAGE, 0, 0), &[]);
    let (parser, _) = run(
        true,
        b"data: {\"model\":\"m\",\"usage\":null}\n\n: x\n\n",
        &[],
    );
    assert_eq!((parser.model(), parser.usage()), (Some("m"), None));
}

#[test]
fn strip_false_never_alters_and_strip_removes_only_the_usage_only_event() {
    let only = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}";
    let input = [&only[..], b"\r\n\r\ndata: [DONE]\r\n\r\n"].concat();
    let mut pass = SseUsage::new(false);
    assert_eq!(pass.feed(&Bytes::from(input.clone())), None);
    assert_eq!((pass.finish(), pass.stripped()), (None, false));
    let mut strip = SseUsage::new(true);
    let out = strip.feed(&Bytes::from(input));
    assert_eq!(out.as_deref(), Some(&b"data: [DONE]\r\n\r\n"[..]));
    assert!(strip.stripped() && strip.usage() == Some(&usage([1, 0, 0, 0])));
    // An event the stream never ends is not read, but reaches the client.
    let (parser, sent) = run(true, only, &[7]);
    assert_eq!((&sent[..], parser.usage()), (&only[..], None));
}

#[test]
fn oversized_event_is_bounded_and_forwarded_intact() {
    let mut input =
        b": hi\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5},\"x\":\"".to_vec();
    input.resize(input.len() + MAX_EVENT, b'x');
    let last = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7}}\r\n\r\n";
    input.extend_from_slice(b"\"}\r\n\r\n");
    input.extend_from_slice(last);
    let tail = input.len() - last.len();
    for (strip, step) in [(true, 65_536), (true, 100_003), (false, 65_536)] {
        let input = Bytes::from(input.clone());
        let (mut parser, mut sent) = (SseUsage::new(strip), Vec::new());
        for at in (0..input.len()).step_by(step) {
            let chunk = input.slice(at..input.len().min(at + step));
            sent.extend_from_slice(&parser.feed(&chunk).unwrap_or(chunk));
            assert!(parser.held_capacity() <= MAX_EVENT + 1);
        }
        assert!(parser.held_capacity() <= KEEP_CAPACITY);
        assert_eq!(parser.usage(), Some(&usage([7, 0, 0, 0])));
        assert_eq!(parser.stripped(), strip);
        assert!(sent == if strip { &input[..tail] } else { &input[..] });
    }
}

#[test]
fn usage_pre_check() {
    for (event, live) in [
        (&br#"data: {"usage":null}"#[..], false),
        (br#"data: {"usage" : null,"content":"usage"}"#, false),
        (br#"data: {"content":"\"usage\": {"}"#, false),
        (br#"data: {"usage":{"prompt_tokens":1}}"#, true),
        (b"data: {\"usage\"\ndata: :null}", true),
    ] {
        assert_eq!(
            has_live_usage(event),
            live,
            "{}",
            String::from_utf8_lossy(event)
        );
    }
}

#[test]
fn every_split_position() {
    for (which, (text, ..)) in CORPUS.iter().enumerate() {
        for mode in 0..4 {
            let stream = build(text, mode, 0x9e37_79b9_7f4a_7c15);
            for at in 0..=stream.0.len() {
                check(which, &stream, &[at]);
            }
            check(which, &stream, &(0..stream.0.len()).collect::<Vec<_>>());
        }
    }
}

proptest! {
    #[test]
    fn any_chunking_reads_what_one_shot_reads(
        which in 0..CORPUS.len(),
        mode in 0..4u8,
        seed: u64,
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
    ) {
        let stream = build(CORPUS[which].0, mode, seed);
        let mut cuts: Vec<_> = cuts.iter().map(|c| c.index(stream.0.len() + 1)).collect();
        cuts.sort_unstable();
        check(which, &stream, &cuts);
    }

    #[test]
    fn any_input_reads_and_strips_alike_however_chunked(
        parts in prop::collection::vec(prop::sample::select(&[
            "data: ", "data:", "event: x", "\r", "\n", "\r\n", ":", "x", "\"usage\":",
            r#"{"choices":[],"usage":{"prompt_tokens":1}}"#, r#"{"model":"m"}"#,
            r#"{"choices":[{}],"usage":{"input_tokens":2}}"#, "null", "[DONE]",
        ][..]), 0..40),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let input = parts.concat().into_bytes();
        let mut cuts: Vec<_> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        cuts.sort_unstable();
        let (one_shot, whole) = run(true, &input, &[]);
        let (parser, sent) = run(true, &input, &cuts);
        prop_assert_eq!((parser.model(), parser.usage()), (one_shot.model(), one_shot.usage()));
        prop_assert_eq!(&sent, &whole);
        prop_assert!(parser.stripped() || sent == input);
        let (passed, _) = run(false, &input, &cuts);
        prop_assert_eq!((passed.model(), passed.usage()), (one_shot.model(), one_shot.usage()));
    }
}
