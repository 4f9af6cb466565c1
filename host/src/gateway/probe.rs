//! Active health probes, off the request path.
//!
//! Only `per_token` backends are probed (a models list or a one-token chat, per
//! provider); `per_request` backends cost money per call and recover through real
//! traffic only. Healthy backends are probed every `health_check_interval_seconds`,
//! unhealthy ones every `recovery_check_interval_seconds`. Results feed the same
//! circuit breaker as real requests: a recovering backend walks its stages on probe
//! successes even while it receives no traffic.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, header};
use http_body_util::{BodyExt, Limited};

use super::{Gateway, RouteBackend, Snapshot};
use crate::config::{BillingMode, Probe};
use crate::health::{BackendHealth, ErrorClass, Outcome, now_ms};
use crate::relay::{Endpoint, classify_transport};

/// Largest probe answer read (then dropped).
const MAX_PROBE_BODY: usize = 1 << 20;

/// Run probes for as long as the gateway lives.
pub fn spawn(gateway: Weak<Gateway>) {
    tokio::spawn(async move {
        let mut next_due: HashMap<(Arc<str>, Arc<str>), Instant> = HashMap::new();
        loop {
            let Some(snapshot) = gateway.upgrade().map(|g| g.snapshot()) else { return };
            let settings = &snapshot.config.settings;
            let tick = settings.health_check_interval.min(settings.recovery_check_interval).min(Duration::from_secs(5));
            probe_due(&snapshot, &mut next_due).await;
            drop(snapshot);
            tokio::time::sleep(tick).await;
        }
    });
}

/// One probe: what to call, and which backends its answer speaks for.
struct Probing<'a> {
    backends: Vec<&'a RouteBackend>,
    endpoint: Endpoint,
    body: Bytes,
}

async fn probe_due(snapshot: &Snapshot, next_due: &mut HashMap<(Arc<str>, Arc<str>), Instant>) {
    let settings = &snapshot.config.settings;
    let now = Instant::now();
    let mut seen = std::collections::HashSet::new();
    // A models probe speaks for every due backend of its provider: one call each.
    let mut by_provider: HashMap<&str, Probing> = HashMap::new();
    let mut chats: Vec<Probing> = Vec::new();
    for backend in snapshot.route_order.iter().filter(|r| r.enabled).flat_map(|r| r.backends.iter()) {
        let key = (backend.health.provider.clone(), backend.health.model.clone());
        if !backend.enabled() || backend.config.billing_mode != BillingMode::PerToken || !seen.insert(key.clone()) {
            continue;
        }
        let healthy = backend.health.view(now_ms(), &snapshot.policy).circuit == crate::health::CircuitView::Closed;
        let interval = if healthy { settings.health_check_interval } else { settings.recovery_check_interval };
        let due = next_due.entry(key).or_insert(now + interval);
        if now < *due {
            continue;
        }
        *due = now + interval;
        match backend.provider.probe {
            Probe::None => {}
            Probe::Models => by_provider
                .entry(backend.provider.key.as_str())
                .or_insert_with(|| Probing { backends: Vec::new(), endpoint: Endpoint::Models, body: Bytes::new() })
                .backends
                .push(backend),
            Probe::Chat => {
                let body = serde_json::json!({
                    "model": backend.config.model,
                    "messages": [{ "role": "user", "content": "ping" }],
                    "max_tokens": 1,
                });
                chats.push(Probing {
                    backends: vec![backend],
                    endpoint: Endpoint::ChatCompletions,
                    body: Bytes::from(body.to_string()),
                });
            }
        }
    }
    let probes = by_provider.into_values().chain(chats).map(|p| run(snapshot, p, settings.health_check_timeout));
    futures_util::future::join_all(probes).await;
}

async fn run(snapshot: &Snapshot, probe: Probing<'_>, timeout: Duration) {
    let Some(first) = probe.backends.first() else { return };
    let method = if probe.endpoint == Endpoint::Models { Method::GET } else { Method::POST };
    let Some(mut request) = first.provider.request(method, probe.endpoint, probe.body) else { return };
    request.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    let started = Instant::now();
    let exchange = async {
        let response = snapshot.client.inner().request(request).await.map_err(classify_transport)?;
        let status = response.status();
        // Read the answer so the connection returns to the pool.
        let _ = Limited::new(response.into_body(), MAX_PROBE_BODY).collect().await;
        Ok::<_, (ErrorClass, String)>(status)
    };
    let outcome = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Outcome::Failure(ErrorClass::Timeout),
        Ok(Err((class, _))) => Outcome::Failure(class),
        Ok(Ok(status)) if status.is_success() => Outcome::Success,
        Ok(Ok(status)) => Outcome::Failure(ErrorClass::from_status(status.as_u16()).unwrap_or(ErrorClass::Server)),
    };
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    for backend in &probe.backends {
        record(&backend.health, outcome, latency_ms, snapshot);
        tracing::debug!(backend = %backend.label, ?outcome, "health probe");
    }
}

fn record(health: &BackendHealth, outcome: Outcome, latency_ms: f64, snapshot: &Snapshot) {
    // Probe latency (a models list) says little about a model's answer time: keep
    // it out of the latency average, count only the outcome.
    let latency = if outcome == Outcome::Success { f64::NAN } else { latency_ms };
    health.record(outcome, latency, now_ms(), &snapshot.policy);
}
