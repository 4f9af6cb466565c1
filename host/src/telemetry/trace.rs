//! Traces: W3C trace context in and out of every relayed request, and (with an OTLP
//! endpoint) OpenTelemetry spans exported over OTLP/HTTP.
//!
//! Every upstream attempt carries a `traceparent`. With export off Berry is
//! transparent: the caller's context goes on unchanged (the provider's spans hang
//! under the caller's), or, without one, a new unsampled trace is started; no span
//! is built, so the hot path pays one header parse and one header format.
//!
//! With export on, a request is a SERVER span — the caller's child when it sent a
//! `traceparent` — and each attempt a CLIENT span beneath it, with the GenAI
//! semantic conventions' attributes and the routing decision (strategy, backend,
//! attempt number, fallback, outcome class). The provider sees the attempt's span
//! as its parent. Finished spans go into a bounded queue that one task exports in
//! batches; a full queue drops the span and counts it
//! (`berry_trace_spans_dropped_total`): a request never waits on the collector.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor};
use prometheus_client::metrics::counter::Counter;

use crate::config::TelemetrySettings;

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Spans exported per request to the collector, at most.
const BATCH: usize = 512;
/// A partial batch waits this long for company.
const BATCH_WAIT: Duration = Duration::from_millis(500);

/// The gateway's tracer: built at start when an OTLP endpoint is configured.
pub struct Tracer {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    exporting: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Tracer {
    /// `None` without an endpoint. Starts the export task (call within the runtime).
    pub fn start(settings: &TelemetrySettings, dropped: Counter) -> Result<Option<Arc<Tracer>>, String> {
        use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
        let Some(url) = &settings.otlp_traces_url else { return Ok(None) };
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = opentelemetry_http::hyper::HyperClient::new(https, Duration::from_secs(10), None);
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(settings.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("telemetry.otlp_endpoint: {e}"))?;
        exporter.set_resource(&resource);
        let (tx, rx) = tokio::sync::mpsc::channel(settings.queue_size);
        let exporting = tokio::spawn(export(exporter, rx, dropped.clone()));
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sampling_ratio)));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Queue { tx, dropped })
            .with_sampler(sampler)
            .with_resource(resource)
            .build();
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "berry");
        tracing::info!(endpoint = %clip_url(url), ratio = settings.sampling_ratio, "exporting traces over OTLP/HTTP");
        Ok(Some(Arc::new(Tracer { tracer, provider, exporting: tokio::sync::Mutex::new(Some(exporting)) })))
    }

    /// Stop taking spans and export what is queued (at most `within`).
    pub async fn shutdown(&self, within: Duration) {
        // Dropping the processor's sender ends the export task once it has drained.
        let _ = self.provider.shutdown();
        if let Some(task) = self.exporting.lock().await.take()
            && tokio::time::timeout(within, task).await.is_err()
        {
            tracing::warn!("trace export did not finish in {within:?}; the last spans may be missing");
        }
    }
}

/// The collector's URL without credentials or query, for logs.
fn clip_url(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or("");
    match no_query.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.rsplit_once('@').map_or(rest, |(_, host)| host)),
        None => no_query.to_string(),
    }
}

/// The span processor: finished spans into the bounded queue, or counted as dropped.
#[derive(Debug)]
struct Queue {
    tx: tokio::sync::mpsc::Sender<SpanData>,
    dropped: Counter,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.tx.try_send(span).is_err() {
            self.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The export task: batches of up to [`BATCH`] spans, sent when full or after
/// [`BATCH_WAIT`]; a failed export drops its batch (counted, logged at most every
/// 10 s) — the collector being down must not grow memory.
async fn export(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: tokio::sync::mpsc::Receiver<SpanData>,
    dropped: Counter,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        let open = match tokio::time::timeout(BATCH_WAIT, rx.recv_many(&mut batch, BATCH)).await {
            Ok(0) => false,
            Ok(_) if batch.len() < BATCH => {
                // Gather what else arrives within the wait, up to a full batch.
                let deadline = tokio::time::Instant::now() + BATCH_WAIT;
                while batch.len() < BATCH {
                    let room = BATCH - batch.len();
                    match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                true
            }
            Ok(_) | Err(_) => true,
        };
        if !batch.is_empty() {
            let n = batch.len() as u64;
            if let Err(e) = exporter.export(std::mem::replace(&mut batch, Vec::with_capacity(BATCH))).await {
                dropped.inc_by(n);
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    last_warning = Some(std::time::Instant::now());
                    tracing::warn!("trace export failed, {n} spans dropped: {e}");
                }
            }
        }
        if !open {
            return;
        }
    }
}

/// A W3C trace context (`traceparent`, version 00).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct W3c {
    pub trace_id: u128,
    pub span_id: u64,
    pub flags: u8,
}

impl W3c {
    /// `00-<32 hex>-<16 hex>-<2 hex>`; all-zero ids and other versions' unknown
    /// layouts are refused (a new trace starts instead).
    pub fn parse(value: &[u8]) -> Option<W3c> {
        if value.len() < 55 || (value.len() > 55 && value.get(55) != Some(&b'-')) {
            return None;
        }
        let text = std::str::from_utf8(&value[..55]).ok()?;
        let mut parts = text.split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if version.len() != 2 || version == "ff" || !hex(version) || !hex(trace) || !hex(span) || !hex(flags) {
            return None;
        }
        if version == "00" && value.len() != 55 {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(W3c { trace_id, span_id, flags })
    }

    /// Written by hand into a stack buffer: this runs on every upstream attempt.
    pub fn header(&self) -> HeaderValue {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        for (i, byte) in self.trace_id.to_be_bytes().iter().enumerate() {
            out[3 + 2 * i] = HEX[usize::from(byte >> 4)];
            out[4 + 2 * i] = HEX[usize::from(byte & 15)];
        }
        for (i, byte) in self.span_id.to_be_bytes().iter().enumerate() {
            out[36 + 2 * i] = HEX[usize::from(byte >> 4)];
            out[37 + 2 * i] = HEX[usize::from(byte & 15)];
        }
        out[54] = b'0' + (self.flags & 1);
        // Hex digits and dashes: always a valid header value.
        HeaderValue::from_bytes(&out)
            .unwrap_or(HeaderValue::from_static("00-00000000000000000000000000000000-0000000000000000-00"))
    }

    fn random() -> W3c {
        W3c { trace_id: fastrand::u128(1..), span_id: fastrand::u64(1..), flags: 0 }
    }

    fn remote(&self) -> Context {
        let sc = SpanContext::new(
            TraceId::from_bytes(self.trace_id.to_be_bytes()),
            SpanId::from_bytes(self.span_id.to_be_bytes()),
            TraceFlags::new(self.flags & 1),
            true,
            TraceState::default(),
        );
        Context::new().with_remote_span_context(sc)
    }
}

/// One relayed request's trace: its context, and its spans when exporting.
#[derive(Default)]
pub struct RequestTrace {
    /// The caller's context, or a new one (export off, no caller context).
    context: Option<W3c>,
    tracestate: Option<HeaderValue>,
    tracer: Option<Arc<Tracer>>,
    /// The request's span, in a context (export on).
    request: Option<Context>,
    /// The current attempt's span (export on).
    attempt: Option<Context>,
    /// The model the answering provider named (export on).
    response_model: Option<String>,
}

/// What the request span says about the request as a whole.
pub struct RequestEnd<'a> {
    pub status: u16,
    pub attempts: u32,
    pub backend: Option<&'a str>,
    pub error: Option<&'static str>,
    pub usage: Option<crate::relay::usage::Usage>,
}

/// What an attempt span says about its attempt.
pub struct AttemptStart<'a> {
    pub operation: &'static str,
    pub provider_name: &'static str,
    pub request_model: &'a str,
    pub server_address: &'a str,
    pub backend: &'a str,
    pub number: u32,
    pub strategy: &'a str,
    pub fallback: bool,
}

impl RequestTrace {
    /// Take the caller's context from `headers`; with a tracer, open the request's
    /// span, started when the request arrived (`arrived` ago).
    pub fn begin(
        &mut self,
        tracer: Option<&Arc<Tracer>>,
        headers: &HeaderMap,
        operation: &'static str,
        model: &str,
        arrived: Duration,
    ) {
        self.context = headers.get(TRACEPARENT).and_then(|v| W3c::parse(v.as_bytes()));
        self.tracestate = self.context.and(headers.get(TRACESTATE)).cloned();
        let Some(tracer) = tracer else { return };
        let parent = self.context.map_or_else(Context::new, |c| c.remote());
        let span = tracer
            .tracer
            .span_builder(format!("{operation} {model}"))
            .with_kind(SpanKind::Server)
            .with_start_time(SystemTime::now() - arrived)
            .with_attributes([
                KeyValue::new("gen_ai.operation.name", operation),
                KeyValue::new("gen_ai.request.model", model.to_string()),
            ])
            .start_with_context(&tracer.tracer, &parent);
        self.request = Some(parent.with_span(span));
        self.tracer = Some(tracer.clone());
    }

    /// Open an attempt's span (with a tracer) and give the `traceparent` (and the
    /// caller's `tracestate`) its upstream request carries.
    pub fn attempt(&mut self, a: AttemptStart<'_>, upstream: &mut HeaderMap) {
        let w3c = match (&self.tracer, &self.request) {
            (Some(tracer), Some(request)) => {
                let span = tracer
                    .tracer
                    .span_builder(format!("{} {}", a.operation, a.request_model))
                    .with_kind(SpanKind::Client)
                    .with_attributes([
                        KeyValue::new("gen_ai.operation.name", a.operation),
                        KeyValue::new("gen_ai.provider.name", a.provider_name),
                        KeyValue::new("gen_ai.request.model", a.request_model.to_string()),
                        KeyValue::new("server.address", a.server_address.to_string()),
                        KeyValue::new("berry.backend", a.backend.to_string()),
                        KeyValue::new("berry.attempt", i64::from(a.number)),
                        KeyValue::new("berry.strategy", a.strategy.to_string()),
                        KeyValue::new("berry.fallback_used", a.fallback),
                    ])
                    .start_with_context(&tracer.tracer, request);
                let sc = span.span_context().clone();
                self.attempt = Some(Context::new().with_span(span));
                W3c {
                    trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
                    span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
                    flags: sc.trace_flags().to_u8(),
                }
            }
            // Export off: the caller's context unchanged, or one new trace for all
            // of this request's attempts.
            _ => *self.context.get_or_insert_with(W3c::random),
        };
        upstream.insert(TRACEPARENT, w3c.header());
        if let Some(state) = &self.tracestate {
            upstream.insert(TRACESTATE, state.clone());
        }
    }

    /// Note the model a provider's answer (or a stream's first chunk) names, when
    /// spans are being recorded (otherwise it is not read at all).
    pub fn answered(&mut self, bytes: &[u8]) {
        if self.wants_model() {
            self.response_model = crate::relay::usage::response_model(bytes);
        }
    }

    /// Whether the current attempt's span is recorded (and so wants the model the
    /// answer names).
    pub fn wants_model(&self) -> bool {
        self.attempt.as_ref().is_some_and(|cx| cx.span().is_recording())
    }

    pub fn set_response_model(&mut self, model: Option<String>) {
        self.response_model = model;
    }

    /// Close the current attempt's span with its outcome class (and the usage of the
    /// attempt that answered). Attributes go in with one call: each call takes the
    /// span's lock.
    pub fn end_attempt(&mut self, outcome: crate::health::Outcome, usage: Option<crate::relay::usage::Usage>) {
        let Some(cx) = self.attempt.take() else { return };
        let span = cx.span();
        let mut attributes = Vec::with_capacity(5);
        attributes.push(KeyValue::new("berry.outcome", outcome.as_str()));
        if let crate::health::Outcome::Failure(class) = outcome {
            attributes.push(KeyValue::new("error.type", class.as_str()));
            span.set_status(Status::error(class.as_str()));
        } else if let Some(model) = &self.response_model {
            attributes.push(KeyValue::new("gen_ai.response.model", model.clone()));
        }
        if let Some(u) = usage {
            usage_attributes(&mut attributes, &u);
        }
        span.set_attributes(attributes);
        span.end();
    }

    /// Close the request's span (and an attempt still open, as a stream's is).
    pub fn end(&mut self, end: RequestEnd<'_>) {
        if self.attempt.is_some() {
            let outcome = match end.error {
                Some("stream_interrupted") => crate::health::Outcome::Failure(crate::health::ErrorClass::Network),
                _ => crate::health::Outcome::Success,
            };
            self.end_attempt(outcome, end.usage);
        }
        let Some(cx) = self.request.take() else { return };
        let span = cx.span();
        let mut attributes = Vec::with_capacity(8);
        attributes.push(KeyValue::new("http.response.status_code", i64::from(end.status)));
        attributes.push(KeyValue::new("berry.attempts", i64::from(end.attempts)));
        if let Some(b) = end.backend {
            attributes.push(KeyValue::new("berry.backend", b.to_string()));
        }
        if let Some(model) = self.response_model.take() {
            attributes.push(KeyValue::new("gen_ai.response.model", model));
        }
        if let Some(u) = end.usage {
            usage_attributes(&mut attributes, &u);
        }
        if let Some(e) = end.error {
            attributes.push(KeyValue::new("error.type", e));
        }
        span.set_attributes(attributes);
        if end.status >= 500 {
            span.set_status(Status::error(end.error.unwrap_or("server error")));
        }
        span.end();
    }

    /// Tag the request span with the routing decision.
    pub fn routed(&self, strategy: &str, fallback: Option<&'static str>) {
        let Some(cx) = &self.request else { return };
        let mut attributes = vec![
            KeyValue::new("berry.strategy", strategy.to_string()),
            KeyValue::new("berry.fallback_used", fallback.is_some()),
        ];
        if let Some(reason) = fallback {
            attributes.push(KeyValue::new("berry.fallback_reason", reason));
        }
        cx.span().set_attributes(attributes);
    }
}

fn usage_attributes(attributes: &mut Vec<KeyValue>, u: &crate::relay::usage::Usage) {
    attributes.push(KeyValue::new("gen_ai.usage.input_tokens", u.prompt_tokens as i64));
    attributes.push(KeyValue::new("gen_ai.usage.output_tokens", u.completion_tokens as i64));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_what_the_spec_rejects() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let w = W3c::parse(v.as_bytes()).expect("valid");
        assert_eq!(w.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(w.span_id, 0x00f067aa0ba902b7);
        assert_eq!(w.flags, 1);
        assert_eq!(w.header().to_str().ok(), Some(v));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "",
        ] {
            assert_eq!(W3c::parse(bad.as_bytes()), None, "{bad}");
        }
        // A later version may append fields after a dash: its first four are read.
        assert!(W3c::parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what").is_some());
    }

    #[test]
    fn collector_urls_are_logged_without_credentials() {
        assert_eq!(clip_url("https://user:pw@otel.example:4318/v1/traces?k=1"), "https://otel.example:4318/v1/traces");
    }
}
