//! Hot reload: a new policy replaces the old one in one atomic swap, or
//! changes nothing.
//!
//! Everything that touches a file or may take a while runs in
//! `spawn_blocking`, never on an async worker: reading the policy, parsing
//! and validating it (which reads the TLS and CA files it names, once), and
//! building the upstreams (TLS configs, pools). Only the swap and the logging
//! happen on the worker. Reloads run one at a time, so the registry and the
//! snapshot always describe the same policy.
//!
//! Requests already running keep the snapshot they loaded; upstreams whose
//! policy did not change are reused as they are (pool, breaker, limiter),
//! changed ones keep what still applies (see [`UpstreamRegistry::load`]).
//! Only pools that are new are warmed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::config::{self, Policy, PolicyError, Problem};
use crate::proxy::{Shared, Snapshot};
use crate::upstream::{Changes, UpstreamError, UpstreamRegistry};

/// Loads policies into a running weir.
pub struct Reloader {
    shared: Arc<Shared>,
    registry: Arc<UpstreamRegistry>,
    /// Hash of the policy file content last read, valid or not: the same
    /// content is not reloaded (or complained about) twice. Held for the
    /// whole of a reload, so reloads never interleave.
    last_seen: Mutex<Option<[u8; 32]>>,
}

/// What the blocking part of a reload produced.
type Loaded = Result<(Arc<Policy>, Snapshot, Changes), PolicyError>;

impl Reloader {
    pub fn new(shared: Arc<Shared>, registry: Arc<UpstreamRegistry>) -> Self {
        Self {
            shared,
            registry,
            last_seen: Mutex::new(None),
        }
    }

    /// Notes the content of `path` as the one running, so the watcher does
    /// not reload it again.
    pub async fn seen(&self, path: &Path) -> std::io::Result<()> {
        let text = read_text(path.to_owned()).await?;
        *self.last_seen.lock().await = Some(config::watch::content_hash(&text));
        Ok(())
    }

    /// Reads, validates and builds `path` off the async workers and, only if
    /// all of it succeeded, swaps it in. (SIGHUP.)
    pub async fn reload(&self, path: &Path) -> Result<Changes, PolicyError> {
        let mut last_seen = self.last_seen.lock().await;
        let result = match self.load(path, None).await {
            Ok(Some((hash, loaded))) => {
                *last_seen = Some(hash);
                loaded
            }
            // Not reached: without `unless`, a file read is always loaded.
            Ok(None) => return Ok(Changes::default()),
            Err(e) => Err(PolicyError::single(
                &path.display().to_string(),
                format!("cannot read the policy file: {e}"),
            )),
        };
        self.finish(result)
    }

    /// Reloads `path` if its content differs from the content last read;
    /// a file that cannot be read now (mid-swap) is left for the next event.
    pub async fn reload_if_changed(&self, path: &Path) {
        let mut last_seen = self.last_seen.lock().await;
        if let Ok(Some((hash, loaded))) = self.load(path, *last_seen).await {
            *last_seen = Some(hash);
            let _ = self.finish(loaded);
        }
    }

    /// The blocking part: read, hash, and unless the hash is `unless`,
    /// parse, validate and build. `Ok(None)`: the content is `unless`.
    async fn load(
        &self,
        path: &Path,
        unless: Option<[u8; 32]>,
    ) -> std::io::Result<Option<([u8; 32], Loaded)>> {
        let path = path.to_owned();
        let registry = self.registry.clone();
        let old = self.shared.snapshot.load().policy.clone();
        let work = move || {
            let text = std::fs::read_to_string(&path)?;
            let hash = config::watch::content_hash(&text);
            if unless == Some(hash) {
                return Ok(None);
            }
            Ok(Some((hash, build(&text, &path, &registry, &old))))
        };
        tokio::task::spawn_blocking(work)
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }

    /// The swap, on success, and the log line and counters either way.
    fn finish(&self, loaded: Loaded) -> Result<Changes, PolicyError> {
        let metrics = &self.shared.metrics;
        match loaded {
            Ok((policy, snapshot, changes)) => {
                self.shared
                    .accountant
                    .set_caps(policy.metrics.max_models, policy.metrics.max_tenants);
                for upstream in snapshot.router.upstreams() {
                    if upstream.fresh_pool() {
                        upstream.start_warming();
                    }
                }
                self.shared.snapshot.store(Arc::new(snapshot));
                metrics.config_reloads.with_label_values(&["ok"]).inc();
                metrics.config_last_reload_success.set(crate::unix_now());
                tracing::info!(
                    added = ?changes.added,
                    removed = ?changes.removed,
                    changed = ?changes.changed,
                    "policy reloaded"
                );
                Ok(changes)
            }
            Err(e) => {
                metrics.config_reloads.with_label_values(&["error"]).inc();
                tracing::error!(
                    problems = e.problems.len(),
                    first = %e.problems.first().map(ToString::to_string).unwrap_or_default(),
                    "policy reload rejected, the previous policy keeps serving: {e}"
                );
                Err(e)
            }
        }
    }
}

/// Parses and validates `text`, then builds its upstreams. Blocking.
fn build(text: &str, path: &Path, registry: &UpstreamRegistry, old: &Policy) -> Loaded {
    let file = path.display().to_string();
    let policy = Arc::new(config::parse(text, &file, &|name| {
        std::env::var(name).ok()
    })?);
    if old.listen != policy.listen || old.admin != policy.admin || old.tls != policy.tls {
        tracing::warn!("`listen`, `admin` and `tls` changes take effect only at restart");
    }
    if old.usage_log != policy.usage_log {
        tracing::warn!("a `usage_log` path change takes effect only at restart");
    }
    let (upstreams, changes) = registry
        .load(&policy)
        .map_err(|e| upstream_problem(&file, &e))?;
    let snapshot = Snapshot::new(policy.clone(), upstreams);
    Ok((policy, snapshot, changes))
}

/// An upstream that could not be built, as a problem of the policy file.
pub fn upstream_problem(file: &str, e: &UpstreamError) -> PolicyError {
    PolicyError {
        problems: vec![Problem {
            file: file.to_owned(),
            line: None,
            path: e.path(),
            message: e.to_string(),
        }],
    }
}

/// Reads a file off the async workers.
pub(crate) async fn read_text(path: PathBuf) -> std::io::Result<String> {
    tokio::task::spawn_blocking(move || std::fs::read_to_string(path))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}
