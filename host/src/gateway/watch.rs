//! File watching: the config file and every `[plugins.X]` file are polled; a change
//! reloads through the same prepare → swap path as `SIGHUP` and the admin API.
//!
//! Polling (size + modification time, every 200 ms) rather than inotify: it works the
//! same on every filesystem, including bind mounts and network volumes. A change is
//! acted on only once the file has stayed the same for a whole poll, so an editor or
//! `cp` caught half-way through writing is never loaded: the reload happens 200–400 ms
//! after the last write.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::time::{Duration, SystemTime};

use super::{Gateway, lock};

const POLL: Duration = Duration::from_millis(200);

type Stamp = Option<(SystemTime, u64)>;

/// What the watcher knows of one file.
struct Seen {
    /// The stamp the running configuration was loaded from.
    applied: Stamp,
    /// A newer stamp seen on the last poll, waiting to be seen once more unchanged.
    pending: Option<Stamp>,
}

pub fn spawn(gateway: Weak<Gateway>) {
    tokio::spawn(async move {
        let mut seen: HashMap<PathBuf, Seen> = HashMap::new();
        loop {
            tokio::time::sleep(POLL).await;
            let Some(gateway) = gateway.upgrade() else { return };
            let config = gateway.snapshot().config.clone();
            let config_path = lock(&gateway.config_path).clone();
            let config_changed = config_path.as_deref().is_some_and(|p| settled_change(&mut seen, p));
            let plugins_changed: Vec<String> = config
                .plugins
                .values()
                .filter(|spec| settled_change(&mut seen, &spec.path))
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

/// Whether `path` changed since it was last applied and has now stayed unchanged for
/// a whole poll (the first look only records it). A file that disappears is ignored
/// until it comes back.
fn settled_change(seen: &mut HashMap<PathBuf, Seen>, path: &Path) -> bool {
    let stamp: Stamp = std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
    let Some(entry) = seen.get_mut(path) else {
        seen.insert(path.to_path_buf(), Seen { applied: stamp, pending: None });
        return false;
    };
    if stamp.is_none() || stamp == entry.applied {
        entry.pending = None;
        return false;
    }
    if entry.pending == Some(stamp) {
        entry.applied = stamp;
        entry.pending = None;
        return true;
    }
    entry.pending = Some(stamp);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_fires_once_after_it_settles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, "a").expect("write");
        let mut seen = HashMap::new();
        assert!(!settled_change(&mut seen, &path), "first look records");
        assert!(!settled_change(&mut seen, &path), "unchanged");
        std::fs::write(&path, "bb").expect("write");
        assert!(!settled_change(&mut seen, &path), "just changed: wait a poll");
        std::fs::write(&path, "ccc").expect("write");
        assert!(!settled_change(&mut seen, &path), "still being written");
        assert!(settled_change(&mut seen, &path), "settled");
        assert!(!settled_change(&mut seen, &path), "fires once");
    }
}
