//! weir: a reverse proxy and sidecar that enforces resilience policies in
//! front of LLM APIs.
//!
//! [`Weir::bind`] opens the listeners for a validated [`config::Policy`];
//! [`Weir::run`] serves until the shutdown future resolves, then drains.
//! Tests drive weir in-process through exactly this API.

#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod metrics;
pub mod proxy;
pub mod resilience;
mod server;
pub mod tls;
pub mod upstream;
pub mod usage;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use admin::AdminState;
use config::Policy;
use metrics::Metrics;
use proxy::Shared;
use upstream::{Changes, UpstreamRegistry};

/// A bound, not yet serving, weir.
pub struct Weir {
    proxy: TcpListener,
    admin: TcpListener,
    tls: Option<TlsAcceptor>,
    handle: Handle,
}

/// Controls a running weir: reload its policy, read its state.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
    registry: Arc<UpstreamRegistry>,
    admin: Arc<AdminState>,
}

impl Weir {
    /// Opens the proxy and admin listeners and builds every upstream.
    pub async fn bind(policy: Policy) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let registry = Arc::new(UpstreamRegistry::new(metrics.clone()));
        let policy = Arc::new(policy);
        let (snapshot, _) = registry
            .snapshot(policy.clone())
            .map_err(anyhow::Error::msg)?;
        let tls = match &policy.tls {
            Some(tls) => Some(TlsAcceptor::from(Arc::new(
                tls::server_config(tls).map_err(anyhow::Error::msg)?,
            ))),
            None => None,
        };
        let proxy = TcpListener::bind(policy.listen)
            .await
            .with_context(|| format!("binding the proxy listener on {}", policy.listen))?;
        let admin = TcpListener::bind(policy.admin)
            .await
            .with_context(|| format!("binding the admin listener on {}", policy.admin))?;
        let shared = Arc::new(Shared::new(snapshot, metrics.clone()));
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
                shared,
                registry,
                admin: admin_state,
            },
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

    /// Serves until `shutdown` resolves; then reports not-ready, stops
    /// accepting, and lets in-flight requests (streams included) finish for
    /// up to `shutdown.drain_timeout`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Weir {
            proxy,
            admin,
            tls,
            handle,
        } = self;
        let stop_admin = CancellationToken::new();
        let admin_task = tokio::spawn(admin::serve(
            admin,
            handle.admin.clone(),
            stop_admin.clone(),
        ));
        for upstream in handle.shared.snapshot.load().router.upstreams() {
            tokio::spawn(upstream.clone().warm());
        }
        tracing::info!(
            proxy = %proxy.local_addr()?,
            admin = %handle.admin_addr_hint(),
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
        stop_admin.cancel();
        let _ = admin_task.await;
        tracing::info!("drained, exiting");
        Ok(())
    }
}

impl Handle {
    fn admin_addr_hint(&self) -> SocketAddr {
        self.shared.snapshot.load().policy.admin
    }

    /// The policy requests are now served under.
    pub fn policy(&self) -> Arc<Policy> {
        self.shared.snapshot.load().policy.clone()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Reads and validates `path` off the async workers and, only if it is
    /// valid in full, swaps it in. Running requests keep the policy they
    /// started with. An invalid file changes nothing.
    pub async fn reload(&self, path: &Path) -> Result<Changes, config::PolicyError> {
        let owned: PathBuf = path.to_owned();
        let loaded = tokio::task::spawn_blocking(move || config::load_file(&owned))
            .await
            .unwrap_or_else(|e| {
                Err(config::PolicyError {
                    problems: vec![config::Problem {
                        file: path.display().to_string(),
                        line: None,
                        path: String::new(),
                        message: format!("loading task failed: {e}"),
                    }],
                })
            });
        let result = loaded.and_then(|policy| self.apply(policy));
        let metrics = &self.shared.metrics;
        match &result {
            Ok(changes) => {
                metrics.config_reloads.with_label_values(&["ok"]).inc();
                metrics.config_last_reload_success.set(unix_now());
                tracing::info!(
                    added = ?changes.added,
                    removed = ?changes.removed,
                    changed = ?changes.changed,
                    "policy reloaded"
                );
            }
            Err(e) => {
                metrics.config_reloads.with_label_values(&["error"]).inc();
                tracing::error!("policy reload rejected, the previous policy keeps serving: {e}");
            }
        }
        result
    }

    fn apply(&self, policy: Policy) -> Result<Changes, config::PolicyError> {
        let old = self.policy();
        if old.listen != policy.listen || old.admin != policy.admin || old.tls != policy.tls {
            tracing::warn!("`listen`, `admin` and `tls` changes take effect only at restart");
        }
        let (snapshot, changes) = self
            .registry
            .snapshot(Arc::new(policy))
            .map_err(|message| config::PolicyError {
                problems: vec![config::Problem {
                    file: String::new(),
                    line: None,
                    path: "upstreams".into(),
                    message,
                }],
            })?;
        for upstream in snapshot.router.upstreams() {
            if changes.added.contains(&upstream.name.to_string())
                || changes.changed.contains(&upstream.name.to_string())
            {
                tokio::spawn(upstream.clone().warm());
            }
        }
        self.shared.snapshot.store(Arc::new(snapshot));
        Ok(changes)
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Binds and serves `policy` until `shutdown` resolves.
pub async fn run(policy: Policy, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    Weir::bind(policy).await?.run(shutdown).await
}
