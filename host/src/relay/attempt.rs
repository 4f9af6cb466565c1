//! One upstream exchange and what it means: a complete answer, a stream that has
//! started, or a failure to move on from. Answers from a backend that speaks another
//! format are translated here (via the attempt's [`Plan`]).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::plan::Plan;
use super::usage::{self, SseUsage, Usage};
use crate::adapter::{Adapter, Dialect, StreamTranslator};
use crate::gateway::Snapshot;
use crate::health::{ErrorClass, Outcome};
use crate::server::body::{BerryBody, full};

/// Largest non-streaming upstream response Berry buffers.
const MAX_UPSTREAM_BODY: usize = 64 << 20;
/// Largest upstream error body kept for a streaming request.
const MAX_ERROR_BODY: usize = 64 << 10;

pub enum Attempt {
    /// A complete answer for the client, with the token usage it reported and (when
    /// asked: [`Reply::read_model`]) the model it names.
    Answer(Response<BerryBody>, Outcome, Option<Usage>, Option<String>),
    /// A stream whose first bytes arrived: from here on it is passed on.
    Stream(Started),
    /// Failed before anything reached the client: try the next backend. A rate
    /// limit carries the provider's `Retry-After`.
    Retry(ErrorClass, String, Option<Duration>),
}

/// A stream that has started.
pub struct Started {
    pub parts: http::response::Parts,
    /// What the client gets first (already translated, if the plan translates).
    pub first: Option<Bytes>,
    pub rest: Incoming,
    /// `None`: the rest passes through; else it is translated.
    pub translator: Option<Box<dyn StreamTranslator>>,
    /// Token usage seen so far in the provider's bytes.
    pub usage: SseUsage,
}

/// How this attempt's answer is read and given back.
pub struct Reply<'a> {
    pub plan: Plan,
    pub adapter: &'a dyn Adapter,
    /// The provider's model name.
    pub model: &'a str,
    pub include_usage: bool,
    pub dialect: Dialect,
    /// Keeps the configuration's secrets out of the provider's failures.
    pub redactor: &'a crate::redact::Redactor,
    /// Read the model a successful answer names (for a recorded trace span).
    pub read_model: bool,
    /// The provider's way out (direct or its proxy).
    pub route: super::ClientRoute,
}

/// A non-streaming attempt: the whole exchange (connect, headers, body) must finish
/// within `total`.
pub async fn unary(snapshot: &Snapshot, request: Request<Full<Bytes>>, total: Duration, reply: &Reply<'_>) -> Attempt {
    let exchange = async {
        let response = snapshot.client.request(reply.route, request).await.map_err(classify_transport)?;
        let (parts, body) = response.into_parts();
        let bytes = collect(body, MAX_UPSTREAM_BODY)
            .await
            .map_err(|e| (ErrorClass::Network, format!("reading the response failed: {e}")))?;
        Ok::<_, (ErrorClass, String)>((parts, bytes))
    };
    match tokio::time::timeout(total, exchange).await {
        Err(_) => {
            Attempt::Retry(ErrorClass::Timeout, format!("no complete response within {}s", total.as_secs_f64()), None)
        }
        Ok(Err((class, description))) => Attempt::Retry(class, description, None),
        Ok(Ok((parts, bytes))) => judge(parts, bytes, reply),
    }
}

/// A streaming attempt: the response headers and the first bytes for the client must
/// arrive within `first_byte`. Until then a failure — an error status, a broken
/// connection, an error event from the provider — can still move to the next backend.
pub async fn stream(
    snapshot: &Snapshot,
    request: Request<Full<Bytes>>,
    first_byte: Duration,
    reply: &Reply<'_>,
) -> Attempt {
    let exchange = async {
        let response = snapshot.client.request(reply.route, request).await.map_err(classify_transport)?;
        let (parts, mut body) = response.into_parts();
        if !parts.status.is_success() {
            let bytes = Limited::new(body, MAX_ERROR_BODY).collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            return Ok(judge(parts, bytes, reply));
        }
        let mut translator = reply.plan.stream(reply.adapter, reply.model, reply.include_usage);
        let mut usage = SseUsage::default();
        let fault = |f: crate::adapter::StreamFault| (f.class, f.message);
        loop {
            let data = match body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => data,
                    _ => continue,
                },
                Some(Err(e)) => return Err((ErrorClass::Network, format!("stream failed before its first byte: {e}"))),
                None => {
                    // Ended before the client got anything: what is owed, if anything.
                    let mut out = Vec::new();
                    if let Some(t) = translator.as_mut() {
                        t.finish(&mut out).map_err(fault)?;
                    }
                    let first = (!out.is_empty()).then(|| Bytes::from(out));
                    return Ok(Attempt::Stream(Started { parts, first, rest: body, translator: None, usage }));
                }
            };
            usage.feed(&data);
            let Some(t) = translator.as_mut() else {
                return Ok(Attempt::Stream(Started { parts, first: Some(data), rest: body, translator, usage }));
            };
            let mut out = Vec::new();
            t.feed(&data, &mut out).map_err(fault)?;
            if !out.is_empty() {
                let first = Some(Bytes::from(out));
                return Ok(Attempt::Stream(Started { parts, first, rest: body, translator, usage }));
            }
        }
    };
    match tokio::time::timeout(first_byte, exchange).await {
        Err(_) => {
            Attempt::Retry(ErrorClass::Timeout, format!("no first byte within {}s", first_byte.as_secs_f64()), None)
        }
        Ok(Err((class, description))) => Attempt::Retry(class, description, None),
        Ok(Ok(attempt)) => attempt,
    }
}

/// A whole response body of at most `limit` bytes. A body that arrives as one frame
/// (the usual case) is kept as it is, without a copy.
async fn collect(mut body: Incoming, limit: usize) -> Result<Bytes, String> {
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() else { continue };
        if first.as_ref().map_or(0, Bytes::len) + joined.len() + data.len() > limit {
            return Err(format!("larger than {limit} bytes"));
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            None => joined.extend_from_slice(&data),
            Some(f) => {
                joined.extend_from_slice(&f);
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(joined)))
}

/// Decide what a complete upstream answer means.
fn judge(parts: http::response::Parts, bytes: Bytes, reply: &Reply<'_>) -> Attempt {
    let status = parts.status;
    let native = reply.plan.is_native();
    if status.is_success() {
        let usage = usage::of_json(&bytes);
        let model = if reply.read_model { usage::response_model(&bytes) } else { None };
        return match reply.plan.answer(bytes, reply.adapter, reply.model) {
            Ok(body) => {
                let response = passthrough(status, &parts.headers, body, native, reply);
                Attempt::Answer(response, Outcome::Success, usage, model)
            }
            Err(e) => Attempt::Retry(ErrorClass::Server, format!("the provider's answer could not be read: {e}"), None),
        };
    }
    match reply.adapter.classify(status.as_u16(), &bytes) {
        Some(class) => {
            let wait = (class == ErrorClass::RateLimit).then(|| retry_after(&parts.headers)).flatten();
            Attempt::Retry(class, format!("upstream answered {}", status.as_u16()), wait)
        }
        // The caller's own bad request: hand the provider's explanation back.
        None if status.is_client_error() => {
            let body = reply.plan.client_error(status.as_u16(), bytes, reply.adapter, reply.dialect);
            let body = reply.redactor.bytes(body);
            Attempt::Answer(passthrough(status, &parts.headers, body, native, reply), Outcome::ClientError, None, None)
        }
        None => Attempt::Retry(ErrorClass::Server, format!("upstream answered {}", status.as_u16()), None),
    }
}

/// A provider's `Retry-After` (`retry-after-ms`, as OpenAI sends it, first), as a
/// wait from now.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let seconds = |s: f64| (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s.min(86_400.0)));
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return seconds(ms / 1000.0);
    }
    let value = text("retry-after")?;
    match value.parse::<f64>() {
        Ok(s) => seconds(s),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            Some(at.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO))
        }
    }
}

/// A complete answer for the client. A translated one is JSON whatever the provider
/// sent; either way the provider's useful headers come along.
fn passthrough(
    status: StatusCode,
    upstream: &HeaderMap,
    bytes: Bytes,
    native: bool,
    reply: &Reply<'_>,
) -> Response<BerryBody> {
    let mut response = Response::new(full(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = HeaderMap::with_capacity(8);
    let content_type = upstream
        .get(header::CONTENT_TYPE)
        .filter(|_| native)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("application/json"));
    response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    relay_headers(upstream, response.headers_mut(), reply.redactor);
    response
}

/// The response to a stream: what describes the stream, and the provider's useful
/// headers; hop-by-hop headers stay behind.
pub fn stream_response(
    upstream: &http::response::Parts,
    native: bool,
    body: BerryBody,
    redactor: &crate::redact::Redactor,
) -> Response<BerryBody> {
    let mut response = Response::new(body);
    *response.status_mut() = upstream.status;
    let headers = response.headers_mut();
    let content_type = upstream
        .headers
        .get(header::CONTENT_TYPE)
        .filter(|_| native)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    relay_headers(&upstream.headers, headers, redactor);
    response
}

/// Provider headers a client can use: rate-limit state (`x-ratelimit-*`,
/// `anthropic-ratelimit-*`), processing time, and the provider's request id (as
/// `x-upstream-request-id`: `x-request-id` is Berry's own).
fn relay_headers(upstream: &HeaderMap, to: &mut HeaderMap, redactor: &crate::redact::Redactor) {
    for (name, value) in upstream {
        let n = name.as_str();
        if n.starts_with("x-ratelimit-") || n.starts_with("anthropic-ratelimit-") || n == "openai-processing-ms" {
            to.append(name.clone(), redactor.header(value));
        }
    }
    let request_id = ["x-request-id", "request-id", "x-goog-request-id"].iter().find_map(|n| upstream.get(*n));
    if let Some(id) = request_id {
        to.insert(HeaderName::from_static("x-upstream-request-id"), redactor.header(id));
    }
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
