//! A snapshot: everything a request needs, built and checked as one bundle and
//! published with one atomic swap. A request keeps the snapshot it started with.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::config::{Config, PluginKind};
use crate::health::{CircuitPolicy, HealthRegistry};
use crate::metrics::Metrics;
use crate::plugin::auth::wit as auth_wit;
use crate::plugin::strategy::wit as strategy_wit;
use crate::plugin::{AuthPlugin, CompiledPlugin, Limits, StrategyPlugin, Versions, compile, stock};
use crate::relay::UpstreamClient;

use super::provider::ProviderRuntime;
use super::route::{Route, RouteBackend, to_wit_info};

/// What a gateway shares across its snapshots: uploaded plugin bytes, per-version
/// plugin stats, the metrics registry.
pub struct Shared<'a> {
    /// Versions uploaded through the admin API, by plugin name.
    pub uploaded: &'a HashMap<String, Arc<[u8]>>,
    pub versions: &'a Versions,
    pub metrics: &'a Arc<Metrics>,
    pub limiter: &'a Arc<crate::ratelimit::RateLimiter>,
    pub signals: &'a super::Signals,
    pub cluster: &'a Option<Arc<crate::cluster::Cluster>>,
    pub accounting: &'a Arc<crate::usage::Accounting>,
    pub tracer: &'a Option<Arc<crate::telemetry::trace::Tracer>>,
}

pub struct Snapshot {
    pub config: Arc<Config>,
    /// Enabled and disabled routes, by the model name clients send.
    pub routes: HashMap<String, Arc<Route>>,
    /// Routes in config order, for listings.
    pub route_order: Vec<Arc<Route>>,
    pub auth: Arc<AuthPlugin>,
    pub strategies: BTreeMap<String, Arc<StrategyPlugin>>,
    pub client: UpstreamClient,
    pub policy: CircuitPolicy,
    pub metrics: Arc<Metrics>,
    pub limiter: Arc<crate::ratelimit::RateLimiter>,
    /// The fleet (`[cluster]` at start), shared by every snapshot.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The usage ledger and the budgets' counters, shared by every snapshot.
    pub accounting: Arc<crate::usage::Accounting>,
    /// Trace export, when configured (shared by every snapshot).
    pub tracer: Option<Arc<crate::telemetry::trace::Tracer>>,
    /// The budgets and token limits of the users that have any, by user id.
    pub budgets: HashMap<String, crate::config::Budget>,
    /// The request-body bytes buffered at once (`max_buffered_body_bytes`, and per user).
    pub body_budget: Arc<crate::server::upload::BodyBudget>,
    /// Cancelled when the drain timeout of a shutdown has passed: open streams end.
    pub closing: tokio_util::sync::CancellationToken,
    /// Replaces this configuration's secrets in provider text Berry relays or logs.
    pub redactor: Arc<crate::redact::Redactor>,
}

impl Snapshot {
    /// Deliver the outcomes waiting for each strategy (`StrategyPlugin::flush`): before
    /// kept scores are shown or shared, and every 100 ms when no request carries them.
    pub fn deliver_outcomes(&self) {
        for strategy in self.strategies.values() {
            strategy.flush();
        }
    }

    /// Build and smoke-test a snapshot. `base_url` resolves a provider's base URL
    /// (it maps `mock://` URLs to the embedded mocks). Fails without side effects
    /// on the running gateway.
    pub fn build(
        config: Config,
        health: &HealthRegistry,
        base_url: &dyn Fn(&str) -> String,
        shared: &Shared,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, String> {
        let settings = &config.settings;
        // Pooled connections are kept when the connect timeout and the ways out
        // (direct, proxies) did not change.
        let client = UpstreamClient::new(settings.connection_timeout, &config, previous.map(|p| &p.client))?;
        let mut providers = HashMap::new();
        for (key, p) in &config.providers {
            let runtime = ProviderRuntime::new(p, &base_url(&p.base_url), client.route(&p.proxy))?;
            providers.insert(key.clone(), Arc::new(runtime));
        }

        // Group routes by strategy: each strategy instance is configured with the
        // routes that use it, and a route knows its index in that list.
        let mut by_strategy: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, m) in config.models.iter().enumerate() {
            by_strategy.entry(m.strategy.clone()).or_default().push(i);
        }
        let mut strategies = BTreeMap::new();
        for (name, model_indices) in &by_strategy {
            let routes = wit_routes(&config, model_indices.iter().map(|&i| &config.models[i]));
            let (compiled, limits, plugin_config) = load_plugin(&config, name, PluginKind::Strategy, shared)?;
            let plugin = StrategyPlugin::prepare(compiled, limits, plugin_config, routes).map_err(|e| e.to_string())?;
            strategies.insert(name.clone(), Arc::new(plugin));
        }

        let mut routes = HashMap::new();
        let mut route_order = Vec::new();
        let loaded_at = crate::health::now_ms() / 1000;
        for (name, model_indices) in &by_strategy {
            let Some(strategy) = strategies.get(name) else { continue };
            for (strategy_index, &i) in model_indices.iter().enumerate() {
                let m = &config.models[i];
                let mut backends = Vec::new();
                for b in &m.backends {
                    // A disabled backend may name an unknown provider (lenient
                    // validation); it is kept, disabled, so indices match the config.
                    let provider = match providers.get(&b.provider) {
                        Some(p) => p.clone(),
                        None => Arc::new(ProviderRuntime::disabled(&b.provider)),
                    };
                    let health = health.get_or_create(&b.provider, &b.model);
                    backends.push(RouteBackend::new(&m.name, b.clone(), provider, health, shared.metrics));
                }
                let before = previous.and_then(|p| p.routes.get(&m.name));
                let previous_sequence = before.map_or(0, |r| r.sequence.load(std::sync::atomic::Ordering::Relaxed));
                // When the model first appeared in this gateway's configuration.
                let created = before.map_or(loaded_at, |r| r.created);
                let route = Arc::new(Route {
                    name: m.name.clone(),
                    enabled: m.enabled,
                    strategy: strategy.clone(),
                    strategy_index: strategy_index as u32,
                    backends,
                    sequence: AtomicU64::new(previous_sequence),
                    series: Default::default(),
                    created,
                    estimate: Default::default(),
                });
                routes.insert(m.name.clone(), route.clone());
                route_order.push((i, route));
            }
        }
        route_order.sort_by_key(|(i, _)| *i);

        let users = wit_users(&config);
        let (compiled, limits, auth_config) = load_plugin(&config, &config.auth.policy, PluginKind::Auth, shared)?;
        let auth = AuthPlugin::prepare(compiled, limits, auth_config, users, config.auth.cache_ttl)
            .map_err(|e| e.to_string())?;

        let (total, per_user) = (settings.max_buffered_body_bytes, settings.max_buffered_body_bytes_per_user);
        let body_budget = match previous {
            // Bodies in flight keep counting against the budget across a reload.
            Some(p) if p.body_budget.sized(total, per_user) => p.body_budget.clone(),
            _ => crate::server::upload::BodyBudget::new(total, per_user),
        };
        let policy = CircuitPolicy {
            threshold: settings.circuit_breaker_threshold,
            window: settings.circuit_breaker_window,
            cooldown: settings.circuit_breaker_cooldown,
            successes_per_stage: settings.recovery_successes_per_stage,
        };
        // The last hour of pairs this configuration no longer has is forgotten (only
        // once nothing else can fail: a rejected config leaves history alone).
        let pairs = route_order
            .iter()
            .flat_map(|(_, r)| r.backends.iter().map(|b| (r.name.clone(), b.label.to_string())))
            .collect();
        shared.metrics.history.keep_only(&pairs);
        Ok(Snapshot {
            routes,
            route_order: route_order.into_iter().map(|(_, r)| r).collect(),
            auth: Arc::new(auth),
            strategies,
            client,
            policy,
            metrics: shared.metrics.clone(),
            limiter: shared.limiter.clone(),
            cluster: shared.cluster.clone(),
            accounting: shared.accounting.clone(),
            tracer: shared.tracer.clone(),
            budgets: config.users.iter().filter(|u| u.budget.is_set()).map(|u| (u.key.clone(), u.budget)).collect(),
            body_budget,
            closing: shared.signals.closing.clone(),
            redactor: Arc::new(crate::redact::of_config(&config)),
            config: Arc::new(config),
        })
    }
}

/// The compiled plugin, its limits and its configuration JSON, for a stock plugin
/// name or a `[plugins.X]` entry. An uploaded version (`PUT /admin/plugins/X`)
/// takes the place of the file or the embedded stock bytes; a `sha256` pin holds
/// whichever it is.
fn load_plugin(
    config: &Config,
    name: &str,
    kind: PluginKind,
    shared: &Shared,
) -> Result<(CompiledPlugin, Limits, String), String> {
    let spec = config.plugins.get(name);
    if let Some(spec) = spec
        && spec.kind != kind
    {
        return Err(format!("plugins.{name}: is a {:?} plugin, used as {kind:?}", spec.kind));
    }
    let file;
    let (source, bytes): (String, &[u8]) = match (shared.uploaded.get(name), spec.and_then(|s| s.path.as_ref())) {
        (Some(bytes), _) => ("upload".to_string(), bytes),
        (None, Some(path)) => {
            file =
                std::fs::read(path).map_err(|e| format!("plugins.{name}.path: cannot read {}: {e}", path.display()))?;
            (path.display().to_string(), &file)
        }
        (None, None) => ("stock".to_string(), stock::bytes(name).ok_or_else(|| format!("unknown plugin {name:?}"))?),
    };
    if let Some(pinned) = spec.and_then(|s| s.sha256.as_deref()) {
        check_pin(name, &source, bytes, pinned)?;
    }
    let compiled = compile(name, &source, bytes, shared.versions).map_err(|e| e.to_string())?;
    let limits = spec.map_or_else(Limits::default, |s| s.limits);
    let plugin_config = match (spec, kind, name) {
        (Some(spec), _, _) if spec.path.is_some() => spec.config_json.clone(),
        (_, PluginKind::Strategy, "smart_ai") => config.settings.smart_ai_json.clone(),
        (_, PluginKind::Auth, _) => config.auth.config_json.clone(),
        _ => "{}".to_string(),
    };
    Ok((compiled, limits, plugin_config))
}

/// Refuse bytes whose SHA-256 is not the one `[plugins.X] sha256` pins.
pub fn check_pin(name: &str, source: &str, bytes: &[u8], pinned: &str) -> Result<(), String> {
    let actual = crate::plugin::sha256_hex(bytes);
    if actual == pinned {
        return Ok(());
    }
    Err(format!(
        "plugins.{name}.sha256: the {source} version has SHA-256 {actual}, but the configuration pins {pinned}: \
         refusing to load it (update the pin if this version is the one you mean)"
    ))
}

/// The routes a strategy is configured with, as it sees them: `models`, each with
/// its backends (disabled where the backend or its provider is).
pub fn wit_routes<'a>(
    config: &Config,
    models: impl Iterator<Item = &'a crate::config::Model>,
) -> Vec<strategy_wit::RouteInfo> {
    let provider_enabled = |key: &str| config.providers.get(key).is_some_and(|p| p.enabled);
    models
        .map(|m| strategy_wit::RouteInfo {
            name: m.name.clone(),
            backends: m.backends.iter().map(|b| to_wit_info(b, provider_enabled(&b.provider))).collect(),
        })
        .collect()
}

/// The users an auth policy is configured with, as it sees them.
pub fn wit_users(config: &Config) -> Vec<auth_wit::UserInfo> {
    config.users.iter().map(to_wit_user).collect()
}

fn to_wit_user(u: &crate::config::User) -> auth_wit::UserInfo {
    auth_wit::UserInfo {
        id: u.key.clone(),
        name: u.name.clone(),
        token: u.token.as_ref().map(|t| t.expose().to_string()).unwrap_or_default(),
        token_sha256: u.token_sha256.clone().unwrap_or_default(),
        allowed_models: u.allowed_models.clone(),
        enabled: u.enabled,
        tags: u.tags.clone(),
        limits: auth_wit::RateLimits {
            per_minute: u.rate_limit.per_minute,
            per_hour: u.rate_limit.per_hour,
            per_day: u.rate_limit.per_day,
        },
    }
}
