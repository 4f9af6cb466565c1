//! The live gateway: the current [`Snapshot`] behind one atomic pointer, the health
//! of every backend, and the embedded mock providers the config asked for.

mod probe;
mod provider;
mod route;
mod snapshot;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

pub use provider::ProviderRuntime;
pub use route::{Route, RouteBackend, to_wit_state};
pub use snapshot::Snapshot;

use crate::config::Config;
use crate::health::HealthRegistry;
use crate::mock::{MockServer, MockSettings};

pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    pub health: HealthRegistry,
    /// Embedded mock providers by their `mock://` URL; reused across reloads.
    mocks: Mutex<HashMap<String, MockServer>>,
}

impl Gateway {
    /// Start the embedded mocks the config names, then build and publish the first
    /// snapshot (compiling and smoke-testing every plugin).
    pub async fn start(config: Config) -> Result<Arc<Gateway>, String> {
        let health = HealthRegistry::default();
        let mocks = Mutex::new(HashMap::new());
        let resolved = start_mocks(&mocks, &config).await?;
        // Startup: compiling here, on the runtime thread, delays nothing but startup.
        let snapshot = Self::prepare_in(&config, &health, &resolved, None)?;
        let gateway = Arc::new(Gateway { snapshot: ArcSwap::from_pointee(snapshot), health, mocks });
        probe::spawn(Arc::downgrade(&gateway));
        Ok(gateway)
    }

    /// The snapshot to serve one request with.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Prepare a snapshot for `config` off the request path, then swap it in.
    /// On error the running snapshot keeps serving.
    pub async fn reload(self: &Arc<Self>, config: Config) -> Result<(), String> {
        let mocks = start_mocks(&self.mocks, &config).await?;
        let this = self.clone();
        let previous = self.snapshot();
        let snapshot =
            tokio::task::spawn_blocking(move || Self::prepare_in(&config, &this.health, &mocks, Some(&previous)))
                .await
                .map_err(|e| format!("preparing the new configuration panicked: {e}"))??;
        self.snapshot.store(Arc::new(snapshot));
        Ok(())
    }

    fn prepare_in(
        config: &Config,
        health: &HealthRegistry,
        mocks: &HashMap<String, String>,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, String> {
        let base_url = |url: &str| mocks.get(url).cloned().unwrap_or_else(|| url.to_string());
        Snapshot::build(config.clone(), health, &base_url, previous)
    }

    /// The base URL of the embedded mock started for `mock_url`, if any (tests use
    /// it to reach the mock's control endpoint).
    pub fn mock_base_url(&self, mock_url: &str) -> Option<String> {
        lock(&self.mocks).get(mock_url).map(MockServer::base_url)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Start (or reuse) an embedded mock for every enabled `mock://` provider; returns
/// each mock URL's real base URL.
async fn start_mocks(
    mocks: &Mutex<HashMap<String, MockServer>>,
    config: &Config,
) -> Result<HashMap<String, String>, String> {
    let wanted: Vec<String> = config
        .providers
        .values()
        .filter(|p| p.enabled && p.base_url.starts_with("mock://"))
        .map(|p| p.base_url.clone())
        .collect();
    let mut resolved = HashMap::new();
    for url in wanted {
        let existing = lock(mocks).get(&url).map(MockServer::base_url);
        let base = match existing {
            Some(base) => base,
            None => {
                let settings = MockSettings::from_mock_url(&url)?;
                let server = MockServer::start("127.0.0.1:0", settings)
                    .await
                    .map_err(|e| format!("cannot start the embedded mock for {url}: {e}"))?;
                let base = server.base_url();
                tracing::info!(mock = %url, addr = %server.addr(), "embedded mock provider started");
                lock(mocks).insert(url.clone(), server);
                base
            }
        };
        resolved.insert(url, base);
    }
    Ok(resolved)
}
