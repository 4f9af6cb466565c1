//! `/status`: the live dashboard an operator keeps open, and `/status.json`, the data
//! it polls. The page is one file embedded in the binary (no CDN, no build step).

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};

use super::body::{BerryBody, full, json_response};
use super::info::backend_json;
use crate::gateway::Snapshot;
use crate::health::now_ms;

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
    json_response(
        StatusCode::OK,
        &json!({ "generated_at_ms": now, "models": models, "cluster": cluster, "usage_today": usage }),
    )
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
