//! The SDK version stamp: `berry-plugin-sdk` puts the WIT version it implements in a
//! `berry:sdk-version` custom section of the plugin. The host reads it *before*
//! compiling, so a plugin built for another contract is refused with a message that
//! says what to rebuild, instead of a link error.

use wasmparser::{Parser, Payload};

use super::PluginError;

/// The WIT contract this gateway speaks.
pub const WIT_VERSION: &str = "0.2.0";
/// The contract versions it loads: its own, and the frozen ones it adapts.
pub const LOADED_VERSIONS: &[&str] = &[WIT_VERSION, "0.1.0"];
const SECTION: &str = "berry:sdk-version";

/// Written by `export_strategy!`: "0" when the strategy's `observe` may be skipped.
const OBSERVES_SECTION: &str = "berry:observes";

/// The stamps found in a component (usually one; none for a plugin not built
/// with the SDK).
pub fn stamps(bytes: &[u8]) -> Result<Vec<String>, String> {
    Ok(sections(bytes, SECTION)?.iter().flat_map(|s| versions_in(s)).collect())
}

/// The versions in one stamp section. The linker joins sections of the same name
/// end to end, so a plugin linking two stamps carries "0.9.00.1.0": split it back
/// into versions (semver numbers have no leading zeros, which keeps it unambiguous
/// in practice; where it is not, the split with the most versions wins).
fn versions_in(text: &str) -> Vec<String> {
    fn number(s: &str) -> Vec<usize> {
        // The lengths a number may have at the start of `s`.
        match s.as_bytes().first() {
            Some(b'0') => vec![1],
            Some(b'1'..=b'9') => (1..=s.bytes().take_while(u8::is_ascii_digit).count()).collect(),
            _ => Vec::new(),
        }
    }
    fn split(s: &str) -> Option<Vec<String>> {
        if s.is_empty() {
            return Some(Vec::new());
        }
        for major in number(s) {
            let Some(rest) = s[major..].strip_prefix('.') else { continue };
            for minor in number(rest) {
                let Some(rest2) = rest[minor..].strip_prefix('.') else { continue };
                for patch in number(rest2) {
                    if let Some(mut tail) = split(&rest2[patch..]) {
                        let len = major + 1 + minor + 1 + patch;
                        tail.insert(0, s[..len].to_string());
                        return Some(tail);
                    }
                }
            }
        }
        None
    }
    split(text).unwrap_or_else(|| vec![text.to_string()])
}

/// The contents of every custom section `name` in a component.
fn sections(bytes: &[u8], name: &str) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| format!("not a WebAssembly component: {e}"))? {
            Payload::CustomSection(section) if section.name() == name => {
                found.push(String::from_utf8_lossy(section.data()).trim().to_string());
            }
            _ => {}
        }
    }
    Ok(found)
}

/// Semver-compatible with a version the gateway loads: the same major version;
/// while at 0.x, the same minor too (semver for 0.x).
fn compatible(version: &str) -> bool {
    let parts = |v: &str| -> Option<(u64, u64)> {
        let mut it = v.split('.');
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    };
    LOADED_VERSIONS.iter().any(|loaded| match (parts(version), parts(loaded)) {
        (Some((0, minor)), Some((0, ours))) => minor == ours,
        (Some((major, _)), Some((ours, _))) => major == ours,
        _ => false,
    })
}

/// What a plugin's custom sections say about it, read before compiling.
pub struct Stamps {
    /// The WIT version it was built for, if stamped.
    pub sdk_version: Option<String>,
    /// Whether its `observe` must be called (`berry:observes`; absent: it must).
    pub observes: bool,
}

/// Check a plugin's stamps.
pub fn check(plugin: &str, bytes: &[u8]) -> Result<Stamps, PluginError> {
    let err = |message: String| PluginError::Load { plugin: plugin.to_string(), message };
    let found = stamps(bytes).map_err(err)?;
    if let Some(bad) = found.iter().find(|v| !compatible(v)) {
        return Err(err(format!(
            "was built with berry-plugin-sdk for WIT berry:gateway@{bad}, but this gateway loads berry:gateway@{}: \
             rebuild the plugin against berry-plugin-sdk {WIT_VERSION}",
            LOADED_VERSIONS.join(" and @")
        )));
    }
    let observes = sections(bytes, OBSERVES_SECTION).map_err(err)?.iter().all(|v| v != "0");
    Ok(Stamps { sdk_version: found.into_iter().next(), observes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_compatible_within_a_0_minor() {
        assert!(compatible("0.2.0"));
        assert!(compatible("0.2.7"));
        assert!(compatible("0.1.0"), "the frozen 0.1 contract still loads");
        assert!(!compatible("0.3.0"));
        assert!(!compatible("1.1.0"));
        assert!(!compatible("garbage"));
    }

    #[test]
    fn joined_stamps_are_split_back_into_versions() {
        assert_eq!(versions_in("0.1.0"), ["0.1.0"]);
        assert_eq!(versions_in("0.9.00.1.0"), ["0.9.0", "0.1.0"]);
        assert_eq!(versions_in("1.10.20.1.0"), ["1.10.2", "0.1.0"]);
        assert_eq!(versions_in("garbage"), ["garbage"]);
    }

    #[test]
    fn stock_strategies_say_whether_they_observe() {
        let observes = |name: &str| {
            let bytes = super::super::stock::bytes(name).unwrap_or_default();
            check(name, bytes).map(|s| s.observes).ok()
        };
        assert_eq!(observes("smart_ai"), Some(true), "smart_ai learns from outcomes");
        for name in ["weighted_random", "round_robin", "least_latency", "failover", "random"] {
            assert_eq!(observes(name), Some(false), "{name}");
        }
        assert_eq!(observes("token_auth"), Some(true), "no section: observe is called");
    }

    #[test]
    fn the_stock_plugins_carry_the_stamp() {
        for (name, bytes) in super::super::stock::STOCK_PLUGINS {
            assert_eq!(stamps(bytes), Ok(vec![WIT_VERSION.to_string()]), "{name}");
        }
    }
}
