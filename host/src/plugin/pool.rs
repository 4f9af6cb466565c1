//! Warm instances, reused across calls.
//!
//! Instantiating a component costs ~10× a call, so each plugin keeps a small
//! lock-free queue of configured instances. A call takes one (or makes one), and
//! gives it back only if the call succeeded: a trapped instance may be in any state
//! and is dropped.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;
use wasmtime::Store;

use super::sandbox::{HostState, arm};
use super::{Limits, PluginError};

/// Warm instances kept per plugin per config snapshot. More concurrent calls than
/// this instantiate extra instances that are dropped afterwards.
const WARM_INSTANCES: usize = 16;

pub struct Warm<B> {
    pub store: Store<HostState>,
    pub bindings: B,
}

/// Call counters of one plugin handle.
#[derive(Default)]
pub struct CallStats {
    pub calls: AtomicU64,
    pub failures: AtomicU64,
    /// Failures since the last success.
    pub consecutive_failures: AtomicU32,
}

pub struct Pool<B> {
    plugin: std::sync::Arc<str>,
    limits: Limits,
    idle: ArrayQueue<Warm<B>>,
    pub stats: CallStats,
}

impl<B> Pool<B> {
    pub fn new(plugin: std::sync::Arc<str>, limits: Limits) -> Self {
        Pool { plugin, limits, idle: ArrayQueue::new(WARM_INSTANCES), stats: CallStats::default() }
    }

    pub fn put(&self, warm: Warm<B>) {
        // A full queue means enough instances are warm already: drop this one.
        let _ = self.idle.push(warm);
    }

    /// Run `call` on a warm instance (made by `make` when none is idle), under a
    /// fresh fuel and deadline budget.
    pub fn call<R>(
        &self,
        make: impl FnOnce() -> Result<Warm<B>, PluginError>,
        call: impl FnOnce(&mut Store<HostState>, &B) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let mut warm = match self.idle.pop() {
            Some(w) => w,
            None => make().inspect_err(|_| self.failed())?,
        };
        arm(&mut warm.store, &self.limits);
        match call(&mut warm.store, &warm.bindings) {
            Ok(r) => {
                self.stats.consecutive_failures.store(0, Ordering::Relaxed);
                self.put(warm);
                Ok(r)
            }
            Err(e) => {
                self.failed();
                Err(PluginError::Trap { plugin: self.plugin.to_string(), message: trap_message(&e) })
            }
        }
    }

    fn failed(&self) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        self.stats.consecutive_failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// A one-line description of a trap: the trap code when there is one (deadline,
/// fuel, out of bounds, unreachable…), otherwise the error chain.
pub fn trap_message(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => "deadline exceeded (epoch interrupt)".to_string(),
        Some(wasmtime::Trap::OutOfFuel) => "fuel exhausted".to_string(),
        Some(trap) => trap.to_string(),
        None => format!("{e:#}").lines().next().unwrap_or("unknown error").to_string(),
    }
}
