//! Backend health: passive stats and the circuit breaker of every backend.
//!
//! A backend is a (provider, upstream model) pair. Its health is shared by every
//! client-facing model that routes to it and survives config reloads: the registry
//! hands the same [`BackendHealth`] to every snapshot that names the pair.

mod circuit;
mod stats;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use circuit::{CircuitPolicy, CircuitView};
pub use stats::{BackendHealth, ErrorClass, HealthView, InFlight, Outcome, SharedHealth};

/// Every backend's health, by (provider key, upstream model).
#[derive(Default)]
pub struct HealthRegistry {
    // Touched only while building a config snapshot, never per request.
    backends: Mutex<HashMap<(String, String), Arc<BackendHealth>>>,
}

impl HealthRegistry {
    pub fn get_or_create(&self, provider: &str, model: &str) -> Arc<BackendHealth> {
        let mut map = match self.backends.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry((provider.to_string(), model.to_string()))
            .or_insert_with(|| Arc::new(BackendHealth::new(provider, model)))
            .clone()
    }

    /// How many backends have health here (the registry never shrinks).
    pub fn count(&self) -> usize {
        self.backends.lock().map_or_else(|p| p.into_inner().len(), |m| m.len())
    }

    /// Every backend's health (the fleet's sync walks them).
    pub fn all(&self) -> Vec<Arc<BackendHealth>> {
        let map = match self.backends.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.values().cloned().collect()
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
