//! The per-request context: what the request log line says about one request.

use std::time::Instant;

use http::HeaderValue;

/// Accumulated through the phases; logged once when the response is ready.
pub struct RequestLog {
    pub started: Instant,
    pub request_id: HeaderValue,
    pub method: http::Method,
    pub path: String,
    pub user: Option<String>,
    /// The model as the client wrote it (logs only).
    pub model: Option<String>,
    /// The configured route the model resolved to (safe as a metrics label).
    pub route: Option<String>,
    /// A relayed request (chat, completions, embeddings): counted in request metrics.
    pub relay: bool,
    pub backend: Option<std::sync::Arc<str>>,
    pub attempts: u32,
    pub stream: bool,
    pub error: Option<&'static str>,
}

impl RequestLog {
    pub fn new(request_id: HeaderValue, method: http::Method, path: String) -> Self {
        RequestLog {
            started: Instant::now(),
            request_id,
            method,
            path,
            user: None,
            model: None,
            route: None,
            relay: false,
            backend: None,
            attempts: 0,
            stream: false,
            error: None,
        }
    }

    /// Count a relayed request in the metrics.
    pub fn count(&self, metrics: &crate::metrics::Metrics, status: u16) {
        if !self.relay {
            return;
        }
        let model = self.route.clone().unwrap_or_else(|| "-".to_string());
        let labels = crate::metrics::RequestLabels {
            model: model.clone(),
            backend: self.backend.as_deref().unwrap_or("-").to_string(),
            status: crate::metrics::status_class(status),
        };
        metrics.requests.get_or_create(&labels).inc();
        metrics
            .request_seconds
            .get_or_create(&crate::metrics::ModelLabels { model })
            .observe(self.started.elapsed().as_secs_f64());
    }

    /// One line per request. Never the token or a provider key: only ids and names.
    pub fn emit(&self, status: u16) {
        let latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(
            target: "berry::request",
            request_id = self.request_id.to_str().unwrap_or("-"),
            method = %self.method,
            path = %self.path,
            user = self.user.as_deref().unwrap_or("-"),
            model = self.model.as_deref().unwrap_or("-"),
            backend = self.backend.as_deref().unwrap_or("-"),
            status,
            latency_ms = format_args!("{latency_ms:.2}"),
            attempts = self.attempts,
            stream = self.stream,
            error = self.error.unwrap_or("-"),
        );
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
