//! `/status`: the live dashboard an operator keeps open; `/status.json`, the data it
//! polls; `/status/history.json`, the last hour it draws as charts. The page is one file embedded in the binary (no CDN, no build step).

use std::collections::HashMap;

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};

use super::body::{BerryBody, full, json_response};
use super::info::backend_json;
use crate::gateway::Snapshot;
use crate::health::{Outcome, now_ms};
use crate::metrics::history::{self, Counts};

const PAGE: &str = include_str!("status.html");

pub fn page() -> Response<BerryBody> {
    let mut response = Response::new(full(PAGE));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    // The page only talks to its own origin.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"),
    );
    response
}

/// Every model's backends with health, circuit, recovery, latency, counters and the
/// strategy's own effective weight and pick probability.
pub async fn data(snapshot: &Snapshot) -> Response<BerryBody> {
    snapshot.deliver_outcomes();
    let now = now_ms();
    let models: Vec<Value> = snapshot
        .route_order
        .iter()
        .map(|route| {
            let explained = route.explain(now, &snapshot.policy).unwrap_or_default();
            let backends: Vec<Value> = route
                .backends
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let mut v = backend_json(b, &b.health.view(now, &snapshot.policy));
                    v["weight"] = json!(b.config.weight);
                    v["effective_weight"] = json!(explained.get(i).map(|e| e.weight));
                    v["probability"] = json!(explained.get(i).map(|e| e.probability));
                    // This model's attempts on the backend (the health counters
                    // above are the backend's, across every model that uses it).
                    let counts = b.series.attempt_counts(&snapshot.metrics);
                    let outcomes: serde_json::Map<String, Value> =
                        Outcome::ALL.iter().map(|o| (o.as_str().to_string(), json!(counts[o.index()]))).collect();
                    v["attempts"] = Value::Object(outcomes);
                    v
                })
                .collect();
            json!({
                "model": route.name,
                "enabled": route.enabled,
                "strategy": &**route.strategy.name(),
                // The strategy does not explain itself: its probabilities were sampled.
                "estimated": explained.estimated,
                "backends": backends,
            })
        })
        .collect();
    let cluster = snapshot.cluster.as_ref().map(|c| c.report());
    let usage = usage_today(snapshot, now).await;
    // A backend shared by several models is one backend.
    let mut backends: HashMap<&str, bool> = HashMap::new();
    for b in snapshot.route_order.iter().flat_map(|r| &r.backends) {
        let healthy = b.enabled() && b.health.view(now, &snapshot.policy).circuit.healthy();
        *backends.entry(&b.label).or_default() |= healthy;
    }
    let summary = json!({
        "models": models.len(),
        "backends": backends.len(),
        "healthy_backends": backends.values().filter(|h| **h).count(),
    });
    json_response(
        StatusCode::OK,
        &json!({
            "generated_at_ms": now,
            "summary": summary,
            "models": models,
            "cluster": cluster,
            "usage_today": usage,
        }),
    )
}

/// `/status/history.json`: the last hour of every model and backend, one point per
/// slot (oldest first): attempts, failures, p50 and p99 latency (ms, `null` for an
/// empty slot); each model's `total` merges its backends.
pub fn history(snapshot: &Snapshot) -> Response<BerryBody> {
    let now = now_ms();
    let models: Vec<Value> = snapshot
        .route_order
        .iter()
        .map(|route| {
            let mut total = vec![Counts::default(); history::SLOTS];
            let backends: Vec<Value> = route
                .backends
                .iter()
                .map(|b| {
                    let counts = b.series.history.counts(now);
                    total.iter_mut().zip(&counts).for_each(|(t, c)| t.add(c));
                    let mut v = points(&counts);
                    v["backend"] = json!(&*b.label);
                    v
                })
                .collect();
            json!({ "model": route.name, "total": points(&total), "backends": backends })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "generated_at_ms": now,
            "slot_seconds": history::SLOT_MS / 1000,
            "end_ms": (now / history::SLOT_MS + 1) * history::SLOT_MS,
            "models": models,
        }),
    )
}

fn points(counts: &[Counts]) -> Value {
    let round = |v: Option<f64>| v.map(|ms| (ms * 100.0).round() / 100.0);
    json!({
        "attempts": counts.iter().map(|c| c.attempts).collect::<Vec<_>>(),
        "failures": counts.iter().map(|c| c.failures).collect::<Vec<_>>(),
        "p50_ms": counts.iter().map(|c| round(c.quantile_ms(0.5))).collect::<Vec<_>>(),
        "p99_ms": counts.iter().map(|c| round(c.quantile_ms(0.99))).collect::<Vec<_>>(),
    })
}

/// Today's (UTC) spend and tokens by user and model, dearest first (at most 20
/// rows), from the ledger; `null` without one.
async fn usage_today(snapshot: &Snapshot, now: u64) -> Value {
    use crate::usage::query::{self, Key};
    let Some(ledger) = &snapshot.accounting.ledger else { return Value::Null };
    let path = ledger.path().to_path_buf();
    let midnight = now - now % crate::usage::budget::DAY_MS;
    let by = [Key::User, Key::Model];
    let rows = tokio::task::spawn_blocking(move || query::summary(&path, midnight, now + 1, &by)).await;
    match rows {
        Ok(Ok(rows)) => json!(rows.iter().take(20).map(|r| r.json(&by)).collect::<Vec<_>>()),
        _ => Value::Null,
    }
}
