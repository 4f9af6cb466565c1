//! A route's metric series, looked up in their families once and kept, so a request
//! updates its counters and histograms without building label strings or hashing
//! them (the families stay the source of truth for `/metrics`).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{OnceLock, RwLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::metrics::{Metrics, ModelLabels, RequestLabels, TokenLabels};
use crate::relay::usage::Usage;

/// The series of one route (model).
#[derive(Default)]
pub struct RouteSeries {
    request_seconds: OnceLock<Histogram>,
    first_byte_seconds: OnceLock<Histogram>,
    retries: OnceLock<Counter>,
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
