//! Optional persistence: the store is written to `<data-dir>/store.json`
//! (atomically, debounced) and loaded at start, so that a restart behaves
//! like an apiserver restart over etcd.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;

use crate::shared::Shared;
use crate::store::Snapshot;

/// The snapshot file name inside the data dir.
pub const SNAPSHOT_FILE: &str = "store.json";

/// How long writes are gathered before a snapshot is written.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Loads the snapshot of `dir`, if one exists.
pub fn load(dir: &Path) -> Result<Option<Snapshot>> {
    let path = dir.join(SNAPSHOT_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let snap =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    Ok(Some(snap))
}

/// Writes the current store to `dir` atomically.
pub fn write_now(shared: &Shared, dir: &Path) -> Result<()> {
    let snap = shared.read(|st| st.store.snapshot());
    let bytes = serde_json::to_vec(&snap).context("encoding the store snapshot")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{SNAPSHOT_FILE}.tmp"));
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    let dest: PathBuf = dir.join(SNAPSHOT_FILE);
    fs::rename(&tmp, &dest).with_context(|| format!("renaming to {}", dest.display()))
}

/// Writes a snapshot shortly after each burst of changes, and once more when stopping.
pub async fn run(shared: Arc<Shared>, dir: PathBuf, mut stop: watch::Receiver<bool>) {
    let mut changed = shared.subscribe();
    loop {
        tokio::select! {
            r = changed.changed() => if r.is_err() { break },
            _ = stop.changed() => break,
        }
        tokio::time::sleep(DEBOUNCE).await;
        changed.borrow_and_update();
        if let Err(e) = write_now(&shared, &dir) {
            tracing::error!(error = %format!("{e:#}"), "cannot persist the store");
        }
    }
    if let Err(e) = write_now(&shared, &dir) {
        tracing::error!(error = %format!("{e:#}"), "cannot persist the store at shutdown");
    }
}
