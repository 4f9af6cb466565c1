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
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};

use super::{Gateway, RouteBackend, Snapshot};
use crate::config::{BillingMode, Probe};
use crate::health::{BackendHealth, ErrorClass, Outcome, now_ms};
use crate::relay::{Endpoint, RequestBody, classify_transport};

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

/// One probe: the request, and which backends its answer speaks for.
struct Probing<'a> {
    backends: Vec<&'a RouteBackend>,
    request: Request<Full<Bytes>>,
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
        let provider = &backend.provider;
        match provider.probe {
            Probe::None => {}
            Probe::Models => {
                if let Some(probing) = by_provider.get_mut(provider.key.as_str()) {
                    probing.backends.push(backend);
                } else if let Some(uri) = provider.models_url() {
                    let request = provider.request(Method::GET, uri.clone(), Bytes::new());
                    by_provider.insert(provider.key.as_str(), Probing { backends: vec![backend], request });
                }
            }
            Probe::Chat => {
                if let Some(request) = chat_probe(backend) {
                    chats.push(Probing { backends: vec![backend], request });
                }
            }
        }
    }
    let probes = by_provider.into_values().chain(chats).map(|p| run(snapshot, p, settings.health_check_timeout));
    futures_util::future::join_all(probes).await;
}

/// A one-token chat completion for `backend`, in its provider's format.
fn chat_probe(backend: &RouteBackend) -> Option<Request<Full<Bytes>>> {
    let target = backend.target(Endpoint::ChatCompletions, false)?;
    let chat = serde_json::json!({
        "model": backend.config.model,
        "messages": [{ "role": "user", "content": "ping" }],
        "max_tokens": 1,
    });
    let body = RequestBody::parse(Bytes::from(chat.to_string())).ok()?;
    let bytes = target.plan.body(&body, backend.provider.adapter, &backend.config.model).ok()?;
    let mut request = backend.provider.request(Method::POST, target.uri.clone(), bytes);
    request.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    Some(request)
}

async fn run(snapshot: &Snapshot, probe: Probing<'_>, timeout: Duration) {
    let started = Instant::now();
    let exchange = async {
        // Probes leave the way their provider's requests do (its proxy, if any).
        let route = probe.backends.first().map(|b| b.provider.route).unwrap_or_default();
        let response = snapshot.client.request(route, probe.request).await.map_err(classify_transport)?;
        let status = response.status();
        // Read the answer so the connection returns to the pool.
        let body = Limited::new(response.into_body(), MAX_PROBE_BODY).collect().await.map(|c| c.to_bytes());
        Ok::<_, (ErrorClass, String)>((status, body.unwrap_or_default()))
    };
    let Some(first) = probe.backends.first() else { return };
    let outcome = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Outcome::Failure(ErrorClass::Timeout),
        Ok(Err((class, _))) => Outcome::Failure(class),
        Ok(Ok((status, _))) if status.is_success() => Outcome::Success,
        Ok(Ok((status, body))) => {
            Outcome::Failure(first.provider.adapter.classify(status.as_u16(), &body).unwrap_or(ErrorClass::Server))
        }
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
