//! The body weir sends upstream: the client's stream, bytes it holds (kept
//! for replay), or bytes it read ahead followed by the rest of the stream;
//! a stream weir does not hold is capped at `limits.max_request_body`.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;

/// The body weir sends upstream: the client's stream, bytes it holds, or
/// bytes it read ahead followed by the rest of the stream.
pub enum RequestBody {
    Incoming(Incoming),
    Full(Option<Bytes>),
    Prefixed {
        prefix: Option<Bytes>,
        rest: Incoming,
    },
    /// A stream that fails with [`BodyTooLarge`] past `limit` bytes.
    Capped {
        inner: Box<RequestBody>,
        left: u64,
        limit: u64,
    },
}

/// The error a capped body ends with: the client sent more than
/// `limits.max_request_body`.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than limits.max_request_body ({limit} bytes)")]
pub struct BodyTooLarge {
    pub limit: u64,
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl RequestBody {
    /// `self`, failing past `limit` bytes.
    pub fn capped(self, limit: u64) -> Self {
        RequestBody::Capped {
            inner: Box::new(self),
            left: limit,
            limit,
        }
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Capped { inner, left, limit } => {
                let polled = Pin::new(&mut **inner).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &polled {
                    let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                    match left.checked_sub(n) {
                        Some(rest) => *left = rest,
                        None => {
                            let error = BodyTooLarge { limit: *limit };
                            return Poll::Ready(Some(Err(Box::new(error))));
                        }
                    }
                }
                polled
            }
            RequestBody::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(BoxError::from),
            RequestBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            RequestBody::Prefixed { prefix, rest } => match prefix.take() {
                Some(d) => Poll::Ready(Some(Ok(Frame::data(d)))),
                None => Pin::new(rest).poll_frame(cx).map_err(BoxError::from),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Incoming(b) => b.is_end_stream(),
            RequestBody::Full(data) => data.is_none(),
            RequestBody::Prefixed { prefix, rest } => prefix.is_none() && rest.is_end_stream(),
            RequestBody::Capped { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Incoming(b) => b.size_hint(),
            RequestBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            RequestBody::Prefixed { prefix, rest } => {
                let held = prefix.as_ref().map_or(0, |d| d.len() as u64);
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + held);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + held);
                }
                hint
            }
            RequestBody::Capped { inner, .. } => inner.size_hint(),
        }
    }
}
