use std::io::Write as _;

use http::HeaderValue;
use proptest::prelude::*;

use super::*;

fn headers(coding: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_ENCODING, HeaderValue::from_str(coding).unwrap());
    h
}

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
        "raw-deflate" => {
            let mut e =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
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

fn decoder(coding: &str, cap: usize) -> Box<Decoder> {
    let header = if coding == "raw-deflate" {
        "deflate"
    } else {
        coding
    };
    match Coding::of(&headers(header), cap) {
        Coding::Known(d) => d,
        _ => panic!("{coding} is known"),
    }
}

/// Decodes `encoded` fed in pieces cut at `cuts`, taking output as it comes.
fn decode_in_pieces(coding: &str, encoded: &[u8], cuts: &[usize], cap: usize) -> Option<Vec<u8>> {
    let mut d = decoder(coding, cap);
    let mut out = Vec::new();
    let mut at = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (encoded.len() + 1)).collect();
    cuts.sort_unstable();
    for cut in cuts.into_iter().chain([encoded.len()]) {
        if !d.feed(&encoded[at..cut.max(at)]) {
            return None;
        }
        out.extend(d.take());
        at = cut.max(at);
    }
    d.finish().then(|| {
        out.extend(d.take());
        out
    })
}

const CODINGS: [&str; 5] = ["gzip", "deflate", "raw-deflate", "br", "zstd"];

#[test]
fn every_coding_decodes_what_it_encoded() {
    let plain =
        br#"{"model":"gpt-4o","usage":{"prompt_tokens":12,"completion_tokens":34}}"#.repeat(50);
    for coding in CODINGS {
        let encoded = encode(coding, &plain);
        assert_eq!(
            decode_in_pieces(coding, &encoded, &[], 1 << 20).as_deref(),
            Some(plain.as_slice()),
            "{coding}"
        );
    }
}

#[test]
fn identity_unknown_and_stacked_codings() {
    assert!(matches!(
        Coding::of(&HeaderMap::new(), 10),
        Coding::Identity
    ));
    assert!(matches!(
        Coding::of(&headers("identity"), 10),
        Coding::Identity
    ));
    assert!(matches!(
        Coding::of(&headers("compress"), 10),
        Coding::Unknown
    ));
    assert!(matches!(
        Coding::of(&headers("gzip, br"), 10),
        Coding::Unknown
    ));
    let mut two = headers("gzip");
    two.append(CONTENT_ENCODING, HeaderValue::from_static("br"));
    assert!(matches!(Coding::of(&two, 10), Coding::Unknown));
    assert!(matches!(Coding::of(&headers("GZIP"), 10), Coding::Known(_)));
}

#[test]
fn a_bomb_stops_at_the_cap() {
    let plain = vec![0u8; 64 << 20];
    for coding in CODINGS {
        let encoded = encode(coding, &plain);
        assert!(encoded.len() < 1 << 20, "{coding}: {}", encoded.len());
        let mut d = decoder(coding, 1 << 20);
        let fed = d.feed(&encoded);
        assert!(
            !fed || !d.finish(),
            "{coding}: 64 MiB decoded under a 1 MiB cap"
        );
        assert!(d.take().len() <= 1 << 20, "{coding}");
        assert!(!d.feed(b"more"), "{coding}: broken stays broken");
    }
}

#[test]
fn corrupt_input_is_refused() {
    for coding in ["gzip", "deflate", "br", "zstd"] {
        let mut d = decoder(coding, 1 << 20);
        let garbage = b"this is not compressed at all, not even a little bit".repeat(20);
        let ok = d.feed(&garbage) && d.finish();
        assert!(!ok, "{coding} accepted garbage");
    }
}

proptest! {
    #[test]
    fn any_split_decodes_the_same(
        coding in prop::sample::select(CODINGS.to_vec()),
        plain in prop::collection::vec(any::<u8>(), 0..4000),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let encoded = encode(coding, &plain);
        prop_assert_eq!(decode_in_pieces(coding, &encoded, &cuts, 1 << 20), Some(plain));
    }
}
