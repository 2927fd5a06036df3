//! Client connections, watched: how many are open, which are idle, and
//! when each must close.
//!
//! Why: hyper times a request head only once it has begun reading one, so a
//! connection that never sends a byte, or a keep-alive one that goes quiet,
//! would hold a file descriptor forever; enough of them deny all service.
//! Each connection here has a supervisor that closes it
//!
//! - `header_timeout` after accept if no request head has arrived (TLS
//!   handshake included), or after the first byte of a later HTTP/1.1 head
//!   that does not complete (slowloris);
//! - `client_idle_timeout` after its last response ended, when no request
//!   is in flight (a stream in progress is never idle, however quiet);
//! - at once when `max_connections` are open and a new client arrives: the
//!   connection idle the longest makes room (if none is idle, the newcomer
//!   is refused).
//!
//! A connection is only ever closed between requests, so nothing in flight
//! is cut. The per-request cost is a few atomic operations and, when the
//! last request of a connection ends, one wake-up of its supervisor.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::scan::{HeadScan, Seen};
use crate::config::LimitsPolicy;
use crate::metrics::Metrics;

/// Why weir closed a client connection (`weir_connections_closed_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    HeaderTimeout,
    Idle,
    MaxConnections,
}

impl Closed {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "header_timeout",
            Self::Idle => "idle",
            Self::MaxConnections => "max_connections",
        }
    }
}

/// The open connections of one listener.
pub struct Conns {
    base: Instant,
    next_id: AtomicU64,
    /// Touched on accept and close only, never held across an await.
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
    gauge: IntGauge,
    closed: [IntCounter; 3],
}

impl Conns {
    /// `listener`: the `listener` label, `proxy` or `admin`.
    pub fn new(metrics: &Metrics, listener: &str) -> Arc<Self> {
        let reason = |r: Closed| metrics.connections_closed(r.as_str());
        Arc::new(Self {
            base: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            gauge: metrics.client_connections(listener),
            closed: [
                reason(Closed::HeaderTimeout),
                reason(Closed::Idle),
                reason(Closed::MaxConnections),
            ],
        })
    }

    pub fn count(&self, why: Closed) {
        self.closed[why as usize].inc();
    }

    /// Registers a new connection, making room first when `max` are open.
    /// `None`: every open connection is busy; the newcomer is refused (and
    /// counted).
    pub fn admit(self: &Arc<Self>, max: usize) -> Option<Tracked> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= max {
            let longest_idle = open
                .values()
                .filter(|c| {
                    c.in_flight.load(Ordering::Acquire) == 0 && !c.evicted.load(Ordering::Relaxed)
                })
                .min_by_key(|c| c.idle_since.load(Ordering::Relaxed))
                .cloned();
            match longest_idle {
                Some(victim) => {
                    victim.evicted.store(true, Ordering::Relaxed);
                    victim.evict.notify_one();
                }
                None => {
                    drop(open);
                    self.count(Closed::MaxConnections);
                    return None;
                }
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let state = Arc::new(ConnState {
            base: self.base,
            accepted: now,
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(now),
            head_from: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
            changed: Notify::new(),
            ambiguous: AtomicBool::new(false),
        });
        open.insert(id, state.clone());
        drop(open);
        self.gauge.inc();
        Some(Tracked {
            conns: self.clone(),
            id,
            state,
        })
    }

    fn now_ms(&self) -> u64 {
        ms_since(self.base)
    }
}

fn ms_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
}

/// What the supervisor and the request path know of one connection.
pub struct ConnState {
    base: Instant,
    /// Milliseconds since the listener's base, plus one (0 means "never").
    accepted: u64,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    idle_since: AtomicU64,
    /// The first byte read while no request was in flight, since the last
    /// response ended: a head in progress.
    head_from: AtomicU64,
    h2: AtomicBool,
    evicted: AtomicBool,
    evict: Notify,
    /// The last request in flight ended.
    changed: Notify,
    /// The head just read named both a length and a transfer coding.
    ambiguous: AtomicBool,
}

impl ConnState {
    fn now_ms(&self) -> u64 {
        ms_since(self.base)
    }

    /// A request head arrived: the connection is busy until the guard drops
    /// (when the response body has been sent or abandoned).
    pub fn request_started(self: &Arc<Self>, h2: bool) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if self.requests.fetch_add(1, Ordering::Relaxed) == 0 && h2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        InFlight(self.clone())
    }

    /// Whether the request whose head was just read framed its body two
    /// ways (`content-length` and `transfer-encoding`); clears the mark.
    pub fn take_ambiguous(&self) -> bool {
        self.ambiguous.swap(false, Ordering::AcqRel)
    }

    fn read_some(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_from.load(Ordering::Relaxed) == 0
        {
            self.head_from.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// When the connection must close if nothing changes, and why; `None`
    /// while a request is in flight.
    fn deadline(&self, limits: &Timeouts) -> Option<(u64, Closed)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let header = ms(limits.header);
        if self.requests.load(Ordering::Relaxed) == 0 {
            return Some((self.accepted + header, Closed::HeaderTimeout));
        }
        let head_from = self.head_from.load(Ordering::Relaxed);
        if head_from != 0 && !self.h2.load(Ordering::Relaxed) {
            return Some((head_from + header, Closed::HeaderTimeout));
        }
        let idle_since = self.idle_since.load(Ordering::Relaxed);
        Some((idle_since + ms(limits.idle), Closed::Idle))
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 4)
}

/// Ends a request's hold on its connection when dropped.
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let state = &self.0;
        state.idle_since.store(state.now_ms(), Ordering::Relaxed);
        state.head_from.store(0, Ordering::Relaxed);
        if state.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Idle now: the supervisor starts the idle clock.
            state.changed.notify_one();
        }
    }
}

/// The timeouts a supervisor applies (read from the policy at accept).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
}

impl From<&LimitsPolicy> for Timeouts {
    fn from(limits: &LimitsPolicy) -> Self {
        Self {
            header: limits.header_timeout,
            idle: limits.client_idle_timeout,
        }
    }
}

/// One admitted connection: unregisters itself when dropped.
pub struct Tracked {
    conns: Arc<Conns>,
    id: u64,
    pub state: Arc<ConnState>,
}

impl Tracked {
    /// Resolves when the connection must close, with the reason; never
    /// while a request is in flight.
    pub async fn must_close(&self, timeouts: Timeouts) -> Closed {
        let state = &self.state;
        loop {
            let deadline = state.deadline(&timeouts);
            let sleep = async {
                match deadline {
                    // Busy: only the end of the last request changes that.
                    None => std::future::pending().await,
                    Some((at, _)) => {
                        let now = state.now_ms();
                        tokio::time::sleep(Duration::from_millis(at.saturating_sub(now))).await;
                    }
                }
            };
            tokio::select! {
                () = sleep => {
                    if let Some((at, why)) = state.deadline(&timeouts) {
                        if at <= state.now_ms() {
                            return why;
                        }
                    }
                }
                () = state.changed.notified() => {}
                () = state.evict.notified() => {
                    if state.in_flight.load(Ordering::Acquire) == 0 {
                        return Closed::MaxConnections;
                    }
                    // A request arrived in between: it goes on.
                    state.evicted.store(false, Ordering::Relaxed);
                }
            }
        }
    }

    /// Runs `serving` (the connection) until it ends, or until the
    /// connection must close: then drops it (closing the socket) and counts
    /// why. `None` when weir closed it.
    pub async fn serve<T>(
        &self,
        timeouts: Timeouts,
        serving: impl Future<Output = T>,
    ) -> Option<T> {
        tokio::select! {
            served = serving => Some(served),
            why = self.must_close(timeouts) => {
                self.conns.count(why);
                tracing::debug!(reason = why.as_str(), "closing the client connection");
                None
            }
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut open = self.conns.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(&self.id);
        drop(open);
        self.conns.gauge.dec();
    }
}

/// The client's socket (after TLS), noting when bytes arrive and, on the
/// proxy listener, looking at each request head ([`HeadScan`]).
pub struct Watched<S> {
    inner: S,
    state: Arc<ConnState>,
    scan: Option<HeadScan>,
    /// `requests` when the last scanned head ended: the next head begins
    /// once that request has started and ended.
    scanned_at: u64,
}

impl<S> Watched<S> {
    pub fn new(inner: S, state: Arc<ConnState>, scan_heads: bool) -> Self {
        Self {
            inner,
            state,
            scan: scan_heads.then(HeadScan::default),
            scanned_at: 0,
        }
    }

    fn look(&mut self, fresh: &[u8]) {
        let Some(scan) = &mut self.scan else { return };
        let state = &self.state;
        if !scan.is_reading_head()
            && state.in_flight.load(Ordering::Acquire) == 0
            && state.requests.load(Ordering::Acquire) > self.scanned_at
        {
            scan.expect_head();
        }
        if let Seen::HeadEnd { ambiguous } = scan.feed(fresh) {
            self.scanned_at = state.requests.load(Ordering::Acquire);
            if ambiguous {
                state.ambiguous.store(true, Ordering::Release);
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.read_some();
            let this = &mut *self;
            this.look(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

pin_project! {
    /// A response body that holds its request's place on the connection
    /// until it has been sent or dropped.
    pub struct Held<B> {
        #[pin]
        body: B,
        _in_flight: InFlight,
    }
}

impl<B> Held<B> {
    pub fn new(body: B, in_flight: InFlight) -> Self {
        Self {
            body,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body> Body for Held<B>
where
    B::Data: Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
