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

use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// Events closer together than this are one change.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// The running watch: dropping it stops notify's and the debouncer's threads.
pub type PolicyWatcher = Debouncer<notify::RecommendedWatcher, RecommendedCache>;

/// The content hash of a policy file, to tell a real change from a touch.
pub fn content_hash(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Watches `path`'s directory; sends a tick on the returned channel after
/// each debounced burst of changes (`notify-debouncer-full`, on its own
/// thread). A tick is dropped when one is already waiting: the reload it
/// causes reads the file as it is then.
pub fn watch(path: &Path) -> notify::Result<(PolicyWatcher, mpsc::Receiver<()>)> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (tx, rx) = mpsc::channel(1);
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
        // Called on the debouncer's thread: hand over and return at once.
        let changed = result.is_ok_and(|events| events.iter().any(|e| !e.kind.is_access()));
        if changed {
            let _ = tx.try_send(());
        }
    })?;
    debouncer.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok((debouncer, rx))
}
