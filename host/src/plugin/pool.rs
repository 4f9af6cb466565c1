//! Warm instances, reused across calls.
//!
//! Instantiating a component costs ~10× a call, so each plugin keeps a small
//! stack of configured instances. A call takes one (or makes one), and gives it
//! back only if the call succeeded: a trapped instance may be in any state and is
//! dropped. Last in, first out: the instance used last is the one whose memory is
//! still in the cache (a queue would rotate through every warm instance, each call
//! touching cold memory). The lock is held for a push or a pop, never for a call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use wasmtime::Store;

use super::sandbox::{HostState, arm};
use super::{Limits, PluginError};

/// Warm instances kept per plugin per config snapshot. More concurrent calls than
/// this instantiate extra instances that are dropped afterwards.
const WARM_INSTANCES: usize = 16;

/// The same call on neutral input, made when a call a request depends on fails
/// (see [`Pool::call`]).
pub type Recheck<'a, B> = &'a dyn Fn(&mut Store<HostState>, &B) -> wasmtime::Result<()>;

pub struct Warm<B> {
    pub store: Store<HostState>,
    pub bindings: B,
}

/// Call counters of one plugin version (name + hash), shared by every snapshot that
/// loads that version, so a config reload does not reset them; plus the plugin's
/// Prometheus series (per name, so they survive swaps).
#[derive(Default)]
pub struct CallStats {
    pub metrics: Option<PluginMetrics>,
    pub calls: AtomicU64,
    pub failures: AtomicU64,
    /// Failures caused by one request's input (the plugin passed its recheck).
    pub input_failures: AtomicU64,
    /// Failures since the last success, not counting input failures.
    pub consecutive_failures: AtomicU32,
    /// While now (ms since the epoch) is before this, the plugin is not called.
    pub quarantined_until_ms: AtomicU64,
    /// Times the plugin was quarantined.
    pub quarantines: AtomicU64,
    /// What the last failed call said (reason, panic, wasm backtrace).
    pub last_error: std::sync::Mutex<Option<String>>,
    /// The lines its instances' stdout and stderr may still write to the log.
    pub output: Arc<super::wasi::LineBudget>,
    /// What its last trial said: the summary, then each warning.
    pub trial: std::sync::Mutex<Vec<String>>,
    /// `select` answers the host had to correct (see `StrategyPlugin::invalid_answer`).
    pub invalid_answers: AtomicU64,
    pub last_invalid_answer: std::sync::Mutex<Option<String>>,
    /// Requests served in the host's fallback order instead of the plugin's.
    pub fallbacks: AtomicU64,
    /// When a correction was last logged (rate limit).
    pub invalid_log: Every,
}

/// At most one event per ten seconds (a warning that would otherwise repeat on
/// every request).
#[derive(Default)]
pub struct Every {
    last_ms: AtomicU64,
}

impl Every {
    const PERIOD_MS: u64 = 10_000;

    pub fn allow(&self) -> bool {
        let now = crate::health::now_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        (last == 0 || now.saturating_sub(last) >= Self::PERIOD_MS)
            && self.last_ms.compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

/// The Prometheus series of one plugin name.
pub struct PluginMetrics {
    pub calls: prometheus_client::metrics::counter::Counter,
    pub failures: prometheus_client::metrics::counter::Counter,
    pub input_failures: prometheus_client::metrics::counter::Counter,
    pub seconds: prometheus_client::metrics::histogram::Histogram,
}

impl CallStats {
    pub fn quarantined(&self, now_ms: u64) -> bool {
        now_ms < self.quarantined_until_ms.load(Ordering::Relaxed)
    }

    fn remember(&self, error: &str) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

pub struct Pool<B> {
    plugin: Arc<str>,
    limits: Limits,
    idle: std::sync::Mutex<Vec<Warm<B>>>,
    pub stats: Arc<CallStats>,
}

impl<B> Pool<B> {
    pub fn new(plugin: Arc<str>, limits: Limits, stats: Arc<CallStats>) -> Self {
        Pool { plugin, limits, idle: std::sync::Mutex::new(Vec::with_capacity(WARM_INSTANCES)), stats }
    }

    pub fn put(&self, warm: Warm<B>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // Enough instances are warm already: this one is dropped (after the lock).
        let spare = if idle.len() < WARM_INSTANCES {
            idle.push(warm);
            None
        } else {
            Some(warm)
        };
        drop(idle);
        drop(spare);
    }

    /// The warm instance used last, if one is idle.
    pub fn take(&self) -> Option<Warm<B>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// Run `call` on a warm instance (made by `make` when none is idle), under a
    /// fresh fuel and deadline budget.
    ///
    /// A call a request depends on (`select`, `authorize`) comes with a `recheck`: the
    /// same call on neutral input. When the call fails, the recheck runs on a fresh
    /// instance: if it passes, the failure was this request's input — the request is
    /// refused, and the plugin keeps serving everyone else, its failure streak
    /// untouched (one hostile client cannot quarantine it). If the recheck fails too,
    /// the plugin itself is broken and the failure counts toward its quarantine. Only
    /// such a call clears the streak when it succeeds, so a plugin whose `select`
    /// always fails is quarantined even if its `observe` works.
    pub fn call<R>(
        &self,
        make: impl Fn() -> Result<Warm<B>, PluginError>,
        call: impl FnOnce(&mut Store<HostState>, &B) -> wasmtime::Result<R>,
        recheck: Option<Recheck<'_, B>>,
    ) -> Result<R, PluginError> {
        // Never quarantined (the usual case): no clock to read.
        if self.stats.quarantined_until_ms.load(Ordering::Relaxed) != 0
            && self.stats.quarantined(crate::health::now_ms())
        {
            return Err(PluginError::Quarantined { plugin: self.plugin.to_string() });
        }
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        if let Some(m) = &self.stats.metrics {
            m.calls.inc();
        }
        let mut warm = match self.take() {
            Some(w) => w,
            None => make().inspect_err(|e| {
                self.stats.remember(&e.to_string());
                self.failed();
            })?,
        };
        arm(&mut warm.store, &self.limits);
        let result = call(&mut warm.store, &warm.bindings);
        if let Some(m) = &self.stats.metrics {
            m.seconds.observe(started.elapsed().as_secs_f64());
        }
        match result {
            Ok(r) => {
                if recheck.is_some() {
                    self.stats.consecutive_failures.store(0, Ordering::Relaxed);
                }
                self.put(warm);
                Ok(r)
            }
            Err(e) => {
                let (plugin, message) = (self.plugin.to_string(), describe(&e, warm.store.data()));
                // The trapped instance may be in any state: it is dropped here.
                drop(warm);
                self.stats.remember(&message);
                if recheck.is_some_and(|check| self.recheck(&make, check)) {
                    self.input_failed();
                    return Err(PluginError::Input { plugin, message });
                }
                self.failed();
                Err(PluginError::Trap { plugin, message })
            }
        }
    }

    /// Whether the plugin answers neutral input on a fresh instance (kept if so).
    fn recheck(&self, make: &dyn Fn() -> Result<Warm<B>, PluginError>, check: Recheck<'_, B>) -> bool {
        let Ok(mut fresh) = make() else { return false };
        arm(&mut fresh.store, &self.limits);
        let passed = check(&mut fresh.store, &fresh.bindings).is_ok();
        if passed {
            self.put(fresh);
        }
        passed
    }

    fn input_failed(&self) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        self.stats.input_failures.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.stats.metrics {
            m.failures.inc();
            m.input_failures.inc();
        }
    }

    fn failed(&self) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.stats.metrics {
            m.failures.inc();
        }
        let consecutive = self.stats.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if consecutive >= self.limits.quarantine_after {
            // After the quarantine one call is let through; if it fails too, the
            // count is still over the limit and the plugin goes straight back.
            let until = crate::health::now_ms() + self.limits.quarantine.as_millis() as u64;
            self.stats.quarantined_until_ms.store(until, Ordering::Relaxed);
            self.stats.quarantines.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                plugin = &*self.plugin,
                consecutive,
                "plugin quarantined for {}s: requests use the host's fallback",
                self.limits.quarantine.as_secs_f64()
            );
        }
    }
}

/// What went wrong in a plugin call, for logs, `check-config` and the admin API:
/// the trap's reason (deadline, fuel, out of bounds, unreachable… or the host's own
/// error), the panic message the plugin reported if it panicked, then the wasm
/// backtrace.
pub fn describe(e: &wasmtime::Error, state: &HostState) -> String {
    let (budget, plugin) = (&state.budget, state.plugin());
    let mut text = match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => format!(
            "deadline exceeded ({} ms for this call; [plugins.{plugin}] timeout_ms raises it)",
            budget.deadline.as_millis()
        ),
        Some(wasmtime::Trap::OutOfFuel) => {
            format!("fuel exhausted ({} instructions for this call; [plugins.{plugin}] fuel raises it)", budget.fuel)
        }
        Some(trap) => trap.to_string(),
        None if e.root_cause().to_string().contains("growing memory") => {
            format!("memory cap reached ({} MiB; [plugins.{plugin}] memory_mb raises it)", budget.memory_bytes >> 20)
        }
        None => e.root_cause().to_string(),
    };
    if let Some(panic) = &state.last_panic {
        text.push_str(" — ");
        text.push_str(panic);
    }
    if let Some(backtrace) = e.downcast_ref::<wasmtime::WasmBacktrace>() {
        text.push_str("\nwasm backtrace:");
        let names = backtrace.frames().iter().map(|frame| {
            frame.func_name().map_or_else(
                || format!("function #{}", frame.func_index()),
                |n| format!("{:#}", rustc_demangle::demangle(n)),
            )
        });
        // A panic's own machinery (abort, the panic hook, `panic_fmt`) says nothing
        // the panic message did not: start at the frame that panicked.
        let panicking = state.last_panic.is_some();
        let machinery =
            |name: &String| ["abort", "std::", "core::panicking", "__rustc::"].iter().any(|p| name.starts_with(p));
        for (i, name) in names.skip_while(|n| panicking && machinery(n)).enumerate().take(MAX_FRAMES) {
            text.push_str(&format!("\n  {i:>2}: {name}"));
        }
    }
    text
}

/// Frames of a wasm backtrace worth showing (a panic's own machinery takes ten).
const MAX_FRAMES: usize = 24;
