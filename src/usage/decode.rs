//! Compressed answers, decoded for counting only.
//!
//! Why: clients ask for compression (the OpenAI Python SDK sends
//! `accept-encoding: gzip` by default) and upstreams oblige; the usage in a
//! gzip body is invisible to a parser of plain bytes, and the token limits
//! and quotas would stop working without a sign. The client gets the bytes
//! the upstream sent; weir decodes a copy, with well-kept decoders (`flate2`,
//! `brotli-decompressor`, `zstd`) writing into a sink that refuses to grow
//! past a cap, so a decompression bomb costs at most the cap.

use std::io::{self, Write};

use flate2::write::{DeflateDecoder, GzDecoder, ZlibDecoder};
use http::header::CONTENT_ENCODING;
use http::HeaderMap;

/// What the answer's `content-encoding` says.
pub enum Coding {
    /// Plain bytes.
    Identity,
    /// One coding weir can decode.
    Known(Box<Decoder>),
    /// A coding weir cannot read (or several stacked): no usage from it.
    Unknown,
}

impl Coding {
    /// The coding of an answer with these headers; decoded output is held to
    /// at most `cap` bytes between two [`Decoder::take`]s.
    pub fn of(headers: &HeaderMap, cap: usize) -> Coding {
        let mut values = headers.get_all(CONTENT_ENCODING).iter();
        let Some(value) = values.next() else {
            return Coding::Identity;
        };
        if values.next().is_some() {
            return Coding::Unknown;
        }
        let Ok(value) = value.to_str() else {
            return Coding::Unknown;
        };
        let sink = Sink {
            out: Vec::new(),
            cap,
        };
        let inner = match value.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => return Coding::Identity,
            "gzip" | "x-gzip" => Inner::Gzip(GzDecoder::new(sink)),
            "deflate" => Inner::Deflate {
                start: Vec::new(),
                sink: Some(sink),
            },
            "br" => Inner::Brotli(Box::new(brotli_decompressor::DecompressorWriter::new(
                sink, 4096,
            ))),
            "zstd" => match zstd::stream::write::Decoder::new(sink) {
                Ok(decoder) => Inner::Zstd(decoder),
                Err(_) => return Coding::Unknown,
            },
            _ => return Coding::Unknown,
        };
        Coding::Known(Box::new(Decoder {
            inner,
            broken: false,
        }))
    }
}

/// A streaming decoder of one answer body.
pub struct Decoder {
    inner: Inner,
    /// Corrupt input, or output past the cap: nothing more is decoded.
    broken: bool,
}

enum Inner {
    Gzip(GzDecoder<Sink>),
    /// HTTP's `deflate` is zlib-wrapped, but some servers send raw deflate:
    /// the first two bytes tell which.
    Deflate {
        start: Vec<u8>,
        sink: Option<Sink>,
    },
    Zlib(ZlibDecoder<Sink>),
    Raw(DeflateDecoder<Sink>),
    Brotli(Box<brotli_decompressor::DecompressorWriter<Sink>>),
    Zstd(zstd::stream::write::Decoder<'static, Sink>),
}

/// Decoded bytes, refusing to hold more than `cap`.
struct Sink {
    out: Vec<u8>,
    cap: usize,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.out.len() + buf.len() > self.cap {
            return Err(io::Error::other("decoded answer over the cap"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Input is fed in slices this long, so no single write can expand past
/// the cap by more than one decoder buffer before the sink refuses it.
const SLICE: usize = 512;

impl Decoder {
    /// Decodes `chunk`; its output waits in the sink for [`Decoder::take`].
    /// Returns false once the answer cannot be decoded (corrupt, or over
    /// the cap).
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        if self.broken {
            return false;
        }
        let mut ok = true;
        for slice in chunk.chunks(SLICE) {
            ok = self.write(slice).is_ok();
            if !ok {
                break;
            }
        }
        self.broken = !ok;
        ok
    }

    /// At the end of the body: flushes what the decoder still holds.
    pub fn finish(&mut self) -> bool {
        if self.broken {
            return false;
        }
        let ok = match &mut self.inner {
            Inner::Gzip(d) => d.try_finish().is_ok(),
            Inner::Zlib(d) => d.try_finish().is_ok(),
            Inner::Raw(d) => d.try_finish().is_ok(),
            Inner::Brotli(d) => d.flush().is_ok(),
            Inner::Zstd(d) => d.flush().is_ok(),
            Inner::Deflate { start, .. } => start.is_empty(),
        };
        self.broken = !ok;
        ok
    }

    /// The bytes decoded since the last call.
    pub fn take(&mut self) -> Vec<u8> {
        let sink = match &mut self.inner {
            Inner::Gzip(d) => d.get_mut(),
            Inner::Zlib(d) => d.get_mut(),
            Inner::Raw(d) => d.get_mut(),
            Inner::Brotli(d) => d.get_mut(),
            Inner::Zstd(d) => d.get_mut(),
            Inner::Deflate { sink, .. } => match sink {
                Some(sink) => sink,
                None => return Vec::new(),
            },
        };
        std::mem::take(&mut sink.out)
    }

    fn write(&mut self, input: &[u8]) -> io::Result<()> {
        match &mut self.inner {
            Inner::Gzip(d) => d.write_all(input),
            Inner::Zlib(d) => d.write_all(input),
            Inner::Raw(d) => d.write_all(input),
            Inner::Brotli(d) => d.write_all(input).and_then(|()| d.flush()),
            Inner::Zstd(d) => d.write_all(input).and_then(|()| d.flush()),
            Inner::Deflate { start, sink } => {
                start.extend_from_slice(input);
                if start.len() < 2 {
                    return Ok(());
                }
                let Some(sink) = sink.take() else {
                    return Err(io::Error::other("deflate decoder lost its sink"));
                };
                let header = u16::from_be_bytes([start[0], start[1]]);
                let zlib = start[0] & 0x0f == 8 && header % 31 == 0;
                let held = std::mem::take(start);
                self.inner = if zlib {
                    Inner::Zlib(ZlibDecoder::new(sink))
                } else {
                    Inner::Raw(DeflateDecoder::new(sink))
                };
                self.write(&held)
            }
        }
    }
}

#[cfg(test)]
mod tests;
