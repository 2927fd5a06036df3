//! The proxy listener: HTTP/1.1 and h2c (or TLS with ALPN) on one port,
//! connections tracked so a drain can let them finish.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::proxy::{self, ClientConn, Shared};

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(Some(Duration::from_secs(30)));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// Accepts until `stop` is cancelled, then lets open connections finish
/// their requests (streams included) for up to `drain_timeout`.
pub(crate) async fn serve_proxy(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
    drain_timeout: impl Fn() -> Duration,
) {
    let builder = Arc::new(http_builder());
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, go on.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = ClientConn { peer, tls: tls.is_some() };
                let shared = shared.clone();
                let service = service_fn(move |request| proxy::handle(shared.clone(), conn, request));
                let builder = builder.clone();
                let watcher = graceful.watcher();
                let tls = tls.clone();
                connections.spawn(async move {
                    let result = match tls {
                        None => {
                            let connection = builder.serve_connection(TokioIo::new(stream), service);
                            watcher.watch(connection.into_owned()).await
                        }
                        Some(acceptor) => {
                            let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                            let connection = builder.serve_connection(TokioIo::new(stream), service);
                            watcher.watch(connection.into_owned()).await
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "client connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    let open = connections.len();
    let timeout = drain_timeout();
    tracing::info!(open_connections = open, ?timeout, "draining");
    let drained = tokio::time::timeout(timeout, async {
        graceful.shutdown().await;
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            cut = connections.len(),
            "drain_timeout reached, closing the connections still open"
        );
    }
    connections.shutdown().await;
}
