//! The stock plugins, compiled from `plugins/` by `build.rs` and embedded here.

include!(concat!(env!("OUT_DIR"), "/stock_plugins.rs"));

/// The embedded component bytes of a stock plugin.
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    STOCK_PLUGINS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}
