//! File watching: the config file and every `[plugins.X]` file are polled; a change
//! reloads through the same prepare → swap path as `SIGHUP` and the admin API.
//!
//! Polling (size + modification time, every 200 ms) rather than inotify: it works the
//! same on every filesystem, including bind mounts and network volumes, and keeps a
//! change visible well within a second.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::time::{Duration, SystemTime};

use super::{Gateway, lock};

const POLL: Duration = Duration::from_millis(200);

type Stamp = Option<(SystemTime, u64)>;

pub fn spawn(gateway: Weak<Gateway>) {
    tokio::spawn(async move {
        let mut seen: HashMap<PathBuf, Stamp> = HashMap::new();
        loop {
            tokio::time::sleep(POLL).await;
            let Some(gateway) = gateway.upgrade() else { return };
            let config = gateway.snapshot().config.clone();
            let config_path = lock(&gateway.config_path).clone();
            let config_changed = config_path.as_deref().is_some_and(|p| changed(&mut seen, p));
            let plugins_changed: Vec<String> = config
                .plugins
                .values()
                .filter(|spec| changed(&mut seen, &spec.path))
                .map(|spec| spec.name.clone())
                .collect();
            if config_changed {
                tracing::info!("config file changed: reloading");
                if let Err(e) = gateway.reload_from_disk().await {
                    tracing::error!("{e}");
                }
            } else if !plugins_changed.is_empty() {
                tracing::info!(plugins = ?plugins_changed, "plugin file changed: swapping");
                // A new file is newer intent than an earlier upload of the same plugin.
                lock(&gateway.uploaded).retain(|name, _| !plugins_changed.contains(name));
                if let Err(e) = gateway.reload((*config).clone()).await {
                    tracing::error!(plugins = ?plugins_changed, "the changed plugin was rejected: {e}");
                }
            }
        }
    });
}

/// Whether `path` changed since the last look (the first look records it).
fn changed(seen: &mut HashMap<PathBuf, Stamp>, path: &Path) -> bool {
    let stamp: Stamp = std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
    match seen.insert(path.to_path_buf(), stamp) {
        None => false,
        Some(previous) => previous != stamp && stamp.is_some(),
    }
}
