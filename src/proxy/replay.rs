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

/// Why a body could not be read for replay.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the request body is larger than limits.max_request_body ({0} bytes)")]
    TooLarge(u64),
    #[error("reading the request body failed: {0}")]
    Client(#[from] hyper::Error),
}

pub enum Replay {
    /// Held whole: every attempt gets a cheap clone.
    Buffered(Bytes),
    /// Streams once; `None` once taken.
    Once(Option<RequestBody>),
}

impl Replay {
    /// Reads `body` for replay when `wanted`, within the replay limit; a
    /// body over `max` (`limits.max_request_body`) is refused before any of
    /// it is sent when its length is known, else cut when it gets there.
    pub async fn new(
        body: Incoming,
        headers: &HeaderMap,
        wanted: bool,
        max: u64,
    ) -> Result<Self, ReadError> {
        if body.is_end_stream() {
            return Ok(Replay::Buffered(Bytes::new()));
        }
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(ReadError::TooLarge(max));
        }
        let keep = (REPLAY_LIMIT as u64).min(max);
        if !wanted || declared.is_some_and(|n| n > keep) {
            return Ok(Replay::Once(Some(RequestBody::Incoming(body).capped(max))));
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
            if held as u64 > max {
                return Err(ReadError::TooLarge(max));
            }
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
            if held as u64 > keep {
                // Too large after all (no content-length): send what was
                // read, then the rest, once.
                let prefix = joined.map(BytesMut::freeze).or(first);
                let rest = RequestBody::Prefixed { prefix, rest: body };
                return Ok(Replay::Once(Some(rest.capped(max))));
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
