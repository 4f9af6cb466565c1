//! What a plugin author needs, carried by the binary: the SDK crate (sources and
//! the WIT of the contract), written out by `berry plugin sdk`, and the scaffold of
//! a new plugin crate (`berry plugin new`), which gets its own copy of the SDK. With
//! only the `berry` binary, rustup and the `wasm32-wasip2` target, a plugin builds,
//! offline: the SDK has no dependencies.

pub mod scaffold;
pub mod try_plugin;

use std::path::{Path, PathBuf};

include!(concat!(env!("OUT_DIR"), "/sdk_files.rs"));

/// The folder of a plugin crate its SDK copy goes in (`berry plugin new`).
pub const VENDORED_DIR: &str = "berry-plugin-sdk";

/// Write the SDK crate into `dir` (created if missing; must be empty, unless
/// `force`, which replaces the SDK's own files). Returns the files written.
pub fn export(dir: &Path, force: bool) -> Result<Vec<PathBuf>, String> {
    if !force && dir.read_dir().is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(format!("{} is not empty (--force replaces the SDK files in it)", dir.display()));
    }
    if force {
        // Sources of an older SDK that this one no longer has must not linger.
        let _ = std::fs::remove_dir_all(dir.join("src"));
        let _ = std::fs::remove_dir_all(dir.join("wit"));
    }
    let mut written = Vec::new();
    for (name, bytes) in SDK_FILES {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_carries_the_sdk_sources_and_the_contract() {
        let names: Vec<&str> = SDK_FILES.iter().map(|(n, _)| *n).collect();
        for needed in ["Cargo.toml", "src/lib.rs", "src/rt.rs", "src/strategy.rs", "src/auth.rs", "wit/berry.wit"] {
            assert!(names.contains(&needed), "{needed} missing from {names:?}");
        }
        assert!(names.iter().any(|n| n.starts_with("src/bindings/")), "{names:?}");
        let manifest = SDK_FILES.iter().find(|(n, _)| *n == "Cargo.toml").map(|(_, b)| String::from_utf8_lossy(b));
        let manifest = manifest.unwrap_or_default();
        for inherited in ["workspace = true", ".workspace"] {
            assert!(!manifest.contains(inherited), "the exported SDK stands alone:\n{manifest}");
        }
    }

    /// The bindings the SDK ships were generated from the WIT the gateway speaks:
    /// after a change to `wit/`, run `scripts/generate-bindings`.
    #[test]
    fn the_shipped_bindings_match_the_contract() {
        use sha2::{Digest, Sha256};
        let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
        let mut names: Vec<PathBuf> = std::fs::read_dir(&wit)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wit"))
            .collect();
        names.sort();
        let mut hasher = Sha256::new();
        for path in names {
            hasher.update(path.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
            hasher.update(std::fs::read(&path).unwrap_or_default());
        }
        let digest: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        for (name, bytes) in SDK_FILES.iter().filter(|(n, _)| n.starts_with("src/bindings/") && n.ends_with(".rs")) {
            if name.ends_with("mod.rs") {
                continue;
            }
            let head = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).to_string();
            assert!(
                head.contains(&digest),
                "{name} was not generated from the current wit/ (sha256 {digest}): run scripts/generate-bindings\n{head}"
            );
        }
    }
}
