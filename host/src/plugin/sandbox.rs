//! The one door to the sandbox: every plugin `Store` is created by [`new_store`],
//! so no plugin ever runs without its memory cap, fuel and deadline.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::{Store, StoreLimits, StoreLimitsBuilder};

use super::Limits;
use super::bindings::strategy::berry::gateway::{host, types};
use super::bindings::v0_1::strategy::berry::gateway as v0_1;
use super::engine::{EPOCH_TICK, PluginEngine};

/// What a plugin's store holds: its name (for its log lines), its limits, its WASI
/// context (clocks, deterministic randomness, stdout and stderr into the log: see
/// `wasi.rs`) and the last panic it reported (for error messages). No other
/// capability (see `engine::linker_for`).
pub struct HostState {
    plugin: Arc<str>,
    limits: StoreLimits,
    pub(super) wasi: wasmtime_wasi::WasiCtx,
    pub(super) table: wasmtime::component::ResourceTable,
    /// The message of the last panic the plugin logged (the SDK's panic hook).
    pub last_panic: Option<String>,
    /// The budget of the call under way, and the memory cap: named in the error
    /// when the plugin runs out of one.
    pub budget: Budget,
    /// The tags of the caller whose request `select` ranks (`host.caller-tags`),
    /// meaningful only while `in_select`: kept between calls so that copying the
    /// next caller's reuses the buffers.
    caller_tags: Vec<String>,
    in_select: bool,
}

/// What one call may use, as the error message of a plugin that ran out names it.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub fuel: u64,
    pub deadline: std::time::Duration,
    pub memory_bytes: usize,
}

impl HostState {
    /// The plugin's name, for messages.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// The tags of the caller whose request is being ranked (none outside `select`).
    pub fn caller_tags(&self) -> &[String] {
        if self.in_select { &self.caller_tags } else { &[] }
    }

    /// Run `call` with `tags` as the caller's (what `host.caller-tags` answers).
    pub fn with_caller<R>(
        store: &mut Store<HostState>,
        tags: &[String],
        call: impl FnOnce(&mut Store<HostState>) -> R,
    ) -> R {
        let state = store.data_mut();
        copy_reusing(&mut state.caller_tags, tags);
        state.in_select = true;
        let result = call(store);
        store.data_mut().in_select = false;
        result
    }
}

/// `Vec::clone_from` for a slice: reuses the vector's strings and their buffers.
fn copy_reusing(to: &mut Vec<String>, from: &[String]) {
    to.truncate(from.len());
    let kept = to.len();
    for (to, from) in to.iter_mut().zip(from) {
        to.clone_from(from);
    }
    to.extend(from[kept..].iter().cloned());
}

impl wasmtime_wasi::WasiView for HostState {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        wasmtime_wasi::WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Create a store for `plugin` with its limits installed; `output` rate-limits the
/// lines its stdout and stderr write to the log (shared by its instances).
pub fn new_store(
    pe: &PluginEngine,
    plugin: Arc<str>,
    limits: &Limits,
    output: &Arc<super::wasi::LineBudget>,
) -> Store<HostState> {
    let state = HostState {
        wasi: super::wasi::context(&plugin, output),
        table: wasmtime::component::ResourceTable::new(),
        plugin,
        limits: StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            // One component is a few core instances and tables; nothing more is needed.
            .instances(16)
            .tables(16)
            .memories(4)
            .trap_on_grow_failure(true)
            .build(),
        last_panic: None,
        budget: Budget { fuel: limits.fuel, deadline: limits.deadline, memory_bytes: limits.memory_bytes },
        caller_tags: Vec::new(),
        in_select: false,
    };
    let mut store = Store::new(&pe.engine, state);
    store.limiter(|s| &mut s.limits);
    arm(&mut store, limits);
    store
}

/// Reset the per-call budget: fuel and the wall-clock deadline. Called before every
/// call into the plugin.
pub fn arm(store: &mut Store<HostState>, limits: &Limits) {
    arm_with(store, limits.fuel, limits.deadline);
}

/// [`arm`] with an explicit budget (`configure` gets one sized to its input).
pub fn arm_with(store: &mut Store<HostState>, fuel: u64, deadline: std::time::Duration) {
    let state = store.data_mut();
    state.last_panic = None;
    state.budget.fuel = fuel;
    state.budget.deadline = deadline;
    let ticks = deadline.as_millis().div_ceil(EPOCH_TICK.as_millis()).max(1) as u64;
    // +1: the current tick may be about to end.
    store.set_epoch_deadline(ticks + 1);
    // `set_fuel` fails only when fuel is disabled in the engine, which it never is.
    let _ = store.set_fuel(fuel);
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: host::Level, message: String) {
        // Bounded: a plugin cannot flood the log with megabyte lines, nor write
        // characters that change how the log reads.
        let mut message: String = message.chars().take(2048).collect();
        if level == host::Level::Error && message.starts_with("plugin panicked") {
            // "panicked at src/lib.rs:9:5:\n<message>": one line, kept for the error.
            message = message.replace('\n', " ");
            self.last_panic = Some(crate::telemetry::clean::escape(&message).into_owned());
        }
        let message = crate::telemetry::clean::escape(&message).into_owned();
        let plugin = &*self.plugin;
        match level {
            host::Level::Trace => tracing::trace!(plugin, "{message}"),
            host::Level::Debug => tracing::debug!(plugin, "{message}"),
            host::Level::Info => tracing::info!(plugin, "{message}"),
            host::Level::Warn => tracing::warn!(plugin, "{message}"),
            host::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn now_ms(&mut self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }

    fn caller_tags(&mut self) -> Vec<String> {
        HostState::caller_tags(self).to_vec()
    }
}

// The frozen contract 0.1.0 imports the same services (without `caller-tags`).
impl v0_1::types::Host for HostState {}

impl v0_1::host::Host for HostState {
    fn log(&mut self, level: v0_1::host::Level, message: String) {
        use v0_1::host::Level as Old;
        let level = match level {
            Old::Trace => host::Level::Trace,
            Old::Debug => host::Level::Debug,
            Old::Info => host::Level::Info,
            Old::Warn => host::Level::Warn,
            Old::Error => host::Level::Error,
        };
        host::Host::log(self, level, message);
    }

    fn now_ms(&mut self) -> u64 {
        host::Host::now_ms(self)
    }
}
