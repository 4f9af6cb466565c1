//! The on-disk cache of compiled plugins, so a restart does not recompile.
//!
//! Entries are keyed by the SHA-256 of the component and a hash of the engine's
//! compilation settings (wasmtime version, target, tunables): any change to either
//! misses the cache. Files are written to a temporary name and renamed into place, so
//! a crash never leaves a half-written entry; the folder is private to its owner.
//!
//! The folder is bounded: every store keeps the most recently used entries up to
//! [`MAX_ENTRIES`] and [`MAX_BYTES`] and removes the rest (a gateway whose plugins
//! are hot-swapped all day would otherwise fill its disk with old versions); a load
//! marks its entry used. Leftover temporary files of a crashed write are removed too.
//!
//! A cached artifact is native code the gateway will run. It is loaded only from a
//! folder and file owned by the gateway's own user that nobody else can write to;
//! anything else disables the cache (with a warning) rather than trusting it.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use wasmtime::Engine;
use wasmtime::component::Component;

static CACHE_DIR: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Most entries kept (several gateway versions' worth of every stock plugin, plus
/// the recent versions of custom ones).
const MAX_ENTRIES: usize = 64;
/// Most bytes kept in entries.
const MAX_BYTES: u64 = 256 << 20;
/// Age after which a temporary file is a crashed write's leftover.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// Enable the disk cache in `dir` (call once, before the first plugin loads).
/// Without it, compiled plugins are cached in memory only.
pub fn set_cache_dir(dir: Option<PathBuf>) {
    let _ = CACHE_DIR.set(dir);
}

fn dir() -> Option<&'static Path> {
    CACHE_DIR.get_or_init(|| None).as_deref()
}

fn entry(engine: &Engine, hash: &str) -> Option<PathBuf> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    Some(dir()?.join(format!("{hash}-{:016x}.cwasm", hasher.finish())))
}

/// A compiled component from the cache, if present and loadable.
pub fn load(engine: &Engine, hash: &str) -> Option<Component> {
    let path = entry(engine, hash)?;
    if !path.exists() || !trusted(dir()?) || !trusted(&path) {
        return None;
    }
    // SAFETY: `deserialize_file` trusts the file to be a wasmtime artifact made by
    // this engine configuration. Only this module writes into the cache folder,
    // which it creates private to the gateway's user (0700), atomically, under a
    // name that binds the source hash and the engine configuration; wasmtime itself
    // rejects artifacts from another version or configuration.
    #[allow(unsafe_code)]
    let loaded = unsafe { Component::deserialize_file(engine, &path) };
    match loaded {
        Ok(component) => {
            // Used: the last entry pruning would take.
            let _ = std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(SystemTime::now()));
            Some(component)
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), "ignoring an unusable cached plugin: {e:#}");
            let _ = std::fs::remove_file(&path);
            None
        }
    }
}

/// Store a compiled component; failures only cost a recompile next time.
pub fn store(engine: &Engine, hash: &str, component: &Component) {
    let (Some(dir), Some(path)) = (dir(), entry(engine, hash)) else { return };
    let result = (|| -> std::io::Result<()> {
        create_private_dir(dir)?;
        if !trusted(dir) {
            return Ok(());
        }
        let bytes = component.serialize().map_err(std::io::Error::other)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            // 0600 whatever the umask: `trusted` refuses entries others could write.
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            file.write_all(&bytes)?;
        }
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = result {
        tracing::warn!(dir = %dir.display(), "cannot write the plugin cache: {e}");
        return;
    }
    let removed = prune(dir, &path, MAX_ENTRIES, MAX_BYTES);
    if removed > 0 {
        tracing::info!(dir = %dir.display(), removed, "removed least recently used compiled plugins from the cache");
    }
}

/// Keep the most recently used entries of `dir` within `max_entries` and
/// `max_bytes` (`keep`, the entry just written, always stays) and remove stale
/// temporary files. Only regular files this module names are touched. Returns how
/// many files were removed.
fn prune(dir: &Path, keep: &Path, max_entries: usize, max_bytes: u64) -> usize {
    let Ok(listing) = std::fs::read_dir(dir) else { return 0 };
    let now = SystemTime::now();
    let mut entries = Vec::new();
    let mut removed = 0;
    for item in listing.flatten() {
        let path = item.path();
        // `DirEntry::metadata` does not follow symlinks: a link is never an entry.
        let Ok(meta) = item.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let modified = meta.modified().unwrap_or(now);
        let name = item.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".cwasm") {
            entries.push((modified, meta.len(), path));
        } else if name.contains(".tmp")
            && now.duration_since(modified).is_ok_and(|age| age > STALE_TMP)
            && std::fs::remove_file(&path).is_ok()
        {
            removed += 1;
        }
    }
    // Newest first; the entry just written leads whatever its clock says.
    entries.sort_by(|a, b| (b.2 == keep).cmp(&(a.2 == keep)).then(b.0.cmp(&a.0)));
    let mut bytes = 0u64;
    for (i, (_, len, path)) in entries.iter().enumerate() {
        bytes += len;
        let over = i >= max_entries || bytes > max_bytes;
        if over && path != keep && std::fs::remove_file(path).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Whether `path` is owned by this process's user and writable by nobody else.
/// Warns (once per path kind) when it is not.
fn trusted(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    // The folder may be reached through a symlink (a mounted volume); an entry may not.
    let meta = if path.is_dir() { std::fs::metadata(path) } else { std::fs::symlink_metadata(path) };
    let Ok(meta) = meta else { return false };
    let ours = meta.uid() == rustix::process::geteuid().as_raw();
    let private = meta.mode() & 0o022 == 0 && !meta.file_type().is_symlink();
    let trusted = ours && private;
    if !trusted && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            path = %path.display(),
            "the plugin cache is not used: it must be owned by this user and writable by nobody else (chmod 700)"
        );
    }
    trusted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, len: usize, age_s: u64) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, vec![0u8; len]).expect("write");
        let at = SystemTime::now() - Duration::from_secs(age_s);
        std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(at)).expect("set mtime");
        path
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn pruning_keeps_the_most_recently_used_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        write(d, "old-1.cwasm", 10, 300);
        write(d, "old-2.cwasm", 10, 200);
        write(d, "recent.cwasm", 10, 100);
        // Just written, though its clock reads older than the rest.
        let new = write(d, "new.cwasm", 10, 1000);
        write(d, "crashed.cwasm.tmp42", 10, 2 * 3600);
        write(d, "writing.cwasm.tmp43", 10, 0);
        write(d, "notes.txt", 10, 5000);

        assert_eq!(prune(d, &new, 2, u64::MAX), 3);
        assert_eq!(names(d), ["new.cwasm", "notes.txt", "recent.cwasm", "writing.cwasm.tmp43"]);
    }

    #[test]
    fn pruning_keeps_the_folder_within_its_byte_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        write(d, "a.cwasm", 100, 30);
        write(d, "b.cwasm", 100, 20);
        let new = write(d, "c.cwasm", 100, 10);
        assert_eq!(prune(d, &new, 64, 250), 1);
        assert_eq!(names(d), ["b.cwasm", "c.cwasm"]);
        // An entry larger than the whole budget still stays when it is the new one.
        let huge = write(d, "huge.cwasm", 1000, 0);
        assert_eq!(prune(d, &huge, 64, 250), 2);
        assert_eq!(names(d), ["huge.cwasm"]);
    }
}
