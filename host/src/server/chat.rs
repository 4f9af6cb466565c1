//! The relayed endpoints (chat completions, completions, embeddings):
//! read → authenticate → parse → route → select/upstream/stream (in `relay`).

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::auth::{allowed, authenticate};
use super::body::BerryBody;
use super::context::RequestLog;
use crate::error::GatewayError;
use crate::gateway::Snapshot;
use crate::relay::{self, Endpoint, RequestBody};

pub async fn relay(
    snapshot: &Arc<Snapshot>,
    request: Request<Incoming>,
    endpoint: Endpoint,
    log: &mut RequestLog,
) -> Result<Response<BerryBody>, GatewayError> {
    let settings = &snapshot.config.settings;
    log.relay = true;
    let (parts, body) = request.into_parts();

    // === read === (bounded in size and time: a slow or huge upload cannot pin memory)
    let limit = settings.max_request_body_bytes;
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::payload_too_large(limit));
    }
    let bytes = read_body(body, limit, settings.request_timeout).await?;

    // === authenticate === (before reporting parse errors: strangers learn nothing)
    let parsed = RequestBody::parse(bytes);
    let model = parsed.as_ref().map_or("", |b| b.model.as_str());
    let principal = authenticate(snapshot, &parts.headers, model)?;
    log.user = Some(principal.id.clone());

    // === parse ===
    let body = parsed?;
    log.model = Some(body.model.clone());
    log.stream = body.stream;

    // === route ===
    let route = snapshot.routes.get(&body.model).filter(|r| r.enabled).ok_or_else(|| {
        GatewayError::not_found("model_not_found", format!("The model '{}' does not exist.", body.model))
            .with_param("model")
    })?;
    log.route = Some(route.name.clone());
    if !allowed(&principal, &body.model) {
        return Err(GatewayError::forbidden(
            "model_not_allowed",
            format!("You are not allowed to use the model '{}'.", body.model),
        ));
    }
    let pin = match &body.backend {
        None => None,
        Some(_) if !principal.admin => {
            return Err(GatewayError::forbidden("backend_pin_forbidden", "Only admin users may pin a backend.")
                .with_param("backend"));
        }
        Some(pin) => Some(route.pinned(pin).ok_or_else(|| {
            GatewayError::bad_request(
                "unknown_backend",
                format!("No enabled backend '{pin}' for model '{}'.", body.model),
            )
            .with_param("backend")
        })?),
    };

    // === rate limit ===
    let decision = snapshot.limiter.check(&principal.id, &principal.limits);
    if let Some(d) = decision.as_ref().filter(|d| !d.allowed) {
        snapshot.metrics.rate_limited.get_or_create(&crate::metrics::UserLabels { user: principal.id.clone() }).inc();
        let error = GatewayError::rate_limited(d.limit, d.reset);
        log.error = Some(error.code);
        let mut response = error.into_response();
        rate_limit_headers(response.headers_mut(), d);
        return Ok(response);
    }

    // === select → upstream → stream back ===
    let forwarded = relay::forward(relay::ForwardRequest {
        snapshot,
        route,
        endpoint,
        body: &body,
        user_tags: &principal.tags,
        pin,
        request_id: &log.request_id,
        user: &principal.id,
        started: log.started,
    })
    .await;
    log.backend = forwarded.backend;
    log.attempts = forwarded.attempts;
    let mut response = forwarded.result?;
    if let Some(d) = &decision {
        rate_limit_headers(response.headers_mut(), d);
    }
    Ok(response)
}

/// OpenAI's `x-ratelimit-*` request headers.
fn rate_limit_headers(headers: &mut http::HeaderMap, d: &crate::ratelimit::Decision) {
    headers.insert("x-ratelimit-limit-requests", http::HeaderValue::from(d.limit));
    headers.insert("x-ratelimit-remaining-requests", http::HeaderValue::from(d.remaining));
    if let Ok(v) = http::HeaderValue::try_from(format!("{:.3}s", d.reset.as_secs_f64())) {
        headers.insert("x-ratelimit-reset-requests", v);
    }
}

async fn read_body(body: Incoming, limit: usize, timeout: std::time::Duration) -> Result<Bytes, GatewayError> {
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(GatewayError::timeout_reading_body()),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(GatewayError::payload_too_large(limit))
        }
        Ok(Err(_)) => Err(GatewayError::bad_request("body_read_error", "Could not read the request body.")),
    }
}
