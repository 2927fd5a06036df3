//! The SSE usage parser: any stream, cut anywhere, never panics; without
//! stripping every byte is forwarded unchanged; the usage found does not
//! depend on where the stream was cut.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use weir::usage::sse::SseUsage;

#[derive(Arbitrary, Debug)]
struct Input {
    stream: Vec<u8>,
    cuts: Vec<u16>,
    strip: bool,
}

fn run(
    stream: &[u8],
    cuts: &[usize],
    strip: bool,
) -> (Vec<u8>, Option<String>, Option<(u64, u64)>) {
    let mut sse = SseUsage::new(strip);
    let mut out = Vec::new();
    let mut at = 0;
    for &cut in cuts.iter().chain([stream.len()].iter()) {
        let cut = cut.clamp(at, stream.len());
        let chunk = Bytes::copy_from_slice(&stream[at..cut]);
        match sse.feed(&chunk) {
            Some(forward) => out.extend_from_slice(&forward),
            None => out.extend_from_slice(&chunk),
        }
        at = cut;
    }
    if let Some(tail) = sse.finish() {
        out.extend_from_slice(&tail);
    }
    let usage = sse.usage().map(|u| (u.prompt, u.completion));
    (out, sse.model().map(str::to_owned), usage)
}

fuzz_target!(|input: Input| {
    let mut cuts: Vec<usize> = input.cuts.iter().map(|&c| usize::from(c)).collect();
    cuts.sort_unstable();
    let (out, model, usage) = run(&input.stream, &cuts, input.strip);
    if !input.strip {
        assert_eq!(out, input.stream, "observing changed the stream");
    }
    let (whole_out, whole_model, whole_usage) = run(&input.stream, &[], input.strip);
    assert_eq!(out, whole_out, "the cuts changed what is forwarded");
    assert_eq!(model, whole_model);
    assert_eq!(usage, whole_usage);
});
