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
    watched: Option<PathBuf>,
}

/// Controls a running weir: reload its policy, read its state.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
    registry: Arc<UpstreamRegistry>,
    admin: Arc<AdminState>,
    /// Hash of the policy file content last read, valid or not: the same
    /// content is not reloaded (or complained about) twice.
    last_seen: Arc<std::sync::Mutex<Option<[u8; 32]>>>,
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
        let (snapshot, _) = registry
            .snapshot(policy.clone())
            .map_err(anyhow::Error::msg)?;
        let tls = match &policy.tls {
            Some(tls) => Some(TlsAcceptor::from(Arc::new(
                tls::server_config(tls).map_err(anyhow::Error::msg)?,
            ))),
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
                shared,
                registry,
                admin: admin_state,
                last_seen: Arc::default(),
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
        let text = read_text(path.clone())
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        *self
            .handle
            .last_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(config::watch::content_hash(&text));
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
                let (handle, path) = (handle.clone(), path.clone());
                let task = tokio::spawn(async move {
                    while ticks.recv().await.is_some() {
                        handle.reload_if_changed(&path).await;
                    }
                });
                Some((watcher, AbortOnDrop(task)))
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
            tokio::spawn(upstream.clone().warm());
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

    /// Reads and validates `path` off the async workers and, only if it is
    /// valid in full, swaps it in. Running requests keep the policy they
    /// started with. An invalid file changes nothing. (SIGHUP.)
    pub async fn reload(&self, path: &Path) -> Result<Changes, config::PolicyError> {
        match read_text(path.to_owned()).await {
            Ok(text) => {
                self.remember(&text);
                self.reload_text(&text, path)
            }
            Err(e) => self.reload_failed(config::PolicyError {
                problems: vec![problem(path, format!("cannot read the policy file: {e}"))],
            }),
        }
    }

    /// Reloads `path` if its content differs from the content last read.
    pub async fn reload_if_changed(&self, path: &Path) {
        let Ok(text) = read_text(path.to_owned()).await else {
            // Mid-swap (a rename or symlink flip): the next event will tell.
            return;
        };
        if self.remember(&text) {
            let _ = self.reload_text(&text, path);
        }
    }

    /// Notes `text` as seen; true if it differs from the last seen.
    fn remember(&self, text: &str) -> bool {
        let hash = config::watch::content_hash(text);
        let mut last = self.last_seen.lock().unwrap_or_else(|e| e.into_inner());
        last.replace(hash) != Some(hash)
    }

    fn reload_text(&self, text: &str, path: &Path) -> Result<Changes, config::PolicyError> {
        let file = path.display().to_string();
        let result = config::parse(text, &file, &|name| std::env::var(name).ok())
            .and_then(|policy| self.apply(policy));
        match result {
            Ok(changes) => {
                let metrics = &self.shared.metrics;
                metrics.config_reloads.with_label_values(&["ok"]).inc();
                metrics.config_last_reload_success.set(unix_now());
                tracing::info!(
                    added = ?changes.added,
                    removed = ?changes.removed,
                    changed = ?changes.changed,
                    "policy reloaded"
                );
                Ok(changes)
            }
            Err(e) => self.reload_failed(e),
        }
    }

    fn reload_failed(&self, e: config::PolicyError) -> Result<Changes, config::PolicyError> {
        self.shared
            .metrics
            .config_reloads
            .with_label_values(&["error"])
            .inc();
        tracing::error!("policy reload rejected, the previous policy keeps serving: {e}");
        Err(e)
    }

    fn apply(&self, policy: Policy) -> Result<Changes, config::PolicyError> {
        let old = self.policy();
        if old.listen != policy.listen || old.admin != policy.admin || old.tls != policy.tls {
            tracing::warn!("`listen`, `admin` and `tls` changes take effect only at restart");
        }
        if old.usage_log != policy.usage_log {
            tracing::warn!("a `usage_log` path change takes effect only at restart");
        }
        self.shared
            .accountant
            .set_caps(policy.metrics.max_models, policy.metrics.max_tenants);
        let (snapshot, changes) = self
            .registry
            .snapshot(Arc::new(policy))
            .map_err(|message| config::PolicyError {
                problems: vec![problem(Path::new(""), message)],
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

fn problem(path: &Path, message: String) -> config::Problem {
    config::Problem {
        file: path.display().to_string(),
        line: None,
        path: String::new(),
        message,
    }
}

/// Reads a file off the async workers.
async fn read_text(path: PathBuf) -> std::io::Result<String> {
    tokio::task::spawn_blocking(move || std::fs::read_to_string(path))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// Aborts a task when dropped, so nothing outlives its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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
