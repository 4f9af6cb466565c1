//! The plugin runtime: the one place where WebAssembly components are compiled,
//! sandboxed and called.
//!
//! - `engine.rs`: the process-wide wasmtime engine (trimmed features, pooling
//!   allocator, epoch ticker) and its cache of compiled components.
//! - `sandbox.rs`: the single builder of plugin stores; every limit is applied there.
//! - `pool.rs`: warm, configured instances reused across calls; a trapped one is dropped.
//! - `strategy.rs` / `auth.rs`: typed handles for the two plugin kinds.
//! - `v0_1.rs`: the adapter that serves plugins built for the frozen contract 0.1.
//! - `stock.rs`: the stock plugins embedded in the binary by `build.rs`.

pub mod auth;
mod bindings;
mod cache;
mod engine;
mod loaded;
pub mod pool;
mod sandbox;
pub mod stock;
pub mod strategy;
pub mod trial;
mod v0_1;
pub mod version;
mod wasi;

use std::time::Duration;

pub use auth::AuthPlugin;
pub use cache::set_cache_dir;
pub use engine::{CompiledPlugin, Versions, cached_components, compile, kind_of, sha256_hex};
pub use pool::CallStats;
pub use strategy::StrategyPlugin;

/// Names of the stock strategies, usable as `strategy = "..."` without a `[plugins]` entry.
pub const STOCK_STRATEGIES: &[&str] =
    &["weighted_random", "round_robin", "least_latency", "failover", "random", "smart_ai"];
/// Names of the stock auth policies.
pub const STOCK_AUTH: &[&str] = &["token_auth"];

/// Sandbox limits for one plugin; every call runs under all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wasm instructions (roughly) one call may execute before it traps.
    pub fuel: u64,
    /// Linear memory cap of one instance.
    pub memory_bytes: usize,
    /// Wall-clock time one call may take before it is interrupted.
    pub deadline: Duration,
    /// Consecutive failed calls after which the plugin is quarantined: skipped (the
    /// host's fallback answers) for `quarantine`, then given one call to prove itself.
    pub quarantine_after: u32,
    pub quarantine: Duration,
}

impl Limits {
    /// Upper bound for `memory_mb`: the pooling allocator reserves slots this large.
    pub const MAX_MEMORY_BYTES: usize = 256 << 20;

    /// The limits of an instance configured with `input_bytes` of routes or users:
    /// the plugin keeps what it derives from them for its whole life, so its memory
    /// cap grows with them (room for four copies), up to [`Self::MAX_MEMORY_BYTES`].
    pub fn sized_for(self, input_bytes: usize) -> Limits {
        let memory_bytes = self.memory_bytes.saturating_add(input_bytes.saturating_mul(4)).min(Self::MAX_MEMORY_BYTES);
        Limits { memory_bytes: memory_bytes.max(self.memory_bytes), ..self }
    }

    /// The budget of one `configure` call over `input_bytes` of routes or users: the
    /// per-call fuel and deadline, plus what reading the input may take (hashing a
    /// token, building a table: a few hundred instructions a byte, given 1,000; the
    /// deadline 2 ms per KiB). A config of 50,000 users or 20,000 models loads;
    /// request-time calls keep the per-call budget.
    pub fn configure_budget(&self, input_bytes: usize) -> (u64, Duration) {
        let fuel = self.fuel.saturating_add((input_bytes as u64).saturating_mul(1_000));
        let deadline = self.deadline + Duration::from_micros(2 * input_bytes as u64);
        (fuel, deadline)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // A stock strategy ranks 64 backends in well under 100k instructions; 10M
            // leaves room for heavier custom logic and still stops a runaway loop in
            // a few milliseconds.
            fuel: 10_000_000,
            // Stock plugins use about 1 MiB; 16 MiB lets a plugin keep real tables.
            memory_bytes: 16 << 20,
            // Calls take microseconds. The deadline is a guard against loops that
            // burn no fuel-visible work (host calls); tens of ms, as the epoch counts wall time.
            deadline: Duration::from_millis(50),
            // A healthy plugin never fails; ten in a row means every request pays a
            // failed call (up to the deadline) for nothing.
            quarantine_after: 10,
            quarantine: Duration::from_secs(30),
        }
    }
}

/// Why a plugin call failed. The caller answers through its fallback either way.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {plugin} trapped: {message}")]
    Trap { plugin: String, message: String },
    /// The call trapped on this request's input; the plugin answers neutral input.
    #[error("plugin {plugin} trapped on this request's input: {message}")]
    Input { plugin: String, message: String },
    #[error("plugin {plugin} failed while loading: {message}")]
    Instantiate { plugin: String, message: String },
    #[error("plugin {plugin} rejected its configuration: {message}")]
    Configure { plugin: String, message: String },
    #[error("plugin {plugin}: {message}")]
    Load { plugin: String, message: String },
    #[error("plugin {plugin} is quarantined after repeated failures")]
    Quarantined { plugin: String },
    /// The version failed its trial (see `trial`): refused before serving.
    #[error("plugin {plugin} {message}")]
    Trial { plugin: String, message: String },
}

/// Keep a trial's verdict: refuse a version that failed, log what it warned about
/// (and show it in `/admin/plugins`).
fn tried(compiled: &CompiledPlugin, report: &trial::Report) -> Result<(), PluginError> {
    let mut notes = vec![report.summary()];
    for case in report.warnings() {
        if let trial::Verdict::Warn(why) = &case.verdict {
            notes.push(format!("{}: {why}", case.situation));
        }
    }
    for note in notes.iter().skip(1).take(3) {
        tracing::warn!(plugin = &*compiled.name, "trial: {note}");
    }
    if notes.len() > 4 {
        tracing::warn!(plugin = &*compiled.name, "trial: and {} more warnings", notes.len() - 4);
    }
    *compiled.stats.trial.lock().unwrap_or_else(|p| p.into_inner()) = notes;
    match report.refusal() {
        Some(message) => Err(PluginError::Trial { plugin: compiled.name.to_string(), message }),
        None => Ok(()),
    }
}
