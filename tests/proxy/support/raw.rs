//! Raw sockets, for what HTTP clients would tidy up: paths with dot
//! segments, contradictory framing, silent and slow connections, and
//! upstreams that answer whatever bytes a test wants.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::PATIENCE;

/// Sends `request` on a new connection and reads until weir closes it
/// (send `connection: close`). Panics if it does not within [`PATIENCE`].
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_to_close(&mut stream).await
}

/// Everything the peer sends until it closes, as text.
pub async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut out))
        .await
        .expect("the connection is closed in time")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the peer closes `stream` (EOF or reset) within [`PATIENCE`],
/// discarding what it sends first.
pub async fn closes(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(PATIENCE, read_all).await.is_ok()
}

/// The status code of a raw response.
pub fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

/// The value of header `name` in a raw response head, if present.
pub fn header<'r>(response: &'r str, name: &str) -> Option<&'r str> {
    let head = response.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A GET of `path` that asks weir to close the connection after answering.
pub fn get_closing(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: weir\r\nconnection: close\r\n\r\n").into_bytes()
}

/// An upstream that reads a request head and answers `answer` verbatim,
/// then closes: for answers no HTTP library would send.
pub struct RawUpstream {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl RawUpstream {
    pub async fn start(answer: &'static [u8]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = stream.write_all(answer).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
