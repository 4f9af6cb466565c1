//! The select → upstream phases: rank the route's backends once, then walk that
//! list, one attempt per backend, until one answers.
//!
//! An attempt is retried on the next backend when it fails before any byte reached
//! the client: connect errors, timeouts, 5xx, 429, and 401/403/404 from the provider
//! (its key or its model, not the caller's fault). Another 4xx means the caller's
//! request is bad: the provider's own answer is returned as-is.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::Endpoint;
use super::body::RequestBody;
use super::stream::{Finish, Tally, relay_stream};
use super::usage::{self, Usage};
use crate::error::GatewayError;
use crate::gateway::{Route, RouteBackend, Snapshot};

use crate::health::{ErrorClass, Outcome, now_ms};
use crate::server::body::{BerryBody, full};

/// Largest non-streaming upstream response Berry buffers.
const MAX_UPSTREAM_BODY: usize = 64 << 20;
/// Largest upstream error body kept for a streaming request.
const MAX_ERROR_BODY: usize = 64 << 10;

/// One client request, ready to forward.
pub struct ForwardRequest<'a> {
    pub snapshot: &'a Arc<Snapshot>,
    pub route: &'a Arc<Route>,
    pub endpoint: Endpoint,
    pub body: &'a RequestBody,
    pub user_tags: &'a [String],
    /// Index of a backend pinned with the debug `backend` field.
    pub pin: Option<u32>,
    pub request_id: &'a HeaderValue,
    /// The caller, for token metrics.
    pub user: &'a str,
    /// When the request arrived (time to first byte is measured from here).
    pub started: Instant,
}

/// What forwarding produced, with what the request log needs.
pub struct Forwarded {
    pub result: Result<Response<BerryBody>, GatewayError>,
    /// "provider/model" of the backend that answered (or was tried last).
    pub backend: Option<Arc<str>>,
    pub attempts: u32,
}

enum Attempt {
    /// A complete answer for the client, with the token usage it reported.
    Answer(Response<BerryBody>, Outcome, Option<Usage>),
    /// A stream whose first bytes arrived: from here on it is passed through.
    Stream(http::response::Parts, Option<Bytes>, Incoming),
    /// Failed before anything reached the client: try the next backend.
    Retry(ErrorClass, String),
}

pub async fn forward(req: ForwardRequest<'_>) -> Forwarded {
    let ForwardRequest { snapshot, route, body, .. } = req;
    let settings = &snapshot.config.settings;
    let now = now_ms();
    let states = route.states(now, &snapshot.policy);
    let request = route.request(body.stream, req.user_tags, now);

    // === select ===
    let order = match req.pin {
        Some(i) => vec![i],
        None => match route.strategy.select(&request, &states) {
            Ok(order) => {
                let order = route.sanitize(order);
                if order.is_empty() { route.fallback_order(&states) } else { order }
            }
            Err(e) => {
                // A quarantined plugin was reported once when it was quarantined.
                if matches!(e, crate::plugin::PluginError::Quarantined { .. }) {
                    tracing::debug!("{e}: using the host's failover order");
                } else {
                    tracing::warn!("strategy failed, using the host's failover order: {e}");
                }
                route.fallback_order(&states)
            }
        },
    };
    if order.is_empty() {
        return Forwarded { result: Err(GatewayError::no_backend(&route.name)), backend: None, attempts: 0 };
    }

    // === upstream ===
    let max_attempts = settings.max_retries.saturating_add(1);
    let mut attempts = 0u32;
    let mut per_provider: Vec<(&str, u32)> = Vec::new();
    let mut last: Option<(ErrorClass, String)> = None;
    let mut last_backend = None;
    let mut any_healthy_tried = false;
    for index in order {
        if attempts >= max_attempts {
            break;
        }
        let Some(backend) = route.backends.get(index as usize) else { continue };
        if !provider_has_budget(&mut per_provider, backend) {
            continue;
        }
        let upstream_body = body.for_upstream(&backend.config.model);
        let Some(upstream) = backend.provider.request(Method::POST, req.endpoint, upstream_body) else { continue };
        let upstream = with_json_headers(upstream, req.request_id, body.stream);
        attempts += 1;
        any_healthy_tried |= states.get(index as usize).is_some_and(|s| s.healthy);
        last_backend = Some(backend.label.clone());
        let in_flight = backend.health.start();
        let started = Instant::now();
        let attempt = if body.stream {
            attempt_stream(snapshot, upstream, settings.first_byte_timeout).await
        } else {
            let total = backend.provider.timeout.unwrap_or(settings.request_timeout);
            attempt_unary(snapshot, upstream, total).await
        };
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        match attempt {
            Attempt::Answer(response, outcome, usage) => {
                route.record(index, outcome, latency_ms, &request, &snapshot.policy);
                backend.count_attempt(&snapshot.metrics, outcome);
                count_retries(snapshot, route, attempts);
                if let Some(u) = usage {
                    count_tokens(&snapshot.metrics, req.user, &route.name, u);
                }
                return Forwarded { result: Ok(response), backend: last_backend, attempts };
            }
            Attempt::Stream(parts, first, rest) => {
                count_retries(snapshot, route, attempts);
                let model = crate::metrics::ModelLabels { model: route.name.clone() };
                snapshot.metrics.first_byte_seconds.get_or_create(&model).observe(req.started.elapsed().as_secs_f64());
                let tally = Tally {
                    metrics: snapshot.metrics.clone(),
                    user: req.user.to_string(),
                    model: route.name.clone(),
                };
                let finish = Finish::new(route.clone(), index, request, snapshot.policy, latency_ms, in_flight, tally);
                let body = relay_stream(first, rest, finish, settings.first_byte_timeout);
                return Forwarded { result: Ok(stream_response(&parts, body)), backend: last_backend, attempts };
            }
            Attempt::Retry(class, description) => {
                route.record(index, Outcome::Failure(class), latency_ms, &request, &snapshot.policy);
                backend.count_attempt(&snapshot.metrics, Outcome::Failure(class));
                tracing::debug!(backend = %backend.label, class = class.as_str(), "attempt failed: {description}");
                last = Some((class, description));
            }
        }
    }

    count_retries(snapshot, route, attempts);
    let error = match last {
        None => GatewayError::no_backend(&route.name),
        Some(_) if !any_healthy_tried => GatewayError::no_backend(&route.name),
        Some((ErrorClass::Timeout, _)) => GatewayError::upstream_timeout(attempts),
        Some((_, description)) => GatewayError::upstream_failed(attempts, &description),
    };
    Forwarded { result: Err(error), backend: last_backend, attempts }
}

fn count_retries(snapshot: &Snapshot, route: &Route, attempts: u32) {
    if attempts > 1 {
        let labels = crate::metrics::ModelLabels { model: route.name.clone() };
        snapshot.metrics.retries.get_or_create(&labels).inc_by(u64::from(attempts - 1));
    }
}

pub(crate) fn count_tokens(metrics: &crate::metrics::Metrics, user: &str, model: &str, usage: Usage) {
    for (kind, n) in [("prompt", usage.prompt_tokens), ("completion", usage.completion_tokens)] {
        let labels =
            crate::metrics::TokenLabels { user: user.to_string(), model: model.to_string(), kind: kind.to_string() };
        metrics.tokens.get_or_create(&labels).inc_by(n);
    }
}

/// Whether the backend's provider may take another attempt of this request
/// (`providers.X.max_retries` caps attempts per provider at 1 + max_retries).
fn provider_has_budget<'a>(used: &mut Vec<(&'a str, u32)>, backend: &'a RouteBackend) -> bool {
    let cap = backend.provider.max_retries.map_or(u32::MAX, |r| r.saturating_add(1));
    let key = backend.provider.key.as_str();
    match used.iter_mut().find(|(k, _)| *k == key) {
        Some((_, n)) if *n >= cap => false,
        Some((_, n)) => {
            *n += 1;
            true
        }
        None => {
            used.push((key, 1));
            true
        }
    }
}

fn with_json_headers(
    mut request: Request<Full<Bytes>>,
    request_id: &HeaderValue,
    stream: bool,
) -> Request<Full<Bytes>> {
    let headers = request.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static(if stream { "text/event-stream" } else { "application/json" }),
    );
    headers.insert("x-request-id", request_id.clone());
    request
}

/// A non-streaming attempt: the whole exchange (connect, headers, body) must finish
/// within `total`.
async fn attempt_unary(snapshot: &Snapshot, request: Request<Full<Bytes>>, total: Duration) -> Attempt {
    let exchange = async {
        let response = snapshot.client.inner().request(request).await.map_err(classify_transport)?;
        let (parts, body) = response.into_parts();
        let bytes = Limited::new(body, MAX_UPSTREAM_BODY)
            .collect()
            .await
            .map_err(|e| (ErrorClass::Network, format!("reading the response failed: {e}")))?
            .to_bytes();
        Ok::<_, (ErrorClass, String)>((parts, bytes))
    };
    match tokio::time::timeout(total, exchange).await {
        Err(_) => Attempt::Retry(ErrorClass::Timeout, format!("no complete response within {}s", total.as_secs_f64())),
        Ok(Err((class, description))) => Attempt::Retry(class, description),
        Ok(Ok((parts, bytes))) => judge(parts, bytes),
    }
}

/// A streaming attempt: the response headers and the first body bytes must arrive
/// within `first_byte`. Until then a failure can still move to the next backend.
async fn attempt_stream(snapshot: &Snapshot, request: Request<Full<Bytes>>, first_byte: Duration) -> Attempt {
    let exchange = async {
        let response = snapshot.client.inner().request(request).await.map_err(classify_transport)?;
        let (parts, mut body) = response.into_parts();
        if !parts.status.is_success() {
            let bytes = Limited::new(body, MAX_ERROR_BODY).collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            return Ok(judge(parts, bytes));
        }
        loop {
            match body.frame().await {
                None => return Ok(Attempt::Stream(parts, None, body)),
                Some(Err(e)) => return Err((ErrorClass::Network, format!("stream failed before its first byte: {e}"))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        return Ok(Attempt::Stream(parts, Some(data), body));
                    }
                }
            }
        }
    };
    match tokio::time::timeout(first_byte, exchange).await {
        Err(_) => Attempt::Retry(ErrorClass::Timeout, format!("no first byte within {}s", first_byte.as_secs_f64())),
        Ok(Err((class, description))) => Attempt::Retry(class, description),
        Ok(Ok(attempt)) => attempt,
    }
}

/// Decide what a complete upstream answer means.
fn judge(parts: http::response::Parts, bytes: Bytes) -> Attempt {
    let status = parts.status;
    if status.is_success() {
        let usage = usage::of_json(&bytes);
        return Attempt::Answer(passthrough(status, &parts.headers, bytes), Outcome::Success, usage);
    }
    match ErrorClass::from_status(status.as_u16()) {
        Some(class) => Attempt::Retry(class, format!("upstream answered {}", status.as_u16())),
        // The caller's own bad request: hand the provider's explanation back.
        None if status.is_client_error() => {
            Attempt::Answer(passthrough(status, &parts.headers, bytes), Outcome::ClientError, None)
        }
        None => Attempt::Retry(ErrorClass::Server, format!("upstream answered {}", status.as_u16())),
    }
}

fn passthrough(status: StatusCode, upstream: &http::HeaderMap, bytes: Bytes) -> Response<BerryBody> {
    let mut response = Response::new(full(bytes));
    *response.status_mut() = status;
    let content_type =
        upstream.get(header::CONTENT_TYPE).cloned().unwrap_or_else(|| HeaderValue::from_static("application/json"));
    response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    response
}

/// Only the headers that describe the stream are passed on; hop-by-hop and
/// provider-specific headers stay behind.
fn stream_response(upstream: &http::response::Parts, body: BerryBody) -> Response<BerryBody> {
    let mut response = Response::new(body);
    *response.status_mut() = upstream.status;
    let headers = response.headers_mut();
    let content_type = upstream
        .headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

pub(crate) fn classify_transport(e: hyper_util::client::legacy::Error) -> (ErrorClass, String) {
    let timed_out = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
    let class = if timed_out { ErrorClass::Timeout } else { ErrorClass::Network };
    let what = if e.is_connect() { "connect failed" } else { "request failed" };
    // The error chain names the transport problem (refused, reset, closed early);
    // it never contains request headers.
    let cause = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
    (class, format!("{what}{cause}"))
}
