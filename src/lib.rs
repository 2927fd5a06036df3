//! weir: a reverse proxy and sidecar that enforces resilience policies in
//! front of LLM APIs.
//!
//! [`Weir::bind`] opens the listeners for a validated [`config::Policy`];
//! [`Weir::run`] serves until the shutdown future resolves, then drains.
//! Tests drive weir in-process through exactly this API.
//!
//! # Layers
//!
//! Each module uses only modules on the floors below it, never one above
//! (`tests/layers.rs` keeps it so). Ground floor first:
//!
//! 1. `wire`, `reject`, `tls`: HTTP vocabulary, the contract's reject
//!    reasons, rustls configs from certificates already read.
//! 2. `config`: the policy file, validated (reads the TLS files once).
//! 3. `resilience`: the pure state machines (backoff, budget, breaker,
//!    bulkhead, buckets, the retry decision).
//! 4. `metrics`: every collector, handles resolved once.
//! 5. `usage`: token usage from JSON and SSE, tenants, the usage log.
//! 6. `upstream`: per-upstream runtime state (pooled client, resilience
//!    state, metric handles), kept across reloads by the registry.
//! 7. `proxy`: the request pipeline in phase order.
//! 8. `server`: the proxy listener (HTTP/1.1, h2c, TLS), drain.
//! 9. `admin`: the admin listener.
//! 10. `reload`: new policies swapped in, built off the async workers.

#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod metrics;
pub mod proxy;
pub mod reject;
pub mod reload;
pub mod resilience;
mod server;
pub mod tls;
pub mod upstream;
pub mod usage;
pub mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use tokio_util::task::AbortOnDropHandle;

use admin::AdminState;
use config::Policy;
use metrics::Metrics;
use proxy::{Shared, Snapshot};
use reload::Reloader;
use upstream::{Changes, UpstreamRegistry};

/// A bound, not yet serving, weir.
pub struct Weir {
    proxy: TcpListener,
    admin: TcpListener,
    tls: Option<TlsAcceptor>,
    handle: Handle,
    watched: Option<PathBuf>,
}

/// Controls a running weir: reload its policy, read its state.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
    admin: Arc<AdminState>,
    reloader: Arc<Reloader>,
}

/// Settings of the process rather than of the policy.
#[derive(Debug, Clone)]
pub struct Options {
    /// Usage events that may wait for the writer; past this they are dropped.
    pub usage_queue_capacity: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            usage_queue_capacity: usage::log::QUEUE_CAPACITY,
        }
    }
}

impl Weir {
    /// Opens the proxy and admin listeners and builds every upstream.
    pub async fn bind(policy: Policy) -> anyhow::Result<Self> {
        Self::bind_with(policy, Options::default()).await
    }

    pub async fn bind_with(policy: Policy, options: Options) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let registry = Arc::new(UpstreamRegistry::new(metrics.clone()));
        let policy = Arc::new(policy);
        let (upstreams, _) = registry.load(&policy)?;
        let snapshot = Snapshot::new(policy.clone(), upstreams);
        let tls = match policy.tls.as_ref().map(|tls| &tls.identity) {
            Some(Some(identity)) => {
                Some(TlsAcceptor::from(Arc::new(tls::server_config(identity)?)))
            }
            Some(None) => anyhow::bail!("`tls` was not loaded by validation"),
            None => None,
        };
        let proxy = listen(policy.listen)
            .with_context(|| format!("binding the proxy listener on {}", policy.listen))?;
        let admin = listen(policy.admin)
            .with_context(|| format!("binding the admin listener on {}", policy.admin))?;
        let log = match &policy.usage_log {
            Some(path) => Some(
                usage::log::UsageLog::start(
                    path.clone(),
                    options.usage_queue_capacity,
                    metrics.usage_events_dropped.clone(),
                )
                .with_context(|| format!("opening the usage log {}", path.display()))?,
            ),
            None => None,
        };
        let accountant = Arc::new(usage::account::Accountant::new(
            metrics.tokens.clone(),
            log,
            policy.metrics.max_models,
            policy.metrics.max_tenants,
        ));
        let shared = Arc::new(Shared::new(snapshot, metrics.clone(), accountant));
        metrics.config_last_reload_success.set(unix_now());
        let admin_state = Arc::new(AdminState {
            shared: shared.clone(),
            ready: true.into(),
        });
        Ok(Self {
            proxy,
            admin,
            tls,
            handle: Handle {
                reloader: Arc::new(Reloader::new(shared.clone(), registry)),
                shared,
                admin: admin_state,
            },
            watched: None,
        })
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Reloads the policy from `path` whenever its content changes, while
    /// running. `path` should be the file the running policy came from.
    pub async fn watch_policy(&mut self, path: PathBuf) -> anyhow::Result<()> {
        self.handle
            .reloader
            .seen(&path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        self.watched = Some(path);
        Ok(())
    }

    /// Serves until `shutdown` resolves; then reports not-ready, stops
    /// accepting, and lets in-flight requests (streams included) finish for
    /// up to `shutdown.drain_timeout`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Weir {
            proxy,
            admin,
            tls,
            handle,
            watched,
        } = self;
        // The watcher lives as long as `run`; its task ends with it.
        let _watch = match &watched {
            Some(path) => {
                let (watcher, mut ticks) = config::watch::watch(path)
                    .with_context(|| format!("watching {}", path.display()))?;
                let (reloader, path) = (handle.reloader.clone(), path.clone());
                let task = tokio::spawn(async move {
                    while ticks.recv().await.is_some() {
                        reloader.reload_if_changed(&path).await;
                    }
                });
                Some((watcher, AbortOnDropHandle::new(task)))
            }
            None => None,
        };
        let admin_addr = admin.local_addr()?;
        let stop_admin = CancellationToken::new();
        let admin_task = tokio::spawn(admin::serve(
            admin,
            handle.admin.clone(),
            stop_admin.clone(),
        ));
        for upstream in handle.shared.snapshot.load().router.upstreams() {
            upstream.start_warming();
        }
        tracing::info!(
            proxy = %proxy.local_addr()?,
            admin = %admin_addr,
            tls = tls.is_some(),
            "weir serving"
        );
        let stop = CancellationToken::new();
        let drain_shared = handle.shared.clone();
        let serving =
            server::serve_proxy(proxy, handle.shared.clone(), tls, stop.clone(), move || {
                drain_shared.snapshot.load().policy.shutdown.drain_timeout
            });
        let admin_state = handle.admin.clone();
        let signal = async move {
            shutdown.await;
            admin_state.ready.store(false, Ordering::Release);
            tracing::info!("shutdown requested: not ready, no longer accepting");
            stop.cancel();
        };
        tokio::join!(serving, signal);
        // Every request has ended: write out the usage events still queued.
        let accountant = handle.shared.accountant.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(log) = &accountant.log {
                log.close();
            }
        })
        .await;
        stop_admin.cancel();
        let _ = admin_task.await;
        tracing::info!("drained, exiting");
        Ok(())
    }
}

impl Handle {
    /// The policy requests are now served under.
    pub fn policy(&self) -> Arc<Policy> {
        self.shared.snapshot.load().policy.clone()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Reopens the usage log file (after log rotation).
    pub fn reopen_usage_log(&self) {
        if let Some(log) = &self.shared.accountant.log {
            log.reopen();
        }
    }

    /// Reads, validates and builds `path` off the async workers and, only if
    /// all of it succeeded, swaps it in. Running requests keep the policy
    /// they started with. An invalid file changes nothing. (SIGHUP.)
    pub async fn reload(&self, path: &Path) -> Result<Changes, config::PolicyError> {
        self.reloader.reload(path).await
    }
}

/// Connections the kernel may hold for `accept`: tokio's default of 128
/// overflows under a connect burst (nginx uses 511).
const LISTEN_BACKLOG: u32 = 1024;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Binds and serves `policy` until `shutdown` resolves.
pub async fn run(policy: Policy, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    Weir::bind(policy).await?.run(shutdown).await
}
