//! Reloading the policy when its file changes.
//!
//! The *directory* is watched, not the file: Kubernetes updates a ConfigMap
//! mount by swapping a `..data` symlink, and editors save by writing a new
//! file and renaming it over the old one; a watch on the file itself would
//! follow the old inode and miss both. Events are debounced, the file is read
//! off the async workers, and only content whose hash differs from the last
//! applied one is reloaded, so touching or re-saving the same policy does
//! nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// Events closer together than this are one change.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// The content hash of a policy file, to tell a real change from a touch.
pub fn content_hash(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Watches `path`'s directory; sends a tick on the returned channel after
/// each debounced burst of changes. Dropping the returned watcher stops it.
pub fn watch(path: &Path) -> notify::Result<(notify::RecommendedWatcher, mpsc::Receiver<()>)> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Called on notify's own thread: hand over and return at once.
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = raw_tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while raw_rx.recv().await.is_some() {
            // Swallow the rest of the burst.
            loop {
                match tokio::time::timeout(DEBOUNCE, raw_rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if tx.try_send(()).is_err() && tx.is_closed() {
                return;
            }
        }
    });
    Ok((watcher, rx))
}
