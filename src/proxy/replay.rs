//! Request bodies kept for replay: a retry or a fallback resends the same
//! bytes. Bodies up to [`REPLAY_LIMIT`] are read whole before the first
//! attempt; a larger one streams through once and is never retried.

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::upstream::RequestBody;

/// The contract's replay limit: 8 MiB.
pub const REPLAY_LIMIT: usize = 8 * 1024 * 1024;

pub enum Replay {
    /// Held whole: every attempt gets a cheap clone.
    Buffered(Bytes),
    /// Streams once; `None` once taken.
    Once(Option<RequestBody>),
}

impl Replay {
    /// Reads `body` for replay when `wanted`, within the limit.
    pub async fn new(
        body: Incoming,
        headers: &HeaderMap,
        wanted: bool,
    ) -> Result<Self, hyper::Error> {
        if body.is_end_stream() {
            return Ok(Replay::Buffered(Bytes::new()));
        }
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if !wanted || declared.is_some_and(|n| n > REPLAY_LIMIT as u64) {
            return Ok(Replay::Once(Some(RequestBody::Incoming(body))));
        }
        let mut body = body;
        // The usual small JSON body arrives in one frame: keep it as it is
        // (no copy); join frames only when there are several.
        let mut first: Option<Bytes> = None;
        let mut joined: Option<BytesMut> = None;
        let mut held = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            held += data.len();
            match (&mut first, &mut joined) {
                (None, _) => first = Some(data),
                (Some(head), None) => {
                    let mut all =
                        BytesMut::with_capacity(declared.map_or(2 * held, |n| n as usize));
                    all.extend_from_slice(head);
                    all.extend_from_slice(&data);
                    joined = Some(all);
                }
                (Some(_), Some(all)) => all.extend_from_slice(&data),
            }
            if held > REPLAY_LIMIT {
                // Too large after all (no content-length): send what was
                // read, then the rest, once.
                let prefix = joined.map(BytesMut::freeze).or(first);
                return Ok(Replay::Once(Some(RequestBody::Prefixed {
                    prefix,
                    rest: body,
                })));
            }
        }
        Ok(Replay::Buffered(
            joined.map(BytesMut::freeze).or(first).unwrap_or_default(),
        ))
    }

    /// The body for the next attempt; `None` when a streamed body was sent.
    pub fn take(&mut self) -> Option<RequestBody> {
        match self {
            Replay::Buffered(bytes) => Some(RequestBody::Full(Some(bytes.clone()))),
            Replay::Once(body) => body.take(),
        }
    }

    /// Whether another attempt could still send the body.
    pub fn available(&self) -> bool {
        match self {
            Replay::Buffered(_) => true,
            Replay::Once(body) => body.is_some(),
        }
    }
}
