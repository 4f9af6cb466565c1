//! File watching: the config file and every `[plugins.X]` file; a change reloads
//! through the same prepare → swap path as `SIGHUP` and the admin API.
//!
//! A file is acted on only once a write has *completed*: the writer closed it
//! (inotify's close-after-write), or a finished file was renamed or linked into
//! place (atomic saves, cargo's hard links, Kubernetes' symlink swaps). A writer
//! that pauses half-way through a file is never read, however long it pauses —
//! a quiet period would load whatever prefix was on disk when the pause began.
//!
//! Each candidate is read and hashed: a save that changed nothing (or a `touch`)
//! reloads nothing. Where the file system sends no events (some network volumes),
//! reload with `SIGHUP` or `POST /admin/reload`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};

use super::{Gateway, lock};

/// The events of one save arrive together (close, rename, attribute changes):
/// those within this window after the first are handled as one.
const GATHER: Duration = Duration::from_millis(50);

/// What is watched, and the content last acted on.
#[derive(Default)]
struct Watched {
    /// Absolute path → the SHA-256 of the content last applied (or rejected).
    files: HashMap<PathBuf, Option<[u8; 32]>>,
    /// The folders watched (a file is watched through its folder, so that a new
    /// file renamed over it is seen).
    dirs: HashSet<PathBuf>,
}

pub fn spawn(gateway: Weak<Gateway>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        // Only the kinds that can finish a write pass: a folder with a busy log file
        // in it sends a modification event for every write.
        if let Ok(event) = event
            && matches!(
                event.kind,
                EventKind::Access(AccessKind::Close(AccessMode::Write))
                    | EventKind::Modify(ModifyKind::Name(_))
                    | EventKind::Create(_)
            )
        {
            let _ = tx.send(event);
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("cannot watch the config and plugin files ({e}): reload with SIGHUP or POST /admin/reload");
            return;
        }
    };
    tokio::spawn(async move {
        let mut watched = Watched::default();
        {
            let Some(gateway) = gateway.upgrade() else { return };
            watched.sync(&mut watcher, &gateway);
        }
        while let Some(event) = rx.recv().await {
            let mut candidates = HashSet::new();
            watched.candidates(&event, &mut candidates);
            let until = tokio::time::Instant::now() + GATHER;
            while let Ok(Some(event)) = tokio::time::timeout_at(until, rx.recv()).await {
                watched.candidates(&event, &mut candidates);
            }
            if candidates.is_empty() {
                continue;
            }
            let Some(gateway) = gateway.upgrade() else { return };
            let changed: Vec<PathBuf> = candidates.into_iter().filter(|p| watched.changed(p)).collect();
            if !changed.is_empty() {
                apply(&gateway, &changed).await;
            }
            watched.sync(&mut watcher, &gateway);
        }
    });
}

/// Reload for the files whose content changed: the config file (which brings its
/// plugin files along), else the plugins whose files changed.
async fn apply(gateway: &Arc<Gateway>, changed: &[PathBuf]) {
    let config_path = lock(&gateway.config_path).clone().and_then(|p| std::path::absolute(p).ok());
    if config_path.as_ref().is_some_and(|p| changed.contains(p)) {
        tracing::info!("config file changed: reloading");
        if let Err(e) = gateway.reload_from_disk().await {
            tracing::error!("{e}");
        }
        return;
    }
    let config = gateway.snapshot().config.clone();
    let plugins: Vec<String> = config
        .plugins
        .values()
        .filter(|spec| {
            spec.path.as_ref().and_then(|p| std::path::absolute(p).ok()).is_some_and(|p| changed.contains(&p))
        })
        .map(|spec| spec.name.clone())
        .collect();
    if plugins.is_empty() {
        return;
    }
    tracing::info!(plugins = ?plugins, "plugin file changed: swapping");
    // A rebuilt file is newer intent than an earlier upload of the same plugin
    // (see `Gateway::swap_plugin`): it takes the upload's place.
    let replaced: Vec<String> = {
        let mut uploaded = lock(&gateway.uploaded);
        plugins.iter().filter(|name| uploaded.remove(*name).is_some()).cloned().collect()
    };
    if !replaced.is_empty() {
        tracing::warn!(plugins = ?replaced, "the changed file replaces the version uploaded through the admin API");
    }
    if let Err(e) = gateway.reload((*config).clone()).await {
        tracing::error!(plugins = ?plugins, "the changed plugin was rejected: {e}");
    }
}

impl Watched {
    /// Watch the files the running configuration names, and forget the others.
    fn sync(&mut self, watcher: &mut impl Watcher, gateway: &Gateway) {
        let config = gateway.snapshot().config.clone();
        let config_path = lock(&gateway.config_path).clone();
        let wanted: Vec<PathBuf> = config_path
            .into_iter()
            .chain(config.plugins.values().filter_map(|spec| spec.path.clone()))
            .filter_map(|p| std::path::absolute(p).ok())
            .collect();
        self.files.retain(|path, _| wanted.contains(path));
        for path in &wanted {
            if !self.files.contains_key(path) {
                self.files.insert(path.clone(), digest(path));
            }
        }
        let dirs: HashSet<PathBuf> = wanted.iter().filter_map(|p| p.parent().map(Path::to_path_buf)).collect();
        for gone in self.dirs.difference(&dirs) {
            let _ = watcher.unwatch(gone);
        }
        for dir in dirs.difference(&self.dirs) {
            if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), "cannot watch this folder ({e}): reload with SIGHUP");
            }
        }
        self.dirs = dirs;
    }

    /// The watched files `event` may have finished changing.
    fn candidates(&self, event: &Event, out: &mut HashSet<PathBuf>) {
        let target = match event.kind {
            // Written and closed: the writer is done with it.
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => event.paths.first(),
            // A finished file renamed into place.
            EventKind::Modify(ModifyKind::Name(RenameMode::To)) => event.paths.first(),
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => event.paths.get(1),
            // A hard link to a finished file (cargo's way of putting an artifact in
            // place). A file created empty and then written is caught by its close.
            EventKind::Create(_) => event.paths.first().filter(|p| hard_linked(p)),
            _ => None,
        };
        let Some(target) = target else { return };
        if self.files.contains_key(target) {
            out.insert(target.clone());
            return;
        }
        // Another entry renamed into a watched folder: a watched file that is a
        // symbolic link may now point elsewhere (Kubernetes swaps `..data`).
        if matches!(event.kind, EventKind::Modify(ModifyKind::Name(_))) {
            let dir = target.parent();
            for path in self.files.keys().filter(|p| p.parent() == dir && is_symlink(p)) {
                out.insert(path.clone());
            }
        }
    }

    /// Whether `path` now holds other content than was last acted on (recorded).
    fn changed(&mut self, path: &Path) -> bool {
        let now = digest(path);
        if now.is_none() {
            // Gone (being replaced): wait for its successor.
            return false;
        }
        match self.files.get_mut(path) {
            Some(seen) if *seen != now => {
                *seen = now;
                true
            }
            _ => false,
        }
    }
}

fn digest(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|bytes| Sha256::digest(&bytes).into())
}

fn hard_linked(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).is_ok_and(|m| m.nlink() > 1)
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}
