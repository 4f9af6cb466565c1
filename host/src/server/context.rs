//! The per-request context: what the request log line says about one request.
//!
//! Every request gets exactly one line and is counted exactly once, however it ends:
//! answered (when the response is ready), streamed (when the stream ends: the line is
//! handed to the stream), or abandoned by a client that went away before its answer
//! (on drop, with nginx's status 499).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;

use crate::metrics::Metrics;

/// The status logged and counted for a request whose client went away first.
pub const CLIENT_CLOSED: u16 = 499;

/// Accumulated through the phases; logged once when the request is over.
pub struct RequestLog {
    pub started: Instant,
    pub request_id: HeaderValue,
    pub client: SocketAddr,
    pub method: http::Method,
    /// The request's URI (its path is logged); cloning it shares its bytes.
    pub uri: http::Uri,
    /// The authenticated caller; its id is the `user` of logs and metrics.
    pub principal: Option<Arc<crate::plugin::auth::wit::Principal>>,
    /// The model as the client wrote it (logs only).
    pub model: Option<Arc<str>>,
    /// The configured route the model resolved to (its name is safe as a metrics label).
    pub route: Option<Arc<crate::gateway::Route>>,
    /// A relayed request (chat, completions, embeddings): counted in request metrics.
    pub relay: bool,
    pub backend: Option<Arc<str>>,
    /// Index of `backend` in the route.
    pub backend_index: Option<u32>,
    pub attempts: u32,
    pub stream: bool,
    /// Streams: when the first byte reached the client, ms after `started`.
    pub first_byte_ms: Option<f64>,
    /// Time spent waiting on providers (every attempt, to its answer or first chunk).
    pub upstream: std::time::Duration,
    /// Deliberate waits: backoff between attempts, a provider's short `Retry-After`.
    pub waited: std::time::Duration,
    /// Time spent in Berry itself, once the answer is ready (`x-berry-overhead-ms`).
    pub overhead: Option<std::time::Duration>,
    pub error: Option<&'static str>,
    /// Relayed requests: the endpoint ("chat/completions", "messages", …).
    pub endpoint: Option<&'static str>,
    /// The tokens the provider reported for the answer.
    pub usage: Option<crate::relay::usage::Usage>,
    /// What a budgeted user's request reserved; settled when the line is written.
    pub reservation: Option<crate::usage::Reservation>,
    /// Where the request is recorded (relayed requests of known callers).
    pub accounting: Option<Arc<crate::usage::Accounting>>,
    /// Its trace context and spans (relayed requests).
    pub trace: crate::telemetry::trace::RequestTrace,
    metrics: Arc<Metrics>,
    counted: bool,
    emitted: bool,
}

impl RequestLog {
    pub fn new(
        request_id: HeaderValue,
        client: SocketAddr,
        method: http::Method,
        uri: http::Uri,
        metrics: Arc<Metrics>,
    ) -> Self {
        RequestLog {
            started: Instant::now(),
            request_id,
            client,
            method,
            uri,
            principal: None,
            model: None,
            route: None,
            relay: false,
            backend: None,
            backend_index: None,
            attempts: 0,
            stream: false,
            first_byte_ms: None,
            upstream: std::time::Duration::ZERO,
            waited: std::time::Duration::ZERO,
            overhead: None,
            error: None,
            endpoint: None,
            usage: None,
            reservation: None,
            accounting: None,
            trace: Default::default(),
            metrics,
            counted: false,
            emitted: false,
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The caller's user id, "-" before authentication.
    pub fn user(&self) -> &str {
        self.principal.as_deref().map_or("-", |p| p.id.as_str())
    }

    /// Count a relayed request in the metrics (once).
    pub fn count(&mut self, status: u16) {
        if std::mem::replace(&mut self.counted, true) || !self.relay {
            return;
        }
        let seconds = self.started.elapsed().as_secs_f64();
        let Some(route) = &self.route else {
            let labels = crate::metrics::RequestLabels {
                model: "-".into(),
                backend: "-".into(),
                status: crate::metrics::status_class(status),
            };
            self.metrics.requests.get_or_create(&labels).inc();
            let model = crate::metrics::ModelLabels { model: "-".into() };
            self.metrics.request_seconds.get_or_create(&model).observe(seconds);
            return;
        };
        match self.backend_index.and_then(|i| route.backends.get(i as usize)) {
            Some(b) => b.series.requests.count(&self.metrics, &route.name, &b.label, status),
            None => {
                let labels = crate::metrics::RequestLabels {
                    model: route.name.clone(),
                    backend: "-".into(),
                    status: crate::metrics::status_class(status),
                };
                self.metrics.requests.get_or_create(&labels).inc();
            }
        }
        route.series.request_seconds(&self.metrics, &route.name).observe(seconds);
        if let Some(overhead) = self.overhead {
            route.series.overhead_seconds(&self.metrics, &route.name).observe(overhead.as_secs_f64());
        }
    }

    /// Time spent in Berry so far: since the request arrived, less the time its
    /// attempts waited on providers and its deliberate waits.
    pub fn overhead_now(&self) -> std::time::Duration {
        self.started.elapsed().saturating_sub(self.upstream + self.waited)
    }

    /// Hand the line to a stream that outlives the handler: the returned log is
    /// written when the stream ends; this one writes nothing. Counting stays here.
    pub fn hand_off(&mut self) -> RequestLog {
        self.emitted = true;
        // The URI and a client-chosen request id are slices of the connection's read
        // buffer: a stream keeps its line for its whole life, so it keeps copies, not
        // the buffer.
        let request_id =
            HeaderValue::from_bytes(self.request_id.as_bytes()).unwrap_or_else(|_| self.request_id.clone());
        let uri = http::Uri::from_maybe_shared(bytes::Bytes::copy_from_slice(self.uri.path().as_bytes()))
            .unwrap_or_else(|_| self.uri.clone());
        RequestLog {
            started: self.started,
            request_id,
            client: self.client,
            method: self.method.clone(),
            uri,
            principal: self.principal.clone(),
            model: self.model.clone(),
            route: self.route.clone(),
            relay: self.relay,
            backend: self.backend.clone(),
            backend_index: self.backend_index,
            attempts: self.attempts,
            stream: self.stream,
            first_byte_ms: self.first_byte_ms,
            upstream: self.upstream,
            waited: self.waited,
            overhead: self.overhead,
            error: self.error,
            endpoint: self.endpoint,
            usage: self.usage,
            reservation: self.reservation.take(),
            accounting: self.accounting.clone(),
            trace: std::mem::take(&mut self.trace),
            metrics: self.metrics.clone(),
            counted: true,
            emitted: false,
        }
    }

    /// One line per request (once). Never the token or a provider key: only ids and names.
    pub fn emit(&mut self, status: u16) {
        if std::mem::replace(&mut self.emitted, true) {
            return;
        }
        self.account(status);
        self.trace.end(crate::telemetry::trace::RequestEnd {
            status,
            attempts: self.attempts,
            backend: self.backend.as_deref(),
            error: self.error,
            usage: self.usage,
        });
        let line = crate::telemetry::RequestLine {
            request_id: self.request_id.to_str().unwrap_or("-"),
            client: self.client,
            method: self.method.as_str(),
            path: self.uri.path(),
            user: self.user(),
            model: self.model.as_deref().unwrap_or("-"),
            backend: self.backend.as_deref().unwrap_or("-"),
            status,
            latency_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            first_byte_ms: self.first_byte_ms,
            attempts: self.attempts,
            stream: self.stream,
            error: self.error.unwrap_or("-"),
        };
        if crate::telemetry::request_line(&line) {
            return;
        }
        tracing::info!(
            target: "berry::request",
            request_id = line.request_id,
            client = %line.client,
            method = line.method,
            path = line.path,
            user = line.user,
            model = line.model,
            backend = line.backend,
            status,
            latency_ms = format_args!("{:.2}", line.latency_ms),
            first_byte_ms = ?line.first_byte_ms,
            attempts = line.attempts,
            stream = line.stream,
            error = line.error,
        );
    }
}

impl RequestLog {
    /// Settle the request's reservation with what it used, count its cost, and hand
    /// its record to the ledger (relayed requests of authenticated callers).
    fn account(&mut self, status: u16) {
        let reservation = self.reservation.take();
        let (Some(accounting), Some(principal), Some(endpoint)) = (&self.accounting, &self.principal, self.endpoint)
        else {
            return;
        };
        let usage = self.usage.unwrap_or_default();
        let backend = self.route.as_ref().zip(self.backend_index).and_then(|(r, i)| r.backends.get(i as usize));
        let cost = match backend {
            Some(b) if status < 400 || self.usage.is_some() => {
                crate::usage::cost(&usage, &b.config.prices, b.config.billing_mode, b.provider.spec.backend)
            }
            _ => 0.0,
        };
        if let Some(reservation) = reservation {
            reservation.settle(crate::usage::Amount { tokens: usage.total(), cost });
        }
        if let Some(route) = self.route.as_ref().filter(|_| cost > 0.0) {
            route.series.count_cost(&self.metrics, &route.name, &principal.id, cost);
        }
        let Some(ledger) = &accounting.ledger else { return };
        ledger.record(crate::usage::Record {
            time_ms: crate::health::now_ms(),
            // A copy: a client's id is a slice of its connection's read buffer, which
            // the queued record must not keep alive.
            request_id: http::HeaderValue::from_bytes(self.request_id.as_bytes())
                .unwrap_or_else(|_| self.request_id.clone()),
            principal: principal.clone(),
            route: self.route.clone(),
            asked_model: self.model.clone(),
            backend: self.backend_index,
            endpoint,
            status,
            usage,
            cost,
            latency_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            first_byte_ms: self.first_byte_ms,
            attempts: self.attempts,
            stream: self.stream,
        });
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        if !self.emitted {
            self.error.get_or_insert("client_closed");
            self.count(CLIENT_CLOSED);
            self.emit(CLIENT_CLOSED);
        }
    }
}

/// A request id: the caller's `x-request-id` when it is sane, else a fresh one.
pub fn request_id(headers: &http::HeaderMap) -> HeaderValue {
    headers
        .get("x-request-id")
        .filter(|v| {
            !v.is_empty() && v.len() <= 128 && v.to_str().is_ok_and(|s| s.bytes().all(|b| b.is_ascii_graphic()))
        })
        .cloned()
        .unwrap_or_else(|| {
            // "req_" and 24 hex digits of randomness, written without `format!`.
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let mut id = *b"req_000000000000000000000000";
            let random = u128::from(fastrand::u64(..)) << 32 | u128::from(fastrand::u32(..));
            for (i, byte) in id[4..].iter_mut().enumerate() {
                *byte = HEX[(random >> (4 * (23 - i)) & 0xf) as usize];
            }
            HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("req_unknown"))
        })
}
