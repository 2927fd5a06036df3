//! Bodies weir sends: its own small JSON answers, or an upstream's body
//! passed through frame by frame under the idle and total timeouts.
//!
//! Nothing is buffered: each frame the upstream yields is handed to the
//! client as it arrives. Dropping the body (the client went away) drops the
//! upstream body with it, which closes the upstream connection (HTTP/1) or
//! resets the stream (HTTP/2).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::record::Record;
use crate::metrics::Outcome;
use crate::usage::account::Tap;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project! {
    /// The body of every response weir sends to a client.
    #[project = BodyProj]
    pub enum Body {
        Full { data: Option<Bytes> },
        Upstream { #[pin] inner: Streaming },
    }
}

impl Body {
    pub fn full(data: Bytes) -> Self {
        Body::Full { data: Some(data) }
    }

    /// The bytes of a `Full` body; `None` for a stream.
    pub fn full_bytes(self) -> Option<Bytes> {
        match self {
            Body::Full { data } => Some(data.unwrap_or_default()),
            Body::Upstream { .. } => None,
        }
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            BodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            BodyProj::Upstream { inner } => inner.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full { data } => data.is_none(),
            Body::Upstream { inner } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Body::Upstream { inner } => inner.size_hint(),
        }
    }
}

/// Why a streamed response was cut.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("upstream sent nothing for {0:?} (timeouts.idle)")]
    Idle(Duration),
    #[error("request exceeded timeouts.total")]
    Total,
}

pin_project! {
    /// An upstream body under `timeouts.idle` and `timeouts.total`, owning the
    /// request's [`Record`] so the request is counted when the stream ends,
    /// fails, or is dropped by a departing client. Its [`Tap`] reads usage
    /// from the frames as they pass.
    pub struct Streaming {
        inner: Incoming,
        tap: Tap,
        done: bool,
        #[pin]
        timer: Sleep,
        idle: Duration,
        deadline: Instant,
        last_frame: Instant,
        record: Record,
    }
}

impl Streaming {
    pub fn new(
        inner: Incoming,
        tap: Tap,
        idle: Duration,
        deadline: Instant,
        record: Record,
    ) -> Self {
        let now = Instant::now();
        let mut body = Self {
            inner,
            tap,
            done: false,
            timer: tokio::time::sleep_until((now + idle).min(deadline)),
            idle,
            deadline,
            last_frame: now,
            record,
        };
        if body.inner.is_end_stream() {
            // hyper will not poll an empty body: the request is done now.
            body.complete();
        }
        body
    }

    fn complete(&mut self) {
        Self::complete_parts(&mut self.done, &mut self.tap, &mut self.record);
    }

    fn complete_parts(done: &mut bool, tap: &mut Tap, record: &mut Record) -> Option<Bytes> {
        *done = true;
        let tail = tap.finish();
        record.report(tap.result());
        let outcome = Outcome::for_status(record.status());
        record.finish(outcome);
        tail
    }
}

impl HttpBody for Streaming {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if *this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut *this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // The timer is re-armed lazily when it fires: no
                    // timer-wheel work per frame.
                    *this.last_frame = Instant::now();
                    let data = match frame.into_data() {
                        Ok(data) => data,
                        Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                    };
                    this.record.streamed(data.len());
                    let mut out = this.tap.feed(data);
                    if this.inner.is_end_stream() {
                        // hyper stops polling a body that says it has ended,
                        // so the last frame is where the request finishes.
                        if let Some(tail) = Self::complete_parts(this.done, this.tap, this.record) {
                            out = concat(out, tail);
                        }
                    }
                    if out.is_empty() && !*this.done {
                        // Held back (an incomplete event, or a removed one).
                        continue;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.record.fail_stream(&e);
                    *this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(None) => {
                    let tail = Self::complete_parts(this.done, this.tap, this.record);
                    return Poll::Ready(tail.map(|t| Ok(Frame::data(t))));
                }
                Poll::Pending => break,
            }
        }
        loop {
            ready!(this.timer.as_mut().poll(cx));
            let now = Instant::now();
            let idle_at = *this.last_frame + *this.idle;
            let error = if now >= *this.deadline {
                StreamError::Total
            } else if now >= idle_at {
                StreamError::Idle(*this.idle)
            } else {
                this.timer.as_mut().reset(idle_at.min(*this.deadline));
                continue;
            };
            this.record.fail_stream(&error);
            *this.done = true;
            return Poll::Ready(Some(Err(error.into())));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        if self.tap.rewrites() {
            // Removing an event changes the length.
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

fn concat(a: Bytes, b: Bytes) -> Bytes {
    if a.is_empty() {
        return b;
    }
    let mut joined = bytes::BytesMut::with_capacity(a.len() + b.len());
    joined.extend_from_slice(&a);
    joined.extend_from_slice(&b);
    joined.freeze()
}
