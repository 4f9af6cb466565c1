//! Admin endpoints, behind `settings.admin_token`. Today: the effective weights every
//! strategy uses (`/smart-ai/weights`), computed by the strategy plugin's own code.

use http::{HeaderMap, Response, StatusCode};
use serde_json::{Value, json};

use super::auth::token;
use super::body::{BerryBody, json_response};
use crate::error::GatewayError;
use crate::gateway::{Route, Snapshot};
use crate::health::{CircuitView, now_ms};

/// Admit the request only with the admin token (compared in constant time).
pub fn require_admin(snapshot: &Snapshot, headers: &HeaderMap) -> Result<(), GatewayError> {
    let Some(expected) = snapshot.config.settings.admin_token.as_ref().filter(|t| !t.is_empty()) else {
        return Err(GatewayError::forbidden("admin_disabled", "The admin API is disabled: set settings.admin_token."));
    };
    let presented = token(headers);
    if presented.is_empty() {
        return Err(GatewayError::unauthorized(
            "missing_api_key",
            "The admin API needs the admin token as a bearer token.",
        ));
    }
    if !constant_time_eq(presented.as_bytes(), expected.expose().as_bytes()) {
        return Err(GatewayError::unauthorized("invalid_admin_token", "Incorrect admin token."));
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Length is not secret (tokens have public formats); the bytes are.
    a.len() == b.len() && std::hint::black_box(a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y))) == 0
}

/// `GET /smart-ai/weights` (every model) and `GET /smart-ai/models/{model}/weights`.
pub fn weights(
    snapshot: &Snapshot,
    headers: &HeaderMap,
    model: Option<&str>,
) -> Result<Response<BerryBody>, GatewayError> {
    require_admin(snapshot, headers)?;
    let routes: Vec<&std::sync::Arc<Route>> = match model {
        None => snapshot.route_order.iter().collect(),
        Some(name) => vec![snapshot.routes.get(name).ok_or_else(|| {
            GatewayError::not_found("model_not_found", format!("The model '{name}' does not exist."))
        })?],
    };
    let models: Vec<Value> = routes.into_iter().map(|r| route_weights(snapshot, r)).collect();
    Ok(json_response(StatusCode::OK, &json!({ "models": models })))
}

fn route_weights(snapshot: &Snapshot, route: &Route) -> Value {
    let now = now_ms();
    let explained = route.explain(now, &snapshot.policy);
    let error = explained.as_ref().err().map(ToString::to_string);
    let estimated = explained.as_ref().is_ok_and(|e| e.estimated);
    let explained = explained.unwrap_or_default();
    let backends: Vec<Value> = route
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let e = explained.get(i);
            let factors: serde_json::Map<String, Value> =
                e.map(|e| e.factors.iter().map(|(k, v)| (k.clone(), json!(v))).collect()).unwrap_or_default();
            let circuit = match b.health.view(now, &snapshot.policy).circuit {
                CircuitView::Closed => "closed",
                CircuitView::Open => "open",
                CircuitView::HalfOpen { .. } => "half_open",
            };
            json!({
                "provider": b.config.provider,
                "model": b.config.model,
                "enabled": b.enabled(),
                "circuit": circuit,
                "configured_weight": b.config.weight,
                "effective_weight": e.map(|e| e.weight),
                "probability": e.map(|e| e.probability),
                "factors": factors,
            })
        })
        .collect();
    json!({
        "model": route.name,
        "strategy": &**route.strategy.name(),
        "estimated": estimated,
        "error": error,
        "backends": backends,
    })
}
