//! The proxy listener: HTTP/1.1 and h2c (or TLS with ALPN) on one port,
//! connections tracked so a drain can let them finish.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Version};
use hyper::body::Incoming;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::LimitsPolicy;
use crate::proxy::{self, ClientConn, Shared};
use conns::{Conns, Held, Timeouts, Watched};

pub(crate) mod conns;
mod scan;

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP/1.1 and HTTP/2 settings for a connection under `limits`.
///
/// hyper's own header timer is off: it would start whenever a keep-alive
/// connection goes idle and close it at `header_timeout` instead of
/// `client_idle_timeout`; [`conns`] times heads from accept instead.
fn http_builder(limits: &LimitsPolicy) -> auto::Builder<TokioExecutor> {
    let headers = usize::try_from(limits.max_request_headers).unwrap_or(usize::MAX);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(None)
        // hyper answers 431 when a head does not fit; its floor is 8 KiB.
        .max_buf_size(headers.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_header_list_size(u32::try_from(headers).unwrap_or(u32::MAX));
    builder
}

/// One builder shared by a listener's connections, rebuilt when a reload
/// changes the limits.
#[derive(Default)]
pub(crate) struct Builders {
    built: Option<(LimitsPolicy, Arc<auto::Builder<TokioExecutor>>)>,
}

impl Builders {
    pub(crate) fn for_limits(
        &mut self,
        limits: &LimitsPolicy,
    ) -> Arc<auto::Builder<TokioExecutor>> {
        match &self.built {
            Some((built_for, builder)) if built_for == limits => builder.clone(),
            _ => {
                let builder = Arc::new(http_builder(limits));
                self.built = Some((limits.clone(), builder.clone()));
                builder
            }
        }
    }
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
    let conns = Conns::new(&shared.metrics, "proxy");
    let mut builders = Builders::default();
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
                // Limits changed by a reload apply from the next connection.
                let limits = shared.snapshot.load().policy.limits.clone();
                let Some(tracked) = conns.admit(limits.max_connections) else {
                    tracing::debug!(%peer, "max_connections reached and none idle: refused");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let conn = ClientConn { peer, tls: tls.is_some() };
                let service = {
                    let (shared, state) = (shared.clone(), tracked.state.clone());
                    service_fn(move |mut request: Request<Incoming>| {
                        let held = state.request_started(request.version() == Version::HTTP_2);
                        if state.take_ambiguous() {
                            request.extensions_mut().insert(proxy::AmbiguousLength);
                        }
                        let handled = proxy::handle(shared.clone(), conn, request);
                        async move {
                            let response = handled.await?;
                            Ok::<_, Infallible>(response.map(|body| Held::new(body, held)))
                        }
                    })
                };
                let builder = builders.for_limits(&limits);
                let timeouts = Timeouts::from(&limits);
                let watcher = graceful.watcher();
                let tls = tls.clone();
                connections.spawn(async move {
                    let state = tracked.state.clone();
                    let serving = async {
                        match tls {
                            None => {
                                let stream = Watched::new(stream, state, true);
                                let connection = builder.serve_connection(TokioIo::new(stream), service);
                                watcher.watch(connection.into_owned()).await
                            }
                            Some(acceptor) => {
                                let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                    Ok(Ok(stream)) => stream,
                                    Ok(Err(e)) => {
                                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                        return Ok(());
                                    }
                                    Err(_) => {
                                        tracing::debug!(%peer, "TLS handshake timed out");
                                        return Ok(());
                                    }
                                };
                                let stream = Watched::new(stream, state, true);
                                let connection = builder.serve_connection(TokioIo::new(stream), service);
                                watcher.watch(connection.into_owned()).await
                            }
                        }
                    };
                    if let Some(Err(e)) = tracked.serve(timeouts, serving).await {
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
