//! Hot reload: watch the plugins folder and rescan it when something settles.

use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::PluginRegistry;

/// Quiet time after the last file event before a rescan, so a plugin copied in
/// several writes is read once it is whole.
pub const SETTLE: Duration = Duration::from_millis(300);

/// Keeps the watcher alive; dropping it stops hot reload.
pub struct ReloadWatcher {
    _watcher: notify::RecommendedWatcher,
}

pub fn watch(registry: Arc<PluginRegistry>) -> notify::Result<ReloadWatcher> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !event.kind.is_access()
        {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(registry.root(), RecursiveMode::Recursive)?;
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: wait until no event has arrived for SETTLE.
            loop {
                match tokio::time::timeout(SETTLE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let report = registry.reload().await;
            if !report.loaded.is_empty() || !report.removed.is_empty() || !report.failed.is_empty()
            {
                tracing::info!(loaded = ?report.loaded, removed = ?report.removed, failed = report.failed.len(), "plugins reloaded");
            }
        }
    });
    Ok(ReloadWatcher { _watcher: watcher })
}
