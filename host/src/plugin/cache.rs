//! The on-disk cache of compiled plugins, so a restart does not recompile.
//!
//! Entries are keyed by the SHA-256 of the component and a hash of the engine's
//! compilation settings (wasmtime version, target, tunables): any change to either
//! misses the cache. Files are written to a temporary name and renamed into place, so
//! a crash never leaves a half-written entry; the folder is private to its owner.
//!
//! A cached artifact is native code the gateway will run. It is loaded only from a
//! folder and file owned by the gateway's own user that nobody else can write to;
//! anything else disables the cache (with a warning) rather than trusting it.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use wasmtime::Engine;
use wasmtime::component::Component;

static CACHE_DIR: OnceLock<Option<PathBuf>> = OnceLock::new();

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
        Ok(component) => Some(component),
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
    }
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
