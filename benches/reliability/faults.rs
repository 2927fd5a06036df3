//! An upstream that misbehaves on purpose, chosen by the first path
//! segment: `reset`, `hang`, `truncate`, `garbage`, `big` (100 MB), `gzip`
//! (compressed usage), `absurd` (usage no answer could have).

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub async fn start() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            tokio::spawn(answer(stream));
        }
    });
    addr
}

fn json(body: &[u8], extra: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

async fn answer(mut stream: TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let fault = line
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.split('/').nth(1))
        .unwrap_or("")
        .to_owned();
    match fault.as_str() {
        "reset" => {
            // A zero linger closes with RST at once (it is a non-zero one
            // that would block on drop).
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
        }
        "hang" => tokio::time::sleep(Duration::from_secs(60)).await,
        "truncate" => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"partial\":")
                .await;
        }
        "garbage" => {
            let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
        }
        "big" => {
            let total = 100_000_000usize;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {total}\r\nconnection: close\r\n\r\n");
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            while sent < total {
                let n = chunk.len().min(total - sent);
                if stream.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                sent += n;
            }
        }
        "gzip" => {
            let body = br#"{"model":"m","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":34}}"#;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            let _ = e.write_all(body);
            let gz = e.finish().unwrap_or_default();
            let _ = stream
                .write_all(&json(&gz, "content-encoding: gzip\r\n"))
                .await;
        }
        "absurd" => {
            let body = br#"{"model":"m","choices":[],"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":18446744073709551615}}"#;
            let _ = stream.write_all(&json(body, "")).await;
        }
        _ => {
            let _ = stream.write_all(&json(b"{}", "")).await;
        }
    }
    let _ = stream.shutdown().await;
}
