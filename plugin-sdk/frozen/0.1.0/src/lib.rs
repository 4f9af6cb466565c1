//! # berry-plugin-sdk
//!
//! Write a Berry strategy or auth policy in plain Rust. A plugin crate depends on this
//! crate only, implements one trait, and calls one export macro:
//!
//! ```no_run
//! use berry_plugin_sdk::strategy::{Context, Strategy};
//!
//! struct Cheapest;
//!
//! impl Strategy for Cheapest {
//!     fn new(_config: &str) -> Result<Self, String> { Ok(Cheapest) }
//!
//!     fn select(&self, ctx: &Context) -> Vec<u32> {
//!         // Backends tagged "cheap" first, the rest by weight.
//!         let mut order = ctx.usable();
//!         order.sort_by_key(|&i| !ctx.backend(i).tags.iter().any(|t| t == "cheap"));
//!         order
//!     }
//! }
//!
//! berry_plugin_sdk::export_strategy!(Cheapest);
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --release` and point a
//! `[plugins.<name>]` entry at the `.wasm` file.
//!
//! The host keeps all state (health, latency, counters, scores) and passes it in on
//! every call, so a plugin is a pure function of its inputs: any instance answers the
//! same, and the host can swap versions without losing anything.

// Generated bindings name this crate by its external path, also from inside it.
extern crate self as berry_plugin_sdk;

pub mod auth;
pub mod sha256;
pub mod strategy;

/// The version of the WIT contract (`berry:gateway@…`) this SDK implements, as the
/// bytes stamped into every plugin (see `__stamp_version!`).
#[doc(hidden)]
pub const __VERSION_STAMP: [u8; 5] = *b"0.1.0";

/// The version of the WIT contract (`berry:gateway@…`) this SDK implements.
/// The host refuses plugins built against an incompatible version.
pub const WIT_VERSION: &str = match std::str::from_utf8(&__VERSION_STAMP) {
    Ok(v) => v,
    #[allow(clippy::panic, reason = "evaluated at compile time: a bad stamp fails the build")]
    Err(_) => panic!("the version stamp is not UTF-8"),
};

/// Logging into the gateway's own log, tagged with the plugin's name.
pub mod log {
    use crate::bindings::strategy::berry::gateway::host::{self, Level};

    pub fn debug(message: &str) {
        host::log(Level::Debug, message);
    }
    pub fn info(message: &str) {
        host::log(Level::Info, message);
    }
    pub fn warn(message: &str) {
        host::log(Level::Warn, message);
    }
    pub fn error(message: &str) {
        host::log(Level::Error, message);
    }
}

/// Route panic messages to the gateway log (which also quotes the last one in the
/// error of the call that panicked). Plugins have no stdio, so without this a panic
/// would leave no trace.
pub(crate) fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| log::error(&format!("plugin panicked: {info}"))));
    });
}

/// Wall-clock milliseconds since the Unix epoch, from the host.
pub fn now_ms() -> u64 {
    bindings::strategy::berry::gateway::host::now_ms()
}

#[doc(hidden)]
pub mod bindings;

#[doc(hidden)]
pub mod rt;

#[doc(hidden)]
pub use rt as __rt;

/// Stamp the SDK's WIT version into the plugin's core module as a custom section,
/// so the host can refuse an incompatible plugin before compiling it.
#[doc(hidden)]
#[macro_export]
macro_rules! __stamp_version {
    () => {
        #[unsafe(link_section = "berry:sdk-version")]
        #[used]
        #[doc(hidden)]
        static __BERRY_SDK_VERSION: [u8; 5] = $crate::__VERSION_STAMP;
    };
}
