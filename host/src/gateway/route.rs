//! A route: one client-facing model with its backends, bound to its strategy plugin,
//! its providers and the shared health of each backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::Uri;

use crate::config::{Backend, BillingMode};
use crate::health::{BackendHealth, CircuitPolicy, CircuitView, ErrorClass, Outcome, now_ms};
use crate::metrics::Metrics;
use crate::plugin::StrategyPlugin;
use crate::plugin::strategy::{BackendState, flat, wit};
use crate::relay::Endpoint;
use crate::relay::plan::Plan;

use super::provider::ProviderRuntime;
use super::series::{BackendSeries, RouteSeries};

pub struct RouteBackend {
    pub config: Backend,
    pub provider: Arc<ProviderRuntime>,
    pub health: Arc<BackendHealth>,
    /// "provider/model", for logs, metrics and errors (never secrets).
    pub label: Arc<str>,
    /// The label as the `x-berry-backend` header of the answers this backend serves
    /// (`None` if the names are not valid in a header).
    pub label_header: Option<http::HeaderValue>,
    /// How each endpoint (streamed or not) reaches this backend, worked out once per
    /// config: `None` where the backend cannot serve it. See [`RouteBackend::target`].
    targets: Vec<Option<Target>>,
    /// Its metric series and history on this route.
    pub series: BackendSeries,
}

/// Where and how a request for one endpoint goes to a backend.
pub struct Target {
    pub plan: Plan,
    pub uri: Uri,
}

impl RouteBackend {
    pub fn new(
        route: &str,
        config: Backend,
        provider: Arc<ProviderRuntime>,
        health: Arc<BackendHealth>,
        metrics: &Metrics,
    ) -> Self {
        let label: Arc<str> = format!("{}/{}", config.provider, config.model).into();
        let series = BackendSeries::new(metrics, route, &label, &provider, &config.model);
        let label_header = http::HeaderValue::from_str(&label).ok();
        let targets = Endpoint::ALL
            .iter()
            .flat_map(|&endpoint| [false, true].map(|stream| (endpoint, stream)))
            .map(|(endpoint, stream)| {
                let plan = Plan::new(endpoint, provider.adapter)?;
                let uri = provider.url(plan.upstream, &config.model, stream)?;
                Some(Target { plan, uri })
            })
            .collect();
        RouteBackend { config, provider, health, label, label_header, targets, series }
    }

    /// How a request for `endpoint` reaches this backend, or `None` when it cannot.
    pub fn target(&self, endpoint: Endpoint, stream: bool) -> Option<&Target> {
        self.targets.get(endpoint as usize * 2 + usize::from(stream))?.as_ref()
    }

    /// Enabled in config and on an enabled provider.
    pub fn enabled(&self) -> bool {
        self.config.enabled && self.provider.enabled
    }
}

pub struct Route {
    /// The model name clients send.
    pub name: String,
    pub enabled: bool,
    pub strategy: Arc<StrategyPlugin>,
    /// This route's index in the list its strategy was configured with.
    pub strategy_index: u32,
    pub backends: Vec<RouteBackend>,
    /// Incremented per request; handed to the strategy (round robin).
    pub sequence: AtomicU64,
    /// This route's metric series.
    pub series: RouteSeries,
    /// Unix time (seconds) the model first appeared in this gateway's configuration:
    /// `created` in the model list.
    pub created: u64,
    /// The last estimate of pick probabilities (for a strategy that does not explain
    /// itself), and when it was made (ms since the epoch).
    pub estimate: std::sync::Mutex<Option<(u64, Vec<wit::Explanation>)>>,
}

/// How a strategy treats each backend of a route now (see [`Route::explain`]).
#[derive(Default)]
pub struct Explained {
    /// Parallel to the route's backends (empty if the strategy failed).
    pub rows: Vec<wit::Explanation>,
    /// The figures were estimated by sampling `select`, not given by the strategy.
    pub estimated: bool,
}

impl Explained {
    pub fn get(&self, i: usize) -> Option<&wit::Explanation> {
        self.rows.get(i)
    }
}

/// `select` calls one estimate makes, and how long it is reused.
const ESTIMATE_DRAWS: u32 = 400;
const ESTIMATE_FOR_MS: u64 = 2_000;

impl Route {
    /// The live state of every backend, 16 numbers each in backend order: what a
    /// strategy receives (`flat`).
    pub fn states(&self, now: u64, policy: &CircuitPolicy) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.backends.len() * flat::STATE);
        for b in &self.backends {
            backend_state(&b.health, now, policy).write(&mut out);
        }
        out
    }

    /// The request record for one client request; takes the next sequence number.
    pub fn request(&self, stream: bool, now: u64) -> wit::Request {
        wit::Request {
            route: self.strategy_index,
            sequence: self.sequence.fetch_add(1, Ordering::Relaxed),
            random: fastrand::u64(..),
            now_ms: now,
            stream,
        }
    }

    /// The strategy's explanation of every backend now (weight, pick probability,
    /// factors): what the weights endpoint, the status page and the metrics show. A
    /// strategy that does not explain itself (answers none) gets its pick
    /// probabilities estimated by sampling its real `select` on the live state,
    /// marked as estimated (and kept for two seconds: never on a relayed request's
    /// path).
    pub fn explain(&self, now: u64, policy: &CircuitPolicy) -> Result<Explained, crate::plugin::PluginError> {
        // The outcomes still waiting for a request to carry them count too.
        self.strategy.flush();
        let states = self.states(now, policy);
        let request = self.probe_request(now);
        let rows = self.strategy.explain(&request, &states)?;
        if !rows.is_empty() || self.backends.is_empty() {
            return Ok(Explained { rows, estimated: false });
        }
        let mut cached = self.estimate.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, rows)) = cached.as_ref()
            && now.saturating_sub(*at) < ESTIMATE_FOR_MS
        {
            return Ok(Explained { rows: rows.clone(), estimated: true });
        }
        let rows = self.strategy.estimate(&request, &states, ESTIMATE_DRAWS)?;
        *cached = Some((now, rows.clone()));
        Ok(Explained { rows, estimated: true })
    }

    /// A request record for looking, not routing (`explain`): it does not advance
    /// the sequence.
    fn probe_request(&self, now: u64) -> wit::Request {
        wit::Request {
            route: self.strategy_index,
            sequence: self.sequence.load(Ordering::Relaxed),
            random: 0,
            now_ms: now,
            stream: false,
        }
    }

    /// The host's own order, used when the strategy plugin fails: enabled backends,
    /// healthy ones first by priority then weight, then the unhealthy ones least
    /// recently failed first.
    pub fn fallback_order(&self, states: &[f64]) -> Vec<u32> {
        let state = |i: usize| states.get(i * flat::STATE..).unwrap_or(&[]);
        let mut healthy: Vec<u32> = Vec::new();
        let mut unhealthy: Vec<u32> = Vec::new();
        for (i, b) in self.backends.iter().enumerate() {
            if !b.enabled() {
                continue;
            }
            if flat::healthy(state(i)) { healthy.push(i as u32) } else { unhealthy.push(i as u32) }
        }
        healthy.sort_by(|&a, &b| {
            let (x, y) = (&self.backends[a as usize].config, &self.backends[b as usize].config);
            x.priority.cmp(&y.priority).then(y.weight.total_cmp(&x.weight))
        });
        unhealthy.sort_by_key(|&i| flat::last_failure_ms(state(i as usize)));
        healthy.extend(unhealthy);
        healthy
    }

    /// Keep the strategy's answer honest: in range, enabled, no repeats. Also says
    /// how many indices were dropped.
    pub fn sanitize(&self, mut order: Vec<u32>) -> (Vec<u32>, usize) {
        let answered = order.len();
        // A bitmask for up to 64 backends, a table beyond.
        let mut small = 0u64;
        let mut large = if self.backends.len() > 64 { vec![false; self.backends.len()] } else { Vec::new() };
        order.retain(|&i| {
            let Some(b) = self.backends.get(i as usize) else { return false };
            let seen = match large.get_mut(i as usize) {
                Some(flag) => std::mem::replace(flag, true),
                None => {
                    let bit = 1u64 << i;
                    let seen = small & bit != 0;
                    small |= bit;
                    seen
                }
            };
            !seen && b.enabled()
        });
        let dropped = answered - order.len();
        (order, dropped)
    }

    /// Find a backend by the debug pin "provider" or "provider:model".
    pub fn pinned(&self, pin: &str) -> Option<u32> {
        let (provider, model) = match pin.split_once(':') {
            Some((p, m)) => (p, Some(m)),
            None => (pin, None),
        };
        self.backends
            .iter()
            .position(|b| b.enabled() && b.config.provider == provider && model.is_none_or(|m| b.config.model == m))
            .map(|i| i as u32)
    }

    /// Record one attempt: health first, then the outcome goes to the strategy
    /// (with its next `select`), whose answer (if any) becomes the backend's kept score.
    pub fn record(&self, index: u32, outcome: Outcome, latency_ms: f64, policy: &CircuitPolicy) {
        let Some(backend) = self.backends.get(index as usize) else { return };
        let now = now_ms();
        if !self.strategy.compiled().observes {
            backend.health.record(outcome, latency_ms, now, policy);
            return;
        }
        let before = backend_state(&backend.health, now, policy);
        backend.health.record(outcome, latency_ms, now, policy);
        let wit_outcome = match outcome {
            Outcome::Success => wit::Outcome::Success,
            Outcome::ClientError => wit::Outcome::Client,
            Outcome::Failure(class) => match class {
                ErrorClass::Network => wit::Outcome::Network,
                ErrorClass::Timeout => wit::Outcome::Timeout,
                ErrorClass::Auth => wit::Outcome::Auth,
                ErrorClass::RateLimit => wit::Outcome::RateLimit,
                ErrorClass::Server => wit::Outcome::Server,
                ErrorClass::Model => wit::Outcome::Model,
            },
        };
        self.strategy.note(self.strategy_index, index, wit_outcome, latency_ms, now, &before, &backend.health);
    }
}

/// What a strategy sees of a backend now.
pub fn backend_state(health: &BackendHealth, now: u64, policy: &CircuitPolicy) -> BackendState {
    let v = health.view(now, policy);
    BackendState {
        healthy: v.healthy(now),
        circuit: match v.circuit {
            CircuitView::Closed => wit::Circuit::Closed,
            CircuitView::Open => wit::Circuit::Open,
            CircuitView::HalfOpen { .. } => wit::Circuit::HalfOpen,
        },
        recovery_factor: v.circuit.recovery_factor(),
        latency_ms: v.latency_ms,
        in_flight: v.in_flight,
        consecutive_failures: v.consecutive_failures,
        last_failure_ms: v.last_failure_ms,
        // Indexed by `ErrorClass`, the order the contract lists them in.
        errors: v.errors,
        score: v.score,
        score_updated_ms: v.score_updated_ms,
    }
}

/// The strategy-facing description of a backend, sent once per config change.
pub fn to_wit_info(b: &Backend, provider_enabled: bool) -> wit::BackendInfo {
    wit::BackendInfo {
        provider: b.provider.clone(),
        model: b.model.clone(),
        weight: b.weight,
        priority: b.priority,
        enabled: b.enabled && provider_enabled,
        billing: match b.billing_mode {
            BillingMode::PerToken => wit::BillingMode::PerToken,
            BillingMode::PerRequest => wit::BillingMode::PerRequest,
        },
        tags: b.tags.clone(),
    }
}
