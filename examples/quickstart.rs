//! weir end to end with no API key: starts the mock LLM upstream on
//! 127.0.0.1:8000 and weir on `policies/local.yaml` (proxy on :8080, admin
//! on :9901) in one process.
//!
//! ```text
//! cargo run --release --example quickstart
//! curl -N localhost:8080/v1/chat/completions \
//!   -d '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}'
//! ```

#[path = "mock_llm/server.rs"]
mod mock;

use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mock = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
    let config = mock::MockConfig {
        chunk_delay: Duration::from_millis(30),
        ..Default::default()
    };
    tokio::spawn(mock::serve(mock, config));
    eprintln!("mock LLM upstream on http://127.0.0.1:8000/v1");

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/local.yaml");
    let policy = weir::config::load_file(&path)?;
    let weir = weir::Weir::bind(policy).await?;
    eprintln!(
        "weir on http://{} (admin http://{}); try:\n  export OPENAI_BASE_URL=http://{}/v1 OPENAI_API_KEY=unused",
        weir.proxy_addr(),
        weir.admin_addr(),
        weir.proxy_addr()
    );
    weir.run(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
