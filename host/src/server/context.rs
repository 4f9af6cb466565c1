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
    pub path: String,
    pub user: Option<String>,
    /// The model as the client wrote it (logs only).
    pub model: Option<String>,
    /// The configured route the model resolved to (safe as a metrics label).
    pub route: Option<String>,
    /// A relayed request (chat, completions, embeddings): counted in request metrics.
    pub relay: bool,
    pub backend: Option<Arc<str>>,
    pub attempts: u32,
    pub stream: bool,
    /// Streams: when the first byte reached the client, ms after `started`.
    pub first_byte_ms: Option<f64>,
    pub error: Option<&'static str>,
    metrics: Arc<Metrics>,
    counted: bool,
    emitted: bool,
}

impl RequestLog {
    pub fn new(
        request_id: HeaderValue,
        client: SocketAddr,
        method: http::Method,
        path: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        RequestLog {
            started: Instant::now(),
            request_id,
            client,
            method,
            path,
            user: None,
            model: None,
            route: None,
            relay: false,
            backend: None,
            attempts: 0,
            stream: false,
            first_byte_ms: None,
            error: None,
            metrics,
            counted: false,
            emitted: false,
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Count a relayed request in the metrics (once).
    pub fn count(&mut self, status: u16) {
        if std::mem::replace(&mut self.counted, true) || !self.relay {
            return;
        }
        let model = self.route.clone().unwrap_or_else(|| "-".to_string());
        let labels = crate::metrics::RequestLabels {
            model: model.clone(),
            backend: self.backend.as_deref().unwrap_or("-").to_string(),
            status: crate::metrics::status_class(status),
        };
        self.metrics.requests.get_or_create(&labels).inc();
        self.metrics
            .request_seconds
            .get_or_create(&crate::metrics::ModelLabels { model })
            .observe(self.started.elapsed().as_secs_f64());
    }

    /// Hand the line to a stream that outlives the handler: the returned log is
    /// written when the stream ends; this one writes nothing. Counting stays here.
    pub fn hand_off(&mut self) -> RequestLog {
        self.emitted = true;
        RequestLog {
            started: self.started,
            request_id: self.request_id.clone(),
            client: self.client,
            method: self.method.clone(),
            path: std::mem::take(&mut self.path),
            user: self.user.clone(),
            model: self.model.clone(),
            route: self.route.clone(),
            relay: self.relay,
            backend: self.backend.clone(),
            attempts: self.attempts,
            stream: self.stream,
            first_byte_ms: self.first_byte_ms,
            error: self.error,
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
        let latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(
            target: "berry::request",
            request_id = self.request_id.to_str().unwrap_or("-"),
            client = %self.client,
            method = %self.method,
            path = %self.path,
            user = self.user.as_deref().unwrap_or("-"),
            model = self.model.as_deref().unwrap_or("-"),
            backend = self.backend.as_deref().unwrap_or("-"),
            status,
            latency_ms = format_args!("{latency_ms:.2}"),
            first_byte_ms = self.first_byte_ms.map(|ms| format!("{ms:.2}")).as_deref().unwrap_or("-"),
            attempts = self.attempts,
            stream = self.stream,
            error = self.error.unwrap_or("-"),
        );
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
            let id = format!("req_{:016x}{:08x}", fastrand::u64(..), fastrand::u32(..));
            HeaderValue::try_from(id).unwrap_or(HeaderValue::from_static("req_unknown"))
        })
}
