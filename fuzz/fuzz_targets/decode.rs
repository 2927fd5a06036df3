//! The decoders of compressed answers: any bytes in any coding, cut
//! anywhere, never a panic and never more output held than the cap.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use weir::usage::decode::Coding;

#[derive(Arbitrary, Debug)]
struct Input {
    coding: u8,
    body: Vec<u8>,
    cuts: Vec<u16>,
}

const CAP: usize = 64 * 1024;

fuzz_target!(|input: Input| {
    let coding = ["gzip", "deflate", "br", "zstd"][usize::from(input.coding % 4)];
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_ENCODING,
        http::HeaderValue::from_static(coding),
    );
    let Coding::Known(mut decoder) = Coding::of(&headers, CAP) else {
        panic!("{coding} is known");
    };
    let mut cuts: Vec<usize> = input.cuts.iter().map(|&c| usize::from(c)).collect();
    cuts.sort_unstable();
    let mut at = 0;
    for cut in cuts.into_iter().chain([input.body.len()]) {
        let cut = cut.clamp(at, input.body.len());
        if !decoder.feed(&input.body[at..cut]) {
            return;
        }
        assert!(decoder.take().len() <= CAP);
        at = cut;
    }
    decoder.finish();
    assert!(decoder.take().len() <= CAP);
});
