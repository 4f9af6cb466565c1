//! Read-only endpoints: the model list and the health reports.

use http::{HeaderMap, Response, StatusCode};
use serde_json::{Value, json};

use super::auth::{allowed, authenticate};
use super::body::{BerryBody, json_response};
use super::context::RequestLog;
use crate::error::GatewayError;
use crate::gateway::Snapshot;
use crate::health::{CircuitView, ErrorClass, now_ms};

/// `GET /v1/models`: the enabled models this caller may use, in OpenAI's list format.
pub fn models(
    snapshot: &Snapshot,
    headers: &HeaderMap,
    log: &mut RequestLog,
) -> Result<Response<BerryBody>, GatewayError> {
    let principal = authenticate(snapshot, headers, "")?;
    log.principal = Some(principal.clone());
    let data: Vec<Value> = snapshot
        .route_order
        .iter()
        .filter(|r| r.enabled && allowed(&principal, &r.name))
        .map(|r| model_json(r))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "object": "list", "data": data })))
}

/// `GET /v1/models/{id}`: one model, if it exists and this caller may use it.
pub fn model(
    snapshot: &Snapshot,
    headers: &HeaderMap,
    id: &str,
    log: &mut RequestLog,
) -> Result<Response<BerryBody>, GatewayError> {
    let principal = authenticate(snapshot, headers, "")?;
    log.principal = Some(principal.clone());
    match snapshot.routes.get(id).filter(|r| r.enabled && allowed(&principal, &r.name)) {
        Some(r) => Ok(json_response(StatusCode::OK, &model_json(r))),
        None => Err(GatewayError::not_found(
            "model_not_found",
            format!("The model '{}' does not exist.", crate::telemetry::clean::clip(id)),
        )
        .with_param("model")),
    }
}

/// A model as OpenAI lists it; `created` is when it first appeared in this
/// gateway's configuration.
fn model_json(route: &crate::gateway::Route) -> Value {
    json!({ "id": route.name, "object": "model", "created": route.created, "owned_by": "berry" })
}

/// Whether at least one enabled route has an enabled backend whose circuit is not open.
fn can_serve(snapshot: &Snapshot, now: u64) -> bool {
    snapshot
        .route_order
        .iter()
        .filter(|r| r.enabled)
        .any(|r| r.backends.iter().any(|b| b.enabled() && b.health.view(now, &snapshot.policy).circuit.healthy()))
}

/// `GET /v1/health`: short status; 200 while any route can be served.
pub fn short_health(snapshot: &Snapshot) -> Response<BerryBody> {
    let ok = can_serve(snapshot, now_ms());
    let (status, word) = if ok { (StatusCode::OK, "ok") } else { (StatusCode::SERVICE_UNAVAILABLE, "unavailable") };
    json_response(status, &json!({ "status": word }))
}

/// One backend's health as JSON (shared by `/health` and the status page).
pub fn backend_json(b: &crate::gateway::RouteBackend, v: &crate::health::HealthView) -> Value {
    let (circuit, stage) = match v.circuit {
        CircuitView::Closed => ("closed", None),
        CircuitView::Open => ("open", None),
        CircuitView::HalfOpen { stage } => ("half_open", Some(stage)),
    };
    let errors: serde_json::Map<String, Value> =
        ErrorClass::ALL.iter().map(|c| (c.as_str().to_string(), json!(v.errors[*c as usize]))).collect();
    json!({
        "provider": b.config.provider,
        "model": b.config.model,
        "enabled": b.enabled(),
        "healthy": b.enabled() && v.circuit.healthy(),
        "circuit": circuit,
        "recovery_stage": stage,
        "recovery_factor": v.circuit.recovery_factor(),
        "latency_ms": v.latency_ms,
        "in_flight": v.in_flight,
        "consecutive_failures": v.consecutive_failures,
        "successes": v.successes,
        "errors": errors,
        "last_failure_ms": (v.last_failure_ms > 0).then_some(v.last_failure_ms),
        "rate_limited_until_ms": (v.cooling_until_ms > now_ms()).then_some(v.cooling_until_ms),
        "score": v.score,
    })
}

/// `GET /health`: every model's backends with circuit state, recovery stage,
/// latency and error counts. 200 while any route can be served, else 503. (With
/// `protect_health`, callers without the admin token get [`short_health`].)
pub fn health(snapshot: &Snapshot) -> Response<BerryBody> {
    snapshot.deliver_outcomes();
    let now = now_ms();
    let models: Vec<Value> = snapshot
        .route_order
        .iter()
        .map(|route| {
            let backends: Vec<Value> =
                route.backends.iter().map(|b| backend_json(b, &b.health.view(now, &snapshot.policy))).collect();
            let healthy =
                route.backends.iter().any(|b| b.enabled() && b.health.view(now, &snapshot.policy).circuit.healthy());
            json!({
                "model": route.name,
                "enabled": route.enabled,
                "strategy": &**route.strategy.name(),
                "healthy": route.enabled && healthy,
                "backends": backends,
            })
        })
        .collect();
    let providers: Vec<Value> = snapshot
        .config
        .providers
        .values()
        .map(|p| json!({ "provider": p.key, "name": p.name, "enabled": p.enabled }))
        .collect();
    let ok = can_serve(snapshot, now);
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut body = json!({ "status": if ok { "ok" } else { "unavailable" }, "providers": providers, "models": models });
    if let Some(cluster) = &snapshot.cluster {
        body["cluster"] = cluster.report();
    }
    json_response(status, &body)
}
