//! The load generator: one hyper HTTP/1.1 keep-alive connection per virtual
//! client, requests sent one after another on it (closed loop), every latency
//! recorded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::stats::Latencies;

/// A small non-streamed chat completion request (the mock answers 8 tokens, ~350 bytes).
pub const CHAT: &[u8] =
    br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in one short sentence."}]}"#;
/// The same, streamed.
pub const CHAT_STREAM: &[u8] = br#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hello in one short sentence."}]}"#;
/// A content event of the mock's streams (the role and finish events are not tokens).
const TOKEN_MARK: &[u8] = br#""content":"tok"#;

/// One client connection; its driver task is aborted when this is dropped.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(std::io::Error::other)?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            host: addr.to_string(),
            driver,
        })
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: &'static [u8],
    ) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error> {
        self.sender.ready().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.host);
        if !body.is_empty() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from_static(body)))
            .expect("a valid request");
        self.sender.send_request(req).await
    }

    /// One request, its whole answer read; the status, or None on a transport error.
    pub async fn roundtrip(
        &mut self,
        method: Method,
        path: &str,
        body: &'static [u8],
    ) -> Option<u16> {
        let resp = self.send(method, path, body).await.ok()?;
        let status = resp.status().as_u16();
        resp.into_body().collect().await.ok()?;
        Some(status)
    }
}

/// `GET path` on a fresh connection: the status, or None.
pub async fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let fut = async {
        let mut conn = Conn::open(addr).await.ok()?;
        conn.roundtrip(Method::GET, path, b"").await
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .ok()?
}

/// `GET path` on a fresh connection: the body, when the status is 200.
pub async fn get_text(addr: SocketAddr, path: &str) -> Option<String> {
    let fut = async {
        let mut conn = Conn::open(addr).await.ok()?;
        let resp = conn.send(Method::GET, path, b"").await.ok()?;
        if resp.status() != 200 {
            return None;
        }
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        String::from_utf8(body.to_vec()).ok()
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .ok()?
}

/// The measurement window of a run: requests are sent from `start - warmup`
/// to `end`; only those that both start and finish inside `[start, end]` count.
#[derive(Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

#[derive(Default)]
pub struct LoadResult {
    /// Latency of every counted request.
    pub latencies: Latencies,
    /// Non-200 answers and transport errors (the connection is reopened).
    pub errors: u64,
}

/// `conns` clients, each on its own keep-alive connection, each sending the
/// next request as soon as the previous answer is read.
pub async fn closed_loop(
    addr: SocketAddr,
    path: &'static str,
    conns: usize,
    w: Window,
) -> LoadResult {
    let mut clients = JoinSet::new();
    for _ in 0..conns {
        clients.spawn(async move {
            let mut out = LoadResult::default();
            let mut conn = Conn::open(addr).await.expect("connect");
            while Instant::now() < w.end {
                let t0 = Instant::now();
                let status = conn.roundtrip(Method::POST, path, CHAT).await;
                let t1 = Instant::now();
                if status != Some(200) {
                    out.errors += 1;
                    if status.is_none() {
                        conn = Conn::open(addr).await.expect("reconnect");
                    }
                    continue;
                }
                if t0 >= w.start && t1 <= w.end {
                    out.latencies.record(nanos(t1 - t0));
                }
            }
            out
        });
    }
    let mut total = LoadResult::default();
    while let Some(r) = clients.join_next().await {
        let r = r.expect("client task");
        total.latencies.merge(&r.latencies);
        total.errors += r.errors;
    }
    total
}

#[derive(Default)]
pub struct StreamResult {
    /// Request sent to first content event, per stream.
    pub ttft: Latencies,
    /// Gaps between consecutive content events.
    pub tbt: Latencies,
    /// Request sent to the end of the stream.
    pub total: Latencies,
    pub errors: u64,
}

/// `conns` clients each reading streamed completions one after another,
/// timestamping every content event as it arrives.
pub async fn streams(
    addr: SocketAddr,
    path: &'static str,
    conns: usize,
    w: Window,
) -> StreamResult {
    let mut clients = JoinSet::new();
    for _ in 0..conns {
        clients.spawn(async move {
            let mut out = StreamResult::default();
            let mut conn = Conn::open(addr).await.expect("connect");
            let mut arrivals = Vec::with_capacity(64);
            while Instant::now() < w.end {
                arrivals.clear();
                let t0 = Instant::now();
                let ok = read_stream(&mut conn, path, t0, &mut arrivals, None).await;
                let t1 = Instant::now();
                if ok.is_err() || arrivals.is_empty() {
                    out.errors += 1;
                    conn = Conn::open(addr).await.expect("reconnect");
                    continue;
                }
                if t0 >= w.start && t1 <= w.end {
                    out.ttft.record(arrivals[0]);
                    arrivals
                        .windows(2)
                        .for_each(|p| out.tbt.record(p[1] - p[0]));
                    out.total.record(nanos(t1 - t0));
                }
            }
            out
        });
    }
    let mut total = StreamResult::default();
    while let Some(r) = clients.join_next().await {
        let r = r.expect("client task");
        total.ttft.merge(&r.ttft);
        total.tbt.merge(&r.tbt);
        total.total.merge(&r.total);
        total.errors += r.errors;
    }
    total
}

/// Sends a streamed request and reads the stream to its end, pushing the
/// arrival time (since `t0`) of each content event. `on_first_token` is
/// called once, when the first content event arrives. What went wrong on a non-200
/// or an error.
async fn read_stream(
    conn: &mut Conn,
    path: &str,
    t0: Instant,
    arrivals: &mut Vec<u64>,
    mut on_first_token: Option<&mut (dyn FnMut() + Send)>,
) -> Result<(), String> {
    let resp = conn
        .send(Method::POST, path, CHAT_STREAM)
        .await
        .map_err(|e| format!("request: {e}"))?;
    if resp.status() != 200 {
        let status = resp.status();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
        let body = body.map_or_else(
            |e| e.to_string(),
            |b| String::from_utf8_lossy(&b).into_owned(),
        );
        return Err(format!("status {status}: {body}"));
    }
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let at = nanos(t0.elapsed());
        buf.extend_from_slice(&data);
        // Events end with a blank line; a frame may hold several, or part of one.
        while let Some(end) = find(&buf, b"\n\n") {
            if find(&buf[..end], TOKEN_MARK).is_some() {
                if arrivals.is_empty() {
                    if let Some(f) = on_first_token.as_mut() {
                        f();
                    }
                }
                arrivals.push(at);
            }
            buf.drain(..end + 2);
        }
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Opens `n` keep-alive connections, `parallel` at a time, each after one
/// non-streamed request (an SDK's idle connection between two calls).
pub async fn open_idle(
    addr: SocketAddr,
    path: &'static str,
    n: usize,
    parallel: usize,
) -> Vec<Conn> {
    let mut conns = Vec::with_capacity(n);
    let mut opening = JoinSet::new();
    let mut started = 0;
    while conns.len() < n {
        while started < n && opening.len() < parallel {
            started += 1;
            opening.spawn(async move {
                let mut conn = Conn::open(addr).await.expect("open an idle connection");
                let status = conn.roundtrip(Method::POST, path, CHAT).await;
                assert_eq!(status, Some(200), "request on a new idle connection");
                conn
            });
        }
        let conn = opening
            .join_next()
            .await
            .expect("a task")
            .expect("open task");
        conns.push(conn);
    }
    conns
}

/// Starts `n` streamed completions on their own connections that read their
/// (slow) streams until aborted, and returns once each has received its first
/// content event. At most `parallel` are starting at a time (connected, not
/// yet at their first token), so weir does not open hundreds of upstream
/// connections at once: the mock's accept backlog is only 128.
pub async fn open_streams(
    addr: SocketAddr,
    path: &'static str,
    n: usize,
    parallel: usize,
) -> JoinSet<()> {
    let first = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut set = JoinSet::new();
    for _ in 0..n {
        let (first, gate) = (first.clone(), gate.clone());
        set.spawn(async move {
            let mut permit = Some(gate.acquire_owned().await.expect("semaphore"));
            let mut conn = Conn::open(addr).await.expect("open a stream connection");
            let mut started = || {
                first.fetch_add(1, Ordering::Relaxed);
                permit.take();
            };
            let mut arrivals = Vec::new();
            let t0 = Instant::now();
            let result = read_stream(&mut conn, path, t0, &mut arrivals, Some(&mut started)).await;
            if let Err(e) = result {
                panic!("a slow stream failed: {e}");
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.load(Ordering::Relaxed) < n {
        if let Some(Err(e)) = set.try_join_next() {
            panic!("a slow stream task failed: {e}");
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} slow streams started within 60 s",
            first.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    set
}
