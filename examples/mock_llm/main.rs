//! Mock OpenAI-compatible upstream for local testing and benchmarking.
//!
//! `cargo run --example mock_llm -- --listen 127.0.0.1:8000 --latency 0ms --chunk-delay 20ms --chunks 8`

mod server;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Fast OpenAI-compatible mock upstream (HTTP/1.1 + h2c)")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Delay before response headers (e.g. `150ms`, `1.5s`).
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    latency: Duration,
    /// Delay before each streamed content chunk (e.g. `20ms`).
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    chunk_delay: Duration,
    /// Content chunks per completion (= completion tokens).
    #[arg(long, default_value_t = 8)]
    chunks: usize,
    /// Model reported when the request names none.
    #[arg(long, default_value = "mock-gpt")]
    model: String,
}

/// Parses `250ms`, `2s`, `1.5s` or a bare number of milliseconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let parsed = if let Some(ms) = s.strip_suffix("ms") {
        ms.trim().parse::<u64>().ok().map(Duration::from_millis)
    } else if let Some(secs) = s.strip_suffix('s') {
        let secs = secs.trim().parse::<f64>().ok();
        secs.and_then(|v| Duration::try_from_secs_f64(v).ok())
    } else {
        s.parse::<u64>().ok().map(Duration::from_millis)
    };
    parsed.ok_or_else(|| format!("invalid duration {s:?} (expected e.g. `20ms` or `1.5s`)"))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let config = server::MockConfig {
        latency: args.latency,
        chunk_delay: args.chunk_delay,
        chunks: args.chunks,
        model: args.model,
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("mock_llm listening on {}", listener.local_addr()?);
    server::serve(listener, config).await
}
