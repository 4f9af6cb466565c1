//! The one error type every client-visible failure becomes, rendered as an
//! OpenAI-shaped JSON body with the right status. Constructors never log: the
//! request log line (one per request) records the error once.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;

use crate::server::body::{BerryBody, full};

/// Where a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The caller's request (auth, validation, limits).
    Downstream,
    /// Upstream providers.
    Upstream,
    /// Berry itself.
    Internal,
}

#[derive(Debug, Clone)]
pub struct GatewayError {
    pub status: StatusCode,
    /// OpenAI's `type`, e.g. "invalid_request_error".
    pub kind: &'static str,
    /// A stable, low-cardinality code, also used as a metrics label.
    pub code: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
    pub source: ErrorSource,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl GatewayError {
    fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
        source: ErrorSource,
    ) -> Self {
        GatewayError { status, kind, code, message: message.into(), param: None, source, retry_after: None }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", code, message, ErrorSource::Downstream)
    }

    pub fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", code, message, ErrorSource::Downstream)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_error", code, message, ErrorSource::Downstream)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", code, message, ErrorSource::Downstream)
    }

    /// A well-formed request the gateway refuses to apply (a broken plugin or config).
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request_error", code, message, ErrorSource::Downstream)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            "Method not allowed for this path.",
            ErrorSource::Downstream,
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("Request body is larger than the limit of {limit} bytes."),
            ErrorSource::Downstream,
        )
    }

    pub fn timeout_reading_body() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "request_timeout",
            "Timed out reading the request body.",
            ErrorSource::Downstream,
        )
    }

    /// Every backend is down or disabled.
    pub fn no_backend(model: &str) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "no_backend_available",
            format!("No backend is available for model '{model}'."),
            ErrorSource::Upstream,
        );
        e.retry_after = Some(1);
        e
    }

    pub fn upstream_timeout(attempts: u32, budget: std::time::Duration) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_error",
            "upstream_timeout",
            format!(
                "The upstream provider did not answer in time ({attempts} attempt(s) within the request's budget of {}s).",
                budget.as_secs_f64()
            ),
            ErrorSource::Upstream,
        )
    }

    /// Every backend tried answered 429; `wait` is the shortest `Retry-After` they gave.
    pub fn upstream_rate_limited(model: &str, wait: std::time::Duration) -> Self {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            "upstream_rate_limited",
            format!("Every provider for model '{model}' is rate-limiting requests. Try again in {secs}s."),
            ErrorSource::Upstream,
        );
        e.retry_after = Some(secs);
        e
    }

    /// The gateway holds as many request bodies as it may: try again shortly.
    pub fn busy() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "server_busy",
            "The gateway is at its limit of buffered request bodies; retry shortly.",
            ErrorSource::Internal,
        );
        e.retry_after = Some(1);
        e
    }

    /// One user's requests hold their whole share of the body budget.
    pub fn user_upload_budget(share: usize) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            "too_many_uploads",
            format!(
                "Your requests are uploading {share} bytes at once, your share of the gateway's buffer; \
                 retry when one of them has finished."
            ),
            ErrorSource::Downstream,
        );
        e.retry_after = Some(1);
        e
    }

    pub fn upstream_failed(attempts: u32, last: &str) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            "upstream_error",
            format!("The upstream provider failed after {attempts} attempt(s): {last}."),
            ErrorSource::Upstream,
        )
    }

    pub fn plugin_unavailable(what: &str) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "auth_policy_unavailable",
            format!("The {what} is failing; the request was denied for safety."),
            ErrorSource::Internal,
        );
        e.retry_after = Some(1);
        e
    }

    /// A budget (`[users.X.budget]`) or `tokens_per_minute` has no room for the request.
    pub fn over_budget(limit: &'static str, resets_ms: u64) -> Self {
        let wait_s = resets_ms.saturating_sub(crate::health::now_ms()).div_ceil(1000);
        let resets = httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_millis(resets_ms));
        let mut e = if limit == "tokens_per_minute" {
            Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "tokens",
                "rate_limit_exceeded",
                format!("Rate limit reached for tokens per minute. Try again in {wait_s}s."),
                ErrorSource::Downstream,
            )
        } else {
            Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "insufficient_quota",
                "insufficient_quota",
                format!("You exceeded your budget ({limit}); it resets at {resets}."),
                ErrorSource::Downstream,
            )
        };
        e.retry_after = Some(wait_s.max(1));
        e
    }

    /// `[cluster] on_unavailable = "deny"`: the shared rate limits cannot be read.
    pub fn shared_limits_unavailable() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "rate_limits_unavailable",
            "The gateway cannot reach its shared rate-limit store and is configured to refuse rate-limited \
             requests until it can; retry shortly.",
            ErrorSource::Internal,
        );
        e.retry_after = Some(1);
        e
    }

    pub fn rate_limited(limit: u32, retry_after: std::time::Duration) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            "rate_limit_exceeded",
            format!(
                "Rate limit reached ({limit} requests in the window). Try again in {:.0}s.",
                retry_after.as_secs_f64().ceil()
            ),
            ErrorSource::Downstream,
        );
        e.retry_after = Some(retry_after.as_secs_f64().ceil() as u64);
        e
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal_error", message, ErrorSource::Internal)
    }

    /// A denial from an auth policy, with its own status and code.
    pub fn denied(status: u16, code: &str, message: String) -> Self {
        let status =
            StatusCode::from_u16(status).ok().filter(|s| s.is_client_error()).unwrap_or(StatusCode::UNAUTHORIZED);
        let kind = if status == StatusCode::FORBIDDEN { "permission_error" } else { "authentication_error" };
        // Codes from plugins are free text; map the known ones to static labels so
        // metrics stay low-cardinality.
        let code = match code {
            "missing_api_key" => "missing_api_key",
            "invalid_api_key" => "invalid_api_key",
            "user_disabled" => "user_disabled",
            "model_not_allowed" => "model_not_allowed",
            _ if status == StatusCode::FORBIDDEN => "forbidden",
            _ => "unauthorized",
        };
        Self::new(status, kind, code, message, ErrorSource::Downstream)
    }

    pub fn json_body(&self) -> Bytes {
        #[derive(Serialize)]
        struct Envelope<'a> {
            error: Body<'a>,
        }
        #[derive(Serialize)]
        struct Body<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            code: &'a str,
            param: Option<&'a str>,
        }
        let envelope =
            Envelope { error: Body { message: &self.message, kind: self.kind, code: self.code, param: self.param } };
        serde_json::to_vec(&envelope).map(Bytes::from).unwrap_or_else(|_| Bytes::from_static(b"{\"error\":{\"message\":\"internal error\",\"type\":\"server_error\",\"code\":\"internal_error\",\"param\":null}}"))
    }

    pub fn into_response(self) -> Response<BerryBody> {
        self.into_response_as(crate::adapter::Dialect::OpenAi)
    }

    /// The response in the shape the client's API uses for errors.
    pub fn into_response_as(self, dialect: crate::adapter::Dialect) -> Response<BerryBody> {
        let body = match dialect {
            crate::adapter::Dialect::OpenAi => self.json_body(),
            dialect => Bytes::from(crate::adapter::error_body(
                dialect,
                self.status.as_u16(),
                self.kind,
                self.code,
                &self.message,
            )),
        };
        let mut response = Response::new(full(body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for GatewayError {}
