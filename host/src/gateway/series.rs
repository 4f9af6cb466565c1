//! A route's metric series, looked up in their families once and kept, so a request
//! updates its counters and histograms without building label strings or hashing
//! them (the families stay the source of truth for `/metrics`).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock, RwLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::provider::ProviderRuntime;
use crate::health::Outcome;
use crate::metrics::genai::{self, Operation};
use crate::metrics::history::Track;
use crate::metrics::{AttemptLabels, Metrics, ModelLabels, RequestLabels, TokenLabels};
use crate::relay::usage::Usage;

/// The series of one route (model).
#[derive(Default)]
pub struct RouteSeries {
    request_seconds: OnceLock<Histogram>,
    first_byte_seconds: OnceLock<Histogram>,
    retries: OnceLock<Counter>,
    overhead_seconds: OnceLock<Histogram>,
    /// Prompt and completion token counters by user.
    tokens: RwLock<HashMap<String, [Counter; 2]>>,
    /// Cost counters by user.
    cost: RwLock<HashMap<String, Counter<f64, AtomicU64>>>,
}

impl RouteSeries {
    pub fn request_seconds(&self, metrics: &Metrics, route: &str) -> &Histogram {
        self.request_seconds.get_or_init(|| metrics.request_seconds.get_or_create(&model(route)).clone())
    }

    pub fn first_byte_seconds(&self, metrics: &Metrics, route: &str) -> &Histogram {
        self.first_byte_seconds.get_or_init(|| metrics.first_byte_seconds.get_or_create(&model(route)).clone())
    }

    pub fn overhead_seconds(&self, metrics: &Metrics, route: &str) -> &Histogram {
        self.overhead_seconds.get_or_init(|| metrics.overhead_seconds.get_or_create(&model(route)).clone())
    }

    pub fn retries(&self, metrics: &Metrics, route: &str) -> &Counter {
        self.retries.get_or_init(|| metrics.retries.get_or_create(&model(route)).clone())
    }

    pub fn count_tokens(&self, metrics: &Metrics, route: &str, user: &str, usage: Usage) {
        let counts = [usage.prompt_tokens, usage.completion_tokens];
        if let Some(counters) = self.tokens.read().unwrap_or_else(|p| p.into_inner()).get(user) {
            counters.iter().zip(counts).for_each(|(c, n)| {
                c.inc_by(n);
            });
            return;
        }
        let counters = ["prompt", "completion"].map(|kind| {
            let labels = TokenLabels { user: user.to_string(), model: route.to_string(), kind: kind.to_string() };
            metrics.tokens.get_or_create(&labels).clone()
        });
        counters.iter().zip(counts).for_each(|(c, n)| {
            c.inc_by(n);
        });
        self.tokens.write().unwrap_or_else(|p| p.into_inner()).insert(user.to_string(), counters);
    }
}

impl RouteSeries {
    pub fn count_cost(&self, metrics: &Metrics, route: &str, user: &str, cost: f64) {
        if let Some(counter) = self.cost.read().unwrap_or_else(|p| p.into_inner()).get(user) {
            counter.inc_by(cost);
            return;
        }
        let labels = crate::metrics::CostLabels { user: user.to_string(), model: route.to_string() };
        let counter = metrics.cost.get_or_create(&labels).clone();
        counter.inc_by(cost);
        self.cost.write().unwrap_or_else(|p| p.into_inner()).insert(user.to_string(), counter);
    }
}

/// One backend's series on one route: its attempts by outcome, the GenAI client
/// metrics, its requests by status class and its last hour. Label sets are built
/// once per series, on first use, never per request.
pub struct BackendSeries {
    route: String,
    backend: Arc<str>,
    provider_name: &'static str,
    request_model: String,
    server_address: String,
    attempts: [OnceLock<Counter>; Outcome::COUNT],
    duration: [[OnceLock<Histogram>; Outcome::COUNT]; Operation::COUNT],
    first_chunk: [OnceLock<Histogram>; Operation::COUNT],
    tokens: [[OnceLock<Histogram>; 2]; Operation::COUNT],
    /// Requests this backend answered on its route, by status class.
    pub requests: RequestCounters,
    pub history: Arc<Track>,
}

/// One finished attempt, as the series record it.
pub struct Attempted {
    pub outcome: Outcome,
    /// Time to the answer (streams: to the first chunk), in ms.
    pub latency_ms: f64,
    /// The whole upstream operation (streams: to the last chunk).
    pub duration: std::time::Duration,
    pub operation: Option<Operation>,
}

impl BackendSeries {
    pub fn new(metrics: &Metrics, route: &str, backend: &Arc<str>, provider: &ProviderRuntime, model: &str) -> Self {
        let server_address = provider
            .spec
            .base_url
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.host().map(str::to_string))
            .unwrap_or_default();
        BackendSeries {
            route: route.to_string(),
            backend: backend.clone(),
            provider_name: genai::provider_name(provider.spec.backend),
            request_model: model.to_string(),
            server_address,
            attempts: Default::default(),
            duration: Default::default(),
            first_chunk: Default::default(),
            tokens: Default::default(),
            requests: RequestCounters::default(),
            history: metrics.history.track(route, backend),
        }
    }

    /// Count one attempt: `berry_upstream_attempts_total`, the GenAI duration, the
    /// history.
    pub fn attempted(&self, metrics: &Metrics, a: &Attempted) {
        let outcome = a.outcome;
        self.attempts[outcome.index()]
            .get_or_init(|| {
                let labels = AttemptLabels {
                    model: self.route.clone(),
                    backend: self.backend.to_string(),
                    outcome: outcome.as_str().to_string(),
                };
                metrics.attempts.get_or_create(&labels).clone()
            })
            .inc();
        let failed = matches!(outcome, Outcome::Failure(_));
        self.history.record(crate::health::now_ms(), a.latency_ms, failed);
        if let Some(op) = a.operation {
            let error = if failed { outcome.as_str() } else { "" };
            self.duration[op as usize][outcome.index()]
                .get_or_init(|| metrics.genai.duration.get_or_create(&self.labels(op, error)).clone())
                .observe(a.duration.as_secs_f64());
        }
    }

    /// A stream's first chunk arrived `after` its request was sent.
    pub fn first_chunk(&self, metrics: &Metrics, op: Option<Operation>, after: std::time::Duration) {
        if let Some(op) = op {
            self.first_chunk[op as usize]
                .get_or_init(|| metrics.genai.first_chunk.get_or_create(&self.labels(op, "")).clone())
                .observe(after.as_secs_f64());
        }
    }

    /// The tokens an answer reported (`gen_ai_client_token_usage`).
    pub fn used(&self, metrics: &Metrics, op: Option<Operation>, usage: &Usage) {
        let Some(op) = op else { return };
        for (i, (kind, n)) in
            [("input", usage.prompt_tokens), ("output", usage.completion_tokens)].into_iter().enumerate()
        {
            self.tokens[op as usize][i]
                .get_or_init(|| {
                    let l = self.labels(op, "");
                    let labels = genai::TokenLabels {
                        gen_ai_operation_name: l.gen_ai_operation_name,
                        gen_ai_provider_name: l.gen_ai_provider_name,
                        gen_ai_request_model: l.gen_ai_request_model,
                        server_address: l.server_address,
                        gen_ai_token_type: kind,
                    };
                    metrics.genai.tokens.get_or_create(&labels).clone()
                })
                .observe(n as f64);
        }
    }

    /// `gen_ai.provider.name` and `server.address` of this backend.
    pub fn genai_names(&self) -> (&'static str, &str) {
        (self.provider_name, &self.server_address)
    }

    /// Attempts on this backend for this route since start, by outcome (for the
    /// status page: read from the metric family, so a reload does not reset them).
    pub fn attempt_counts(&self, metrics: &Metrics) -> [u64; Outcome::COUNT] {
        let mut counts = [0; Outcome::COUNT];
        for outcome in Outcome::ALL {
            let labels = AttemptLabels {
                model: self.route.clone(),
                backend: self.backend.to_string(),
                outcome: outcome.as_str().to_string(),
            };
            counts[outcome.index()] = metrics.attempts.get(&labels).map_or(0, |c| c.get());
        }
        counts
    }

    fn labels(&self, op: Operation, error: &'static str) -> genai::OperationLabels {
        genai::OperationLabels {
            gen_ai_operation_name: op.as_str(),
            gen_ai_provider_name: self.provider_name,
            gen_ai_request_model: self.request_model.clone(),
            server_address: self.server_address.clone(),
            error_type: error,
        }
    }
}

/// A backend's request counters on its route, one per status class (1xx … 5xx).
#[derive(Default)]
pub struct RequestCounters([OnceLock<Counter>; 5]);

impl RequestCounters {
    pub fn count(&self, metrics: &Metrics, route: &str, backend: &str, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5);
        self.0[class - 1]
            .get_or_init(|| {
                let labels = RequestLabels {
                    model: route.to_string(),
                    backend: backend.to_string(),
                    status: crate::metrics::status_class(status),
                };
                metrics.requests.get_or_create(&labels).clone()
            })
            .inc();
    }
}

fn model(route: &str) -> ModelLabels {
    ModelLabels { model: route.to_string() }
}
