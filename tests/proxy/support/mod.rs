//! Test harness: weir started in-process on `127.0.0.1:0`, scripted
//! upstreams on `127.0.0.1:0`, and a client. No fixed ports, no sleeps for
//! readiness: `bind` returns once the listeners are open.

#![allow(dead_code)]

#[path = "../../../examples/mock_llm/server.rs"]
pub mod mock_llm;
pub mod raw;
pub mod upstream;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use upstream::{sse_body, MockUpstream};

/// A fresh directory for one test's files, removed when dropped.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("weir-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Self(dir)
    }

    /// Writes `text` to `name` in the directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("scratch file written");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Generous bound for anything that should happen "at once".
pub const PATIENCE: Duration = Duration::from_secs(10);

pub struct TestWeir {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub handle: weir::Handle,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// A policy with both listeners on ephemeral ports and the given
/// `upstreams:` body (indented by the caller as under `upstreams:`).
pub fn policy(upstreams: &str) -> String {
    format!("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nshutdown:\n  drain_timeout: 5s\nupstreams:\n{upstreams}")
}

impl TestWeir {
    pub async fn start(yaml: &str) -> Self {
        let policy = weir::config::parse(yaml, "test.yaml", &|name| std::env::var(name).ok())
            .unwrap_or_else(|e| panic!("test policy invalid: {e}\n{yaml}"));
        Self::start_policy(policy).await
    }

    pub async fn start_policy(policy: weir::config::Policy) -> Self {
        Self::start_with(policy, weir::Options::default()).await
    }

    /// weir on the policy file at `path`, reloading it when it changes.
    pub async fn start_watching(path: &std::path::Path) -> Self {
        let policy = weir::config::load_file(path).unwrap_or_else(|e| panic!("{e}"));
        let mut weir = weir::Weir::bind(policy).await.expect("weir binds");
        weir.watch_policy(path.to_owned())
            .await
            .expect("the policy file is watched");
        Self::run(weir)
    }

    pub async fn start_with(policy: weir::config::Policy, options: weir::Options) -> Self {
        let weir = weir::Weir::bind_with(policy, options)
            .await
            .expect("weir binds");
        Self::run(weir)
    }

    fn run(weir: weir::Weir) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let (proxy, admin, handle) = (weir.proxy_addr(), weir.admin_addr(), weir.handle());
        let task = tokio::spawn(weir.run(async move {
            let _ = stopped.await;
        }));
        Self {
            proxy,
            admin,
            handle,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    /// Starts the drain; the returned handle ends when weir has exited.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub async fn shutdown(mut self) {
        self.begin_shutdown();
        tokio::time::timeout(PATIENCE, &mut self.task)
            .await
            .expect("weir exits within the drain timeout")
            .expect("weir task does not panic")
            .expect("weir exits cleanly");
    }

    pub async fn join(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await.expect("weir task does not panic")
    }

    pub async fn scrape(&self) -> String {
        let response = client()
            .get(format!("http://{}/metrics", self.admin).parse().unwrap())
            .await
            .expect("admin answers");
        body_string(response).await
    }

    /// The value of one sample, e.g. `weir_in_flight{upstream="a"}`; 0 if absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        metric_value(&self.scrape().await, sample)
    }

    /// Waits (bounded) until `sample` reaches `value`; returns the last value
    /// seen, for the caller's assertion.
    pub async fn metric_eventually(&self, sample: &str, value: f64) -> f64 {
        settles(&value, || self.metric(sample)).await
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let response = client()
            .get(format!("http://{}{path}", self.admin).parse().unwrap())
            .await
            .expect("admin answers");
        let status = response.status().as_u16();
        (status, body_string(response).await)
    }
}

/// The mock OpenAI-compatible upstream of `examples/mock_llm`, on an
/// ephemeral port.
pub async fn start_mock_llm(
    config: mock_llm::MockConfig,
) -> (String, JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (url, tokio::spawn(mock_llm::serve(listener, config)))
}

/// Finds `sample` in Prometheus text; labels must be in the exporter's
/// (alphabetical) order.
pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

/// A keep-alive HTTP/1.1 client.
pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An h2c (prior knowledge) client.
pub fn h2c_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).unwrap()
}

pub fn post(url: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap()
}

pub async fn send(request: Request<Full<Bytes>>) -> Response<Incoming> {
    tokio::time::timeout(PATIENCE, client().request(request))
        .await
        .expect("weir answers in time")
        .expect("request reaches weir")
}

pub async fn body_bytes(response: Response<Incoming>) -> Bytes {
    tokio::time::timeout(PATIENCE, response.into_body().collect())
        .await
        .expect("body ends in time")
        .expect("body arrives whole")
        .to_bytes()
}

pub async fn body_string(response: Response<Incoming>) -> String {
    String::from_utf8(body_bytes(response).await.to_vec()).expect("utf-8 body")
}

pub async fn body_json(response: Response<Incoming>) -> serde_json::Value {
    serde_json::from_slice(&body_bytes(response).await).expect("JSON body")
}

/// The next data frame of a streamed body, or `None` at its end.
pub async fn next_chunk(body: &mut Incoming) -> Option<Result<Bytes, hyper::Error>> {
    loop {
        match tokio::time::timeout(PATIENCE, body.frame())
            .await
            .expect("a frame arrives in time")?
        {
            Ok(frame) => match frame.into_data() {
                // HTTP/2 may end a stream with an empty DATA frame.
                Ok(data) if data.is_empty() => continue,
                Ok(data) => return Some(Ok(data)),
                Err(_) => continue,
            },
            Err(e) => return Some(Err(e)),
        }
    }
}

/// Starts a streamed POST to `url` against a [`MockUpstream::held_streams`]
/// upstream, sends its first event and checks it arrived: the stream is
/// then open, and the test holds the upstream's event sender.
pub async fn open_stream(
    client: &TestClient,
    url: &str,
    streams: &mut tokio::sync::mpsc::Receiver<tokio::sync::mpsc::Sender<Bytes>>,
) -> (tokio::sync::mpsc::Sender<Bytes>, Incoming) {
    let pending = tokio::spawn(client.request(post(url, "{}")));
    let events = tokio::time::timeout(PATIENCE, streams.recv())
        .await
        .expect("the request reaches the upstream")
        .expect("the upstream is running");
    events
        .send(Bytes::from_static(b"data: 1\n\n"))
        .await
        .unwrap();
    let mut body = pending
        .await
        .unwrap()
        .expect("response headers arrive")
        .into_body();
    assert_eq!(next_chunk(&mut body).await.unwrap().unwrap(), "data: 1\n\n");
    (events, body)
}

/// Polls `probe` every few milliseconds until it returns `want`, for at most
/// [`PATIENCE`]; returns the last value seen, for the caller's assertion.
pub async fn settles<T, F, Fut>(want: &T, mut probe: F) -> T
where
    T: PartialEq,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let seen = probe().await;
        if seen == *want || tokio::time::Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (bounded) until `condition` holds, polling every few milliseconds.
pub async fn eventually<F: FnMut() -> bool>(what: &str, mut condition: F) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
