//! The live gateway: the current [`Snapshot`] behind one atomic pointer, the health
//! of every backend, and the embedded mock providers the config asked for.

mod changes;
mod probe;
mod provider;
mod route;
mod series;
mod snapshot;
mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

pub use provider::ProviderRuntime;
pub use route::{Explained, Route, RouteBackend, Target, backend_state};
pub use series::Attempted;
pub use snapshot::{Shared, Snapshot, wit_routes, wit_users};

use crate::config::Config;
use crate::health::HealthRegistry;
use crate::mock::{MockServer, MockSettings};

pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    pub health: HealthRegistry,
    /// Embedded mock providers by their `mock://` URL; reused across reloads.
    mocks: Mutex<HashMap<String, MockServer>>,
    /// The config file, for reloads (`SIGHUP`, `POST /admin/reload`, file changes).
    config_path: Mutex<Option<PathBuf>>,
    /// Plugin versions uploaded with `PUT /admin/plugins/{name}`, by plugin name.
    uploaded: Mutex<HashMap<String, Arc<[u8]>>>,
    /// One reload at a time: each prepares from the state the previous one published.
    reloading: tokio::sync::Mutex<()>,
    /// Snapshots published since start (config reloads and plugin swaps).
    pub swaps: AtomicU64,
    /// Call counters per plugin version, kept across snapshots.
    pub versions: crate::plugin::Versions,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Rate-limit state per user, kept across reloads.
    limiter: Arc<crate::ratelimit::RateLimiter>,
    /// The fleet, when `[cluster]` was configured at start.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The usage ledger (`settings.usage_db` at start) and budgets.
    pub accounting: Arc<crate::usage::Accounting>,
    /// Trace export (`[telemetry]` at start), when configured.
    pub tracer: Option<Arc<crate::telemetry::trace::Tracer>>,
    pub signals: Signals,
    /// The address the server listens on, once known: a reload must not bring a
    /// config that may not be served there (`Config::exposure_error`).
    listen: Mutex<Option<String>>,
}

/// The stages of a shutdown, for the parts of the gateway that must react. (The
/// first stage, closing the connections not serving a request, is the server's
/// own: `server::connections::Connections::close_all`.)
#[derive(Default)]
pub struct Signals {
    /// Cancelled when the drain timeout has passed: open streams end with an SSE
    /// error event.
    pub closing: tokio_util::sync::CancellationToken,
}

impl Gateway {
    /// Start the embedded mocks the config names, then build and publish the first
    /// snapshot (compiling and smoke-testing every plugin).
    pub async fn start(config: Config) -> Result<Arc<Gateway>, String> {
        let health = HealthRegistry::default();
        let mocks = Mutex::new(HashMap::new());
        let resolved = start_mocks(&mocks, &config).await?;
        // Startup: compiling here, on the runtime thread, delays nothing but startup.
        let metrics = Arc::new(crate::metrics::Metrics::new(config.cluster.is_some()));
        let versions = crate::plugin::Versions::new(metrics.clone());
        let limiter = Arc::new(crate::ratelimit::RateLimiter::default());
        let cluster =
            config.cluster.clone().map(|c| crate::cluster::Cluster::new(c, metrics.cluster.clone())).transpose()?;
        let accounting = Arc::new(crate::usage::Accounting::open(
            config.settings.usage_db.as_deref(),
            config.settings.usage_retention,
        )?);
        let signals = Signals::default();
        let tracer = crate::telemetry::trace::Tracer::start(&config.telemetry, metrics.spans_dropped.clone())?;
        let shared = Shared {
            uploaded: &HashMap::new(),
            versions: &versions,
            metrics: &metrics,
            limiter: &limiter,
            signals: &signals,
            cluster: &cluster,
            accounting: &accounting,
            tracer: &tracer,
        };
        let snapshot = Self::prepare_in(&config, &health, &resolved, &shared, None)?;
        let gateway = Arc::new(Gateway {
            snapshot: ArcSwap::from_pointee(snapshot),
            health,
            mocks,
            config_path: Mutex::new(config.source.clone()),
            uploaded: Mutex::new(HashMap::new()),
            reloading: tokio::sync::Mutex::new(()),
            swaps: AtomicU64::new(0),
            versions,
            metrics,
            limiter,
            cluster,
            accounting,
            tracer,
            signals,
            listen: Mutex::new(None),
        });
        probe::spawn(Arc::downgrade(&gateway));
        spawn_outcome_delivery(Arc::downgrade(&gateway));
        crate::memory::spawn_trimmer(Arc::downgrade(&gateway.metrics));
        Ok(gateway)
    }

    /// With `[cluster]`: take the fleet's state (its plugin versions before this
    /// returns), announce this replica, and keep in sync from now on. A gateway
    /// that only checks a config (`check-config`) does not join.
    pub async fn join_fleet(self: &Arc<Self>) {
        if let Some(cluster) = &self.cluster {
            crate::cluster::join(cluster, self).await;
        }
    }

    /// The snapshot to serve one request with.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Prepare a snapshot for `config` off the request path, then swap it in.
    /// On error the running snapshot keeps serving.
    pub async fn reload(self: &Arc<Self>, config: Config) -> Result<(), String> {
        let _one_at_a_time = self.reloading.lock().await;
        self.rebuild(config).await
    }

    /// Reload the config file the gateway was started with.
    pub async fn reload_from_disk(self: &Arc<Self>) -> Result<(), String> {
        let path = lock(&self.config_path).clone().ok_or("the gateway was not started from a config file")?;
        let config = Config::load(&path).map_err(|e| {
            self.count_reload("rejected");
            format!("{} is invalid, keeping the running config:\n{e}", path.display())
        })?;
        self.reload(config).await
    }

    /// Whether `name` is a plugin an upload may replace: a stock plugin or a
    /// `[plugins.X]` entry of the running configuration.
    pub fn knows_plugin(&self, name: &str) -> bool {
        self.snapshot().config.plugins.contains_key(name)
            || crate::plugin::STOCK_STRATEGIES.contains(&name)
            || crate::plugin::STOCK_AUTH.contains(&name)
    }

    /// Swap in a new version of plugin `name` (uploaded bytes), for every model
    /// that uses it. A version that fails to load leaves the running one in place.
    /// The upload serves until `DELETE` or until the plugin's file changes.
    pub async fn swap_plugin(self: &Arc<Self>, name: &str, bytes: Vec<u8>) -> Result<(), String> {
        let _one_at_a_time = self.reloading.lock().await;
        let config = (*self.snapshot().config).clone();
        if !self.knows_plugin(name) {
            return Err(format!("no plugin named {name:?}: name a stock plugin or a [plugins.X] entry"));
        }
        let previous = lock(&self.uploaded).insert(name.to_string(), bytes.into());
        let result = self.rebuild(config).await;
        if result.is_err() {
            let mut uploaded = lock(&self.uploaded);
            match previous {
                Some(p) => uploaded.insert(name.to_string(), p),
                None => uploaded.remove(name),
            };
        }
        result
    }

    /// Forget an uploaded version: the plugin's file (or stock build) serves again.
    pub async fn revert_plugin(self: &Arc<Self>, name: &str) -> Result<bool, String> {
        let _one_at_a_time = self.reloading.lock().await;
        let Some(previous) = lock(&self.uploaded).remove(name) else { return Ok(false) };
        let result = self.rebuild((*self.snapshot().config).clone()).await;
        if result.is_err() {
            lock(&self.uploaded).insert(name.to_string(), previous);
        }
        result.map(|()| true)
    }

    /// The bytes of the uploaded version of `name` in service, if any.
    pub fn uploaded_bytes(&self, name: &str) -> Option<Arc<[u8]>> {
        lock(&self.uploaded).get(name).cloned()
    }

    /// Names of plugins currently served from an upload.
    pub fn uploaded_plugins(&self) -> Vec<String> {
        lock(&self.uploaded).keys().cloned().collect()
    }

    fn count_reload(&self, result: &str) {
        self.metrics.reloads.get_or_create(&crate::metrics::ResultLabels { result: result.into() }).inc();
    }

    /// Record the address the gateway is served on (checked on every reload).
    pub fn set_listen_address(&self, listen: &str) {
        *lock(&self.listen) = Some(listen.to_string());
    }

    /// Prepare (fallible, off the request path) then swap (one atomic store).
    /// Callers hold `reloading`.
    async fn rebuild(self: &Arc<Self>, config: Config) -> Result<(), String> {
        config.log_warnings();
        let serving = self.snapshot();
        if serving.config.cluster != config.cluster {
            tracing::warn!("[cluster] changed: the new settings take effect at the next restart");
        }
        if serving.config.telemetry != config.telemetry {
            tracing::warn!("[telemetry] changed: trace export changes at the next restart");
        }
        if serving.config.settings.usage_db != config.settings.usage_db {
            tracing::warn!("settings.usage_db changed: the new file is used from the next restart");
        }
        let listen = lock(&self.listen).clone();
        if let Some(e) = listen.and_then(|l| config.exposure_error(&l)) {
            self.count_reload("rejected");
            tracing::error!("reload rejected, the running configuration keeps serving: {e}");
            return Err(e);
        }
        let mocks = start_mocks(&self.mocks, &config).await?;
        let this = self.clone();
        let uploaded = lock(&self.uploaded).clone();
        let previous = self.snapshot();
        let previous_for_changes = previous.clone();
        let running = previous.config.clone();
        let started = std::time::Instant::now();
        let snapshot = tokio::task::spawn_blocking(move || {
            let shared = Shared {
                uploaded: &uploaded,
                versions: &this.versions,
                metrics: &this.metrics,
                limiter: &this.limiter,
                signals: &this.signals,
                cluster: &this.cluster,
                accounting: &this.accounting,
                tracer: &this.tracer,
            };
            Self::prepare_in(&config, &this.health, &mocks, &shared, Some(&previous))
        })
        .await
        .map_err(|e| format!("preparing the new configuration panicked: {e}"))?
        .inspect_err(|e| {
            self.count_reload("rejected");
            tracing::error!("reload rejected, the running configuration keeps serving: {e}");
        })?;
        self.count_reload("ok");
        warn_about_removals(&running, &snapshot.config);
        let changes = changes::between(&previous_for_changes, &snapshot);
        let in_service = snapshot.strategies.values().map(|p| p.compiled()).chain([snapshot.auth.compiled()]);
        self.versions.retain(in_service);
        self.snapshot.store(Arc::new(snapshot));
        self.swaps.fetch_add(1, Ordering::Relaxed);
        let prepare_ms = started.elapsed().as_millis() as u64;
        if changes.all.is_empty() {
            tracing::info!(prepare_ms, "new configuration in service (nothing changed)");
        } else {
            tracing::info!(prepare_ms, changes = %changes.all.join("; "), "new configuration in service");
        }
        if !changes.widened.is_empty() {
            tracing::warn!(widened = %changes.widened.join("; "), "the new configuration widens access");
        }
        Ok(())
    }

    fn prepare_in(
        config: &Config,
        health: &HealthRegistry,
        mocks: &HashMap<String, String>,
        shared: &Shared,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, String> {
        let base_url = |url: &str| mocks.get(url).cloned().unwrap_or_else(|| url.to_string());
        Snapshot::build(config.clone(), health, &base_url, shared, previous)
    }

    /// Watch the config file and every plugin file; reload when one changes.
    pub fn watch_files(self: &Arc<Self>) {
        watch::spawn(Arc::downgrade(self));
    }

    /// The base URL of the embedded mock started for `mock_url`, if any (tests use
    /// it to reach the mock's control endpoint).
    pub fn mock_base_url(&self, mock_url: &str) -> Option<String> {
        lock(&self.mocks).get(mock_url).map(MockServer::base_url)
    }
}

/// Say loudly what a new configuration takes away: removed models and users, and a
/// removed admin token, are legitimate edits but also what a bad save looks like.
fn warn_about_removals(old: &Config, new: &Config) {
    let models: Vec<&str> =
        old.models.iter().filter(|m| new.model(&m.name).is_none()).map(|m| m.name.as_str()).collect();
    let users: Vec<&str> =
        old.users.iter().filter(|u| !new.users.iter().any(|n| n.key == u.key)).map(|u| u.key.as_str()).collect();
    if !models.is_empty() || !users.is_empty() {
        tracing::warn!(?models, ?users, "the new configuration removes models or users");
    }
    if old.settings.admin_token.is_some() && new.settings.admin_token.is_none() {
        tracing::warn!("the new configuration has no admin_token: the admin API is now disabled");
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
/// Attempts' outcomes ride to their strategy with the next `select`; when no request
/// comes, this delivers them, so that a kept score (shown, shared with the fleet)
/// lags its outcome by 100 ms at most.
fn spawn_outcome_delivery(gateway: std::sync::Weak<Gateway>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(gateway) = gateway.upgrade() else { return };
            gateway.snapshot().deliver_outcomes();
        }
    });
}

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
