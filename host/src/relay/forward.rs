//! The select → upstream phases: rank the route's backends once, then walk that
//! list, one attempt per backend, until one answers.
//!
//! An attempt is retried on the next backend when it fails before any byte reached
//! the client: connect errors, timeouts, 5xx, 429, and 401/403/404 from the provider
//! (its key or its model, not the caller's fault). Another 4xx means the caller's
//! request is bad: the provider's own answer is returned as-is.
//!
//! Time: `request_timeout_seconds` is the request's whole budget, counted from its
//! arrival: attempts and the waits between them share it (to the last byte of a
//! non-streaming answer, to the first byte of a stream). Each attempt is capped
//! further — non-streaming by `attempt_timeout_seconds` or the provider's
//! `timeout_seconds`, streaming by `first_byte_timeout_seconds` — so a hung backend
//! leaves time to fail over. Before each retry the walk waits a random time up to an
//! exponentially growing ceiling (`retry_backoff_ms`, full jitter).
//!
//! Rate limits: a 429 moves on to the next backend and cools the one that sent it for
//! its `Retry-After` (it is skipped while others are usable) instead of counting
//! toward its circuit. When no backend is left, the client gets a 429 with the
//! shortest `Retry-After` seen — unless that wait is short and fits the budget: then
//! the walk waits it out and tries that backend once more.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, header};
use http_body_util::Full;

use super::Endpoint;
use super::attempt::{self, Attempt, Reply, Started};
use super::body::RequestBody;
use super::stream::{Finish, relay_stream};
use crate::error::GatewayError;
use crate::gateway::{Attempted, Route, RouteBackend, Snapshot};
use crate::health::{ErrorClass, Outcome, now_ms};
use crate::metrics::genai::Operation;
use crate::plugin::strategy::{flat, wit};
use crate::server::body::BerryBody;
use crate::server::context::RequestLog;
use crate::telemetry::trace::AttemptStart;

/// Longest upstream `Retry-After` the walk waits out itself.
const MAX_RETRY_AFTER_WAIT: Duration = Duration::from_secs(2);
/// How long a backend that answered 429 without a `Retry-After` is cooled.
const DEFAULT_RATE_LIMIT_COOL: Duration = Duration::from_secs(1);
/// Longest cool-down a `Retry-After` can impose on a backend.
const MAX_RATE_LIMIT_COOL: Duration = Duration::from_secs(300);
/// Client headers forwarded to providers that opt in (`forward_organization_headers`).
const ORGANIZATION_HEADERS: [&str; 2] = ["openai-organization", "openai-project"];

/// One client request, ready to forward.
pub struct ForwardRequest<'a> {
    pub snapshot: &'a Arc<Snapshot>,
    pub route: &'a Arc<Route>,
    pub endpoint: Endpoint,
    pub body: &'a RequestBody,
    pub user_tags: &'a [String],
    /// Index of a backend pinned with the debug `backend` field.
    pub pin: Option<u32>,
    /// The request's log line: forwarding fills in the backend and attempts, and a
    /// stream takes the line with it (it is written when the stream ends).
    pub log: &'a mut RequestLog,
    /// The client's headers (a few are forwarded to providers that opt in).
    pub headers: &'a HeaderMap,
    /// Whether the client speaks HTTP/2 (its streams need their own stall guard).
    pub client_http2: bool,
}

/// The walk down the ranked list: what has been tried, and what the failures said.
struct Walk<'a> {
    snapshot: &'a Arc<Snapshot>,
    route: &'a Arc<Route>,
    endpoint: Endpoint,
    body: &'a RequestBody,
    /// 16 numbers per backend (`plugin::strategy::flat`).
    states: Vec<f64>,
    log: &'a mut RequestLog,
    deadline: Instant,
    attempts: u32,
    per_provider: Vec<(&'a str, u32)>,
    last: Option<(ErrorClass, String)>,
    any_healthy_tried: bool,
    /// The shortest `Retry-After` of the rate-limited attempts, and whose it was.
    rate_limited: Option<(Duration, u32)>,
    /// The budget ran out before the list did.
    out_of_time: bool,
    headers: &'a HeaderMap,
    client_http2: bool,
    /// A backend was passed over because it cannot serve this endpoint.
    unsupported: bool,
    /// Why the request could not be put into a backend's format, if it could not.
    untranslatable: Option<String>,
    /// The host's failover order replaced the strategy's ranking.
    fallback: bool,
}

pub async fn forward(req: ForwardRequest<'_>) -> Result<Response<BerryBody>, GatewayError> {
    let ForwardRequest { snapshot, route, body, log, .. } = req;
    let settings = &snapshot.config.settings;
    let now = now_ms();
    let states = route.states(now, &snapshot.policy);
    let request = route.request(body.stream, now);

    // === select ===
    let order = match req.pin {
        Some(i) => vec![i],
        None => select(snapshot, route, &request, &states, req.user_tags, log),
    };
    // `select` names the reason when it fell back to the host's order.
    let fallback = log.error;
    log.trace.routed(route.strategy.name(), fallback);
    if order.is_empty() {
        return Err(GatewayError::no_backend(&route.name));
    }

    // === upstream ===
    let max_attempts = settings.max_retries.saturating_add(1);
    let mut walk = Walk {
        snapshot,
        route,
        endpoint: req.endpoint,
        body,
        states,
        deadline: log.started + settings.request_timeout,
        log,
        attempts: 0,
        per_provider: Vec::new(),
        last: None,
        any_healthy_tried: false,
        rate_limited: None,
        out_of_time: false,
        headers: req.headers,
        client_http2: req.client_http2,
        unsupported: false,
        untranslatable: None,
        fallback: fallback.is_some(),
    };
    for index in order {
        if walk.attempts >= max_attempts || walk.out_of_time {
            break;
        }
        if let Some(response) = walk.attempt(index, None).await {
            return Ok(response);
        }
    }
    // Everything left was rate-limited: a short Retry-After is waited out here
    // rather than handed to the client.
    if let Some((wait, index)) = walk.rate_limited
        && walk.attempts < max_attempts
        && wait <= MAX_RETRY_AFTER_WAIT
        && Instant::now() + wait < walk.deadline
        && let Some(response) = walk.attempt(index, Some(wait)).await
    {
        return Ok(response);
    }
    Err(walk.give_up())
}

/// The strategy's ranking, corrected (indices out of range, disabled or repeated
/// dropped); or, when the plugin fails or leaves nothing usable, the host's own
/// failover order, which the request's log line and the metrics then name.
fn select(
    snapshot: &Snapshot,
    route: &Route,
    request: &wit::Request,
    states: &[f64],
    caller_tags: &[String],
    log: &mut RequestLog,
) -> Vec<u32> {
    let strategy = &route.strategy;
    let reason = match strategy.select(request, states, caller_tags) {
        Ok(answer) => {
            let (order, dropped) = route.sanitize(answer);
            if dropped > 0 || order.is_empty() {
                strategy.invalid_answer(&route.name, &order, dropped, route.backends.len());
            }
            if !order.is_empty() {
                return order;
            }
            "strategy_answered_nothing"
        }
        // A quarantined plugin was reported once, when it was quarantined.
        Err(crate::plugin::PluginError::Quarantined { .. }) => "strategy_quarantined",
        Err(e) => {
            tracing::warn!("strategy failed, using the host's failover order: {e}");
            "strategy_failed"
        }
    };
    strategy.stats().fallbacks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let labels = crate::metrics::FallbackLabels { plugin: strategy.name().to_string(), reason: reason.to_string() };
    snapshot.metrics.strategy_fallbacks.get_or_create(&labels).inc();
    log.error = Some(reason);
    route.fallback_order(states)
}

impl<'a> Walk<'a> {
    /// One attempt on backend `index`, after the backoff (or `wait`, a Retry-After).
    /// `Some` is the client's answer; `None` means try the next backend.
    async fn attempt(&mut self, index: u32, wait: Option<Duration>) -> Option<Response<BerryBody>> {
        let route: &'a Arc<Route> = self.route;
        let snapshot = self.snapshot;
        let settings = &snapshot.config.settings;
        let backend = route.backends.get(index as usize)?;
        let Some(target) = backend.target(self.endpoint, self.body.stream) else {
            self.unsupported = true;
            return None;
        };
        if !provider_has_budget(&mut self.per_provider, backend) {
            return None;
        }
        let adapter = backend.provider.adapter;
        let upstream_body = match target.plan.body(self.body, adapter, &backend.config.model) {
            Ok(body) => body,
            Err(e) => {
                self.untranslatable = Some(e);
                return None;
            }
        };
        let pause = match wait {
            Some(wait) => wait,
            None if self.attempts > 0 => backoff(self.attempts, settings),
            None => Duration::ZERO,
        };
        if !pause.is_zero() {
            let pause = pause.min(self.remaining());
            tokio::time::sleep(pause).await;
            self.log.waited += pause;
        }
        let remaining = self.remaining();
        if remaining.is_zero() {
            self.out_of_time = true;
            return None;
        }
        let mut upstream = backend.provider.request(Method::POST, target.uri.clone(), upstream_body);
        with_json_headers(&mut upstream, &self.log.request_id, self.body.stream);
        // A client of Anthropic's API, passed through to Anthropic: its beta flags
        // describe the body it wrote.
        if target.plan.is_native()
            && self.endpoint.dialect() == crate::adapter::Dialect::Anthropic
            && let Some(beta) = self.headers.get("anthropic-beta")
        {
            upstream.headers_mut().insert(HeaderName::from_static("anthropic-beta"), beta.clone());
        }
        if backend.provider.spec.forward_organization_headers {
            for name in ORGANIZATION_HEADERS {
                if let Some(value) = self.headers.get(name) {
                    upstream.headers_mut().insert(name, value.clone());
                }
            }
        }
        self.attempts += 1;
        let (provider_name, server_address) = backend.series.genai_names();
        let start = AttemptStart {
            operation: crate::metrics::genai::operation_name(self.endpoint),
            provider_name,
            request_model: &backend.config.model,
            server_address,
            backend: &backend.label,
            number: self.attempts,
            strategy: route.strategy.name(),
            fallback: self.fallback,
        };
        self.log.trace.attempt(start, upstream.headers_mut());
        self.any_healthy_tried |= flat::healthy(self.states.get(index as usize * flat::STATE..).unwrap_or(&[]));
        self.log.backend = Some(backend.label.clone());
        self.log.backend_index = Some(index);
        self.log.attempts = self.attempts;
        let reply = Reply {
            plan: target.plan,
            adapter,
            model: &backend.config.model,
            include_usage: self.body.include_usage,
            dialect: self.endpoint.dialect(),
            redactor: &snapshot.redactor,
            read_model: self.log.trace.wants_model(),
            route: backend.provider.route,
        };
        let in_flight = backend.health.start();
        let started = Instant::now();
        let attempt = if self.body.stream {
            attempt::stream(snapshot, upstream, settings.first_byte_timeout.min(remaining), &reply).await
        } else {
            let cap = backend.provider.timeout.or(settings.attempt_timeout).map_or(remaining, |t| t.min(remaining));
            attempt::unary(snapshot, upstream, cap, &reply).await
        };
        let elapsed = started.elapsed();
        self.log.upstream += elapsed;
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        let operation = Operation::of(self.endpoint);
        let attempted = |outcome| Attempted { outcome, latency_ms, duration: elapsed, operation };
        match attempt {
            Attempt::Answer(response, outcome, usage, model) => {
                self.log.trace.set_response_model(model);
                self.log.trace.end_attempt(outcome, usage);
                route.record(index, outcome, latency_ms, &snapshot.policy);
                backend.series.attempted(&snapshot.metrics, &attempted(outcome));
                count_retries(snapshot, route, self.attempts);
                if let Some(u) = usage {
                    route.series.count_tokens(&snapshot.metrics, &route.name, self.log.user(), u);
                    backend.series.used(&snapshot.metrics, operation, &u);
                }
                self.log.usage = usage;
                Some(served_by(response, backend))
            }
            Attempt::Stream(Started { parts, first, rest, translator, usage }) => {
                count_retries(snapshot, route, self.attempts);
                backend.series.first_chunk(&snapshot.metrics, operation, elapsed);
                if let Some(first) = &first {
                    self.log.trace.answered(first);
                }
                let first_byte = self.log.started.elapsed();
                route.series.first_byte_seconds(&snapshot.metrics, &route.name).observe(first_byte.as_secs_f64());
                self.log.first_byte_ms = Some(first_byte.as_secs_f64() * 1000.0);
                let line = self.log.hand_off();
                let finish = Finish::new(
                    route.clone(),
                    index,
                    snapshot.policy,
                    super::stream::Upstream { first_byte_ms: latency_ms, started, operation },
                    in_flight,
                    line,
                );
                let relay = super::stream::Relay {
                    first,
                    translator,
                    usage,
                    idle_timeout: settings.first_byte_timeout,
                    closing: snapshot.closing.clone(),
                    dialect: self.endpoint.dialect(),
                    h2_write_timeout: self.client_http2.then_some(settings.client_write_timeout),
                    redactor: snapshot.redactor.clone(),
                };
                let body = relay_stream(rest, finish, relay);
                Some(served_by(
                    attempt::stream_response(&parts, target.plan.is_native(), body, &snapshot.redactor),
                    backend,
                ))
            }
            Attempt::Retry(class, description, retry_after) => {
                let description = snapshot.redactor.text(&description).into_owned();
                self.log.trace.end_attempt(Outcome::Failure(class), None);
                route.record(index, Outcome::Failure(class), latency_ms, &snapshot.policy);
                backend.series.attempted(&snapshot.metrics, &attempted(Outcome::Failure(class)));
                tracing::debug!(backend = %backend.label, class = class.as_str(), "attempt failed: {description}");
                if class == ErrorClass::RateLimit {
                    let cool = retry_after.unwrap_or(DEFAULT_RATE_LIMIT_COOL).min(MAX_RATE_LIMIT_COOL);
                    backend.health.cool(now_ms() + cool.as_millis() as u64);
                    if self.rate_limited.is_none_or(|(shortest, _)| cool < shortest) {
                        self.rate_limited = Some((cool, index));
                    }
                }
                self.last = Some((class, description));
                None
            }
        }
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The error for a walk that ended without an answer.
    fn give_up(self) -> GatewayError {
        count_retries(self.snapshot, self.route, self.attempts);
        let budget = self.snapshot.config.settings.request_timeout;
        if self.attempts == 0
            && let Some(reason) = self.untranslatable
        {
            return GatewayError::bad_request("invalid_request", reason);
        }
        if self.attempts == 0 && self.unsupported {
            return GatewayError::bad_request(
                "unsupported_endpoint",
                format!("No backend of model '{}' serves this API.", self.route.name),
            );
        }
        match (self.rate_limited, self.last) {
            (Some((wait, _)), _) => GatewayError::upstream_rate_limited(&self.route.name, wait),
            _ if self.out_of_time => GatewayError::upstream_timeout(self.attempts, budget),
            (None, None) => GatewayError::no_backend(&self.route.name),
            _ if !self.any_healthy_tried => GatewayError::no_backend(&self.route.name),
            (None, Some((ErrorClass::Timeout, _))) => GatewayError::upstream_timeout(self.attempts, budget),
            (None, Some((_, description))) => GatewayError::upstream_failed(self.attempts, &description),
        }
    }
}

/// The wait before retry number `retry` (1 for the first): uniform in
/// [0, min(base·2^(retry−1), max)] — "full jitter", so retries of many requests that
/// failed together do not arrive together.
fn backoff(retry: u32, settings: &crate::config::Settings) -> Duration {
    if settings.retry_backoff.is_zero() {
        return Duration::ZERO;
    }
    let ceiling = settings.retry_backoff.saturating_mul(1 << retry.saturating_sub(1).min(16));
    ceiling.min(settings.retry_backoff_max).mul_f64(fastrand::f64())
}

fn count_retries(snapshot: &Snapshot, route: &Route, attempts: u32) {
    if attempts > 1 {
        route.series.retries(&snapshot.metrics, &route.name).inc_by(u64::from(attempts - 1));
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

/// Name the backend that served an answer (`x-berry-backend: provider/model`).
fn served_by(mut response: Response<BerryBody>, backend: &RouteBackend) -> Response<BerryBody> {
    if let Some(label) = &backend.label_header {
        response.headers_mut().insert(X_BERRY_BACKEND, label.clone());
    }
    response
}

/// The serving backend, on every relayed answer.
const X_BERRY_BACKEND: HeaderName = HeaderName::from_static("x-berry-backend");

fn with_json_headers(request: &mut Request<Full<Bytes>>, request_id: &HeaderValue, stream: bool) {
    let headers = request.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static(if stream { "text/event-stream" } else { "application/json" }),
    );
    headers.insert(crate::server::X_REQUEST_ID, request_id.clone());
}
