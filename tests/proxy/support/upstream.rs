//! Scripted upstreams: real hyper servers on `127.0.0.1:0` (HTTP/1.1 and
//! h2c, optionally TLS) that count hits and connections.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub type TestBody = BoxBody<Bytes, Infallible>;

pub fn full(data: impl Into<Bytes>) -> TestBody {
    Full::new(data.into()).boxed()
}

/// A body fed chunk by chunk from a channel; ends when the sender drops.
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(|d| Ok(Frame::data(d))))
    }
}

/// An SSE response whose events the test sends through the returned sender.
pub fn sse_body() -> (mpsc::Sender<Bytes>, Response<TestBody>) {
    let (tx, rx) = mpsc::channel(16);
    let response = Response::builder()
        .header("content-type", "text/event-stream")
        .body(ChannelBody(rx).boxed())
        .unwrap();
    (tx, response)
}

type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<TestBody>> + Send>>
        + Send
        + Sync,
>;

pub struct MockUpstream {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl MockUpstream {
    /// An upstream answering every request with `handler`.
    pub async fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        Self::start_with(handler, None).await
    }

    pub async fn start_tls<F, Fut>(handler: F, tls: rustls::ServerConfig) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        Self::start_with(
            handler,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls))),
        )
        .await
    }

    async fn start_with<F, Fut>(handler: F, tls: Option<tokio_rustls::TlsAcceptor>) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let handler: Handler = Arc::new(move |r| Box::pin(handler(r)));
        let (h, c, o) = (hits.clone(), connections.clone(), open.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let (handler, hits, open, tls) =
                    (handler.clone(), h.clone(), o.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        let fut = handler(request);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            hits,
            connections,
            open,
            task,
        }
    }

    /// An upstream answering every request with an SSE stream whose events
    /// the test writes: each request's event sender arrives on the returned
    /// channel, so the test decides when each event goes out.
    pub async fn held_streams() -> (Self, mpsc::Receiver<mpsc::Sender<Bytes>>) {
        let (senders_tx, senders_rx) = mpsc::channel(4);
        let upstream = Self::start(move |_| {
            let senders_tx = senders_tx.clone();
            async move {
                let (events, response) = sse_body();
                // The test holds the receiver for as long as it cares.
                let _ = senders_tx.send(events).await;
                response
            }
        })
        .await;
        (upstream, senders_rx)
    }

    /// An upstream that holds every request until `true` is sent on the
    /// returned gate, then answers 200 `done`.
    pub async fn gated() -> (Self, tokio::sync::watch::Sender<bool>) {
        let (release, gate) = tokio::sync::watch::channel(false);
        let upstream = Self::start(move |_| {
            let mut gate = gate.clone();
            async move {
                let _ = gate.wait_for(|open| *open).await;
                Response::new(full("done"))
            }
        })
        .await;
        (upstream, release)
    }

    /// An upstream that answers every request 200 with `body`.
    pub async fn fixed(body: &'static str) -> Self {
        Self::start(move |_| async move { Response::new(full(body)) }).await
    }

    /// An upstream that answers every request 200 with the JSON `body`
    /// (`content-type: application/json`, so weir reads its usage).
    pub async fn json(body: &'static str) -> Self {
        Self::start(move |_| async move {
            Response::builder()
                .header("content-type", "application/json")
                .body(full(body))
                .unwrap()
        })
        .await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
