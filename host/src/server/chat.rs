//! The relayed endpoints (chat completions, completions, embeddings, responses,
//! messages): authenticate → rate limit → read → parse → route → budget →
//! select/upstream/stream (in `relay`).

use std::sync::Arc;

use http::{Request, Response, header};
use hyper::body::Incoming;

use super::auth::{allowed, authenticate};
use super::body::BerryBody;
use super::context::RequestLog;
use super::upload;
use crate::error::GatewayError;
use crate::gateway::Snapshot;
use crate::relay::{self, Endpoint, RequestBody};
use crate::telemetry::clean::clip;

pub async fn relay(
    snapshot: &Arc<Snapshot>,
    request: Request<Incoming>,
    endpoint: Endpoint,
    log: &mut RequestLog,
) -> Result<Response<BerryBody>, GatewayError> {
    let settings = &snapshot.config.settings;
    log.relay = true;
    let (parts, body) = request.into_parts();

    // === authenticate === (from the headers alone: a stranger's body is never read)
    let principal = authenticate(snapshot, &parts.headers, "")?;
    log.principal = Some(principal.clone());
    // From here on the request is a caller's: it goes into the usage ledger, however it ends.
    log.endpoint = Some(endpoint.upstream_path().trim_start_matches('/'));
    log.accounting = Some(snapshot.accounting.clone());

    // === rate limit === (before the body: a refused request costs its sender, not us)
    let decision = match &snapshot.cluster {
        None => snapshot.limiter.check(&principal.id, &principal.limits),
        Some(cluster) => cluster.check_rate(&snapshot.limiter, &principal.id, &principal.limits).await?,
    };
    if let Some(d) = decision.as_ref().filter(|d| !d.allowed) {
        snapshot.metrics.rate_limited.get_or_create(&crate::metrics::UserLabels { user: principal.id.clone() }).inc();
        let error = GatewayError::rate_limited(d.limit, d.reset);
        log.error = Some(error.code);
        let mut response = error.into_response_as(endpoint.dialect());
        rate_limit_headers(response.headers_mut(), d);
        return Ok(response);
    }

    // === read === (bounded in size, in time, and in memory across all requests)
    let limit = settings.max_request_body_bytes;
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::payload_too_large(limit));
    }
    let upload =
        upload::read(body, declared, limit, settings.request_timeout, &snapshot.body_budget, &principal).await?;

    // === parse ===
    let body = RequestBody::parse(upload.bytes.clone())?;
    log.model = Some(body.model.clone());
    log.stream = body.stream;
    let operation = crate::metrics::genai::operation_name(endpoint);
    let arrived = log.started.elapsed();
    log.trace.begin(snapshot.tracer.as_ref(), &parts.headers, operation, &body.model, arrived);

    // === route ===
    let route = snapshot.routes.get(&*body.model).filter(|r| r.enabled).ok_or_else(|| {
        GatewayError::not_found("model_not_found", format!("The model '{}' does not exist.", clip(&body.model)))
            .with_param("model")
    })?;
    log.route = Some(route.clone());
    if !allowed(&principal, &body.model) {
        return Err(GatewayError::forbidden(
            "model_not_allowed",
            format!("You are not allowed to use the model '{}'.", clip(&body.model)),
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
                format!("No enabled backend '{}' for model '{}'.", clip(pin), clip(&body.model)),
            )
            .with_param("backend")
        })?),
    };

    // === budget === (reserve what the request may use; settled when it ends)
    if let Some(budget) = snapshot.budgets.get(&principal.id) {
        let estimate = estimate(route, &body, upload.bytes.len());
        let budgets = &snapshot.accounting.budgets;
        let reserved = match &snapshot.cluster {
            None => budgets.reserve(&principal.id, budget, estimate, crate::health::now_ms()),
            Some(cluster) => cluster.reserve_budget(budgets, &principal.id, budget, estimate).await?,
        };
        match reserved {
            Ok(reservation) => log.reservation = Some(reservation),
            Err(refusal) => {
                let error = GatewayError::over_budget(refusal.limit, refusal.resets_ms);
                log.error = Some(error.code);
                return Ok(error.into_response_as(endpoint.dialect()));
            }
        }
    }

    // === select → upstream → stream back ===
    let mut response = relay::forward(relay::ForwardRequest {
        snapshot,
        route,
        endpoint,
        body: &body,
        user_tags: &principal.tags,
        pin,
        log,
        headers: &parts.headers,
        client_http2: parts.version == http::Version::HTTP_2,
    })
    .await?;
    if let Some(d) = &decision {
        rate_limit_headers(response.headers_mut(), d);
    }
    Ok(response)
}

/// What a request may use: its input (body bytes / 4, a generous token count for
/// text) and the output cap it asked for, at its route's dearest enabled backend.
fn estimate(route: &crate::gateway::Route, body: &RequestBody, body_bytes: usize) -> crate::usage::Amount {
    let input = (body_bytes as u64).div_ceil(4);
    let output = body.max_output_tokens.unwrap_or(0);
    let cost = route
        .backends
        .iter()
        .filter(|b| b.enabled())
        .map(|b| {
            let p = &b.config.prices;
            match b.config.billing_mode {
                crate::config::BillingMode::PerRequest => p.per_request,
                crate::config::BillingMode::PerToken => {
                    (input as f64 * p.input_per_mtok + output as f64 * p.output_per_mtok) / 1_000_000.0
                }
            }
        })
        .fold(0.0, f64::max);
    crate::usage::Amount { tokens: input + output, cost }
}

/// OpenAI's `x-ratelimit-*` request headers.
fn rate_limit_headers(headers: &mut http::HeaderMap, d: &crate::ratelimit::Decision) {
    headers.insert(http::HeaderName::from_static("x-ratelimit-limit-requests"), http::HeaderValue::from(d.limit));
    headers
        .insert(http::HeaderName::from_static("x-ratelimit-remaining-requests"), http::HeaderValue::from(d.remaining));
    if let Ok(v) = http::HeaderValue::try_from(format!("{:.3}s", d.reset.as_secs_f64())) {
        headers.insert(http::HeaderName::from_static("x-ratelimit-reset-requests"), v);
    }
}
