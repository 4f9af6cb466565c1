//! Provider adapters: how Berry speaks each provider's wire format.
//!
//! Berry's own language is OpenAI's. A chat request arrives in OpenAI's shape (or is
//! put into it from Anthropic's, for `/v1/messages`: see [`inbound`]), and the
//! provider's adapter turns it into that provider's request, then the provider's
//! answer back into OpenAI's — a streamed answer chunk by chunk, in bounded memory.
//! The `openai` adapter does nothing at all: bytes pass through untouched. Health,
//! retries, metrics and strategies only ever see an attempt's outcome, so they work
//! the same whatever the adapter.
//!
//! One small module per provider: [`openai`], [`azure`], [`anthropic`], [`gemini`].

pub mod anthropic;
pub mod azure;
pub mod chunk;
mod content;
pub mod gemini;
pub mod inbound;
pub mod openai;
pub mod sse;

use http::{HeaderName, HeaderValue};
use serde_json::Value;

use crate::config::{BackendType, Provider};
use crate::health::ErrorClass;
use crate::relay::Endpoint;

/// One provider wire format.
pub trait Adapter: Send + Sync {
    /// The upstream URL of `endpoint` for the provider's `model`, or `None` when the
    /// provider does not serve it. For a provider that translates chat
    /// ([`Adapter::translates_chat`]), `ChatCompletions` is the URL of its own chat API.
    fn url(&self, provider: &Provider, endpoint: Endpoint, model: &str, stream: bool) -> Option<String>;

    /// The header that carries the provider's key.
    fn key_header(&self, key: &str) -> Result<(HeaderName, HeaderValue), String> {
        let value = HeaderValue::try_from(format!("Bearer {key}")).map_err(|_| "not a valid header value")?;
        Ok((http::header::AUTHORIZATION, value))
    }

    /// Headers every request carries unless the provider's config sets them.
    fn default_headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        Vec::new()
    }

    /// Whether a client request to `endpoint` passes through as it is: the provider
    /// speaks that API itself.
    fn native(&self, endpoint: Endpoint) -> bool;

    /// Whether OpenAI chat completions are translated to and from the provider's
    /// own chat API (the methods below).
    fn translates_chat(&self) -> bool {
        false
    }

    /// An OpenAI chat request → the provider's request body.
    fn chat_request(&self, _chat: &Value, _model: &str, _stream: bool) -> Result<Vec<u8>, String> {
        Err("this provider does not translate chat completions".into())
    }

    /// The provider's successful answer → an OpenAI chat completion.
    fn chat_response(&self, _body: &[u8], _model: &str) -> Result<Vec<u8>, String> {
        Err("this provider does not translate chat completions".into())
    }

    /// The provider's streamed answer → OpenAI chat completion chunks.
    fn chat_stream(&self, _model: &str, _include_usage: bool) -> Box<dyn StreamTranslator> {
        Box::new(Passthrough)
    }

    /// The message of an error body in the provider's format, if it has one.
    fn error_message(&self, body: &[u8]) -> Option<String> {
        let v: Value = serde_json::from_slice(body).ok()?;
        v.pointer("/error/message").and_then(Value::as_str).map(str::to_string)
    }

    /// The class of a non-2xx answer (`None`: the caller's own bad request).
    fn classify(&self, status: u16, _body: &[u8]) -> Option<ErrorClass> {
        ErrorClass::from_status(status)
    }
}

/// The adapter of a provider's `backend_type`.
pub fn for_backend(backend: BackendType) -> &'static dyn Adapter {
    match backend {
        BackendType::OpenAi => &openai::OpenAi,
        BackendType::Azure => &azure::Azure,
        BackendType::Anthropic => &anthropic::Anthropic,
        BackendType::Gemini => &gemini::Gemini,
    }
}

/// A failure the provider reported inside a stream that had started.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamFault {
    pub class: ErrorClass,
    pub message: String,
}

impl StreamFault {
    /// The provider's stream ended before the event that completes it (`what`, e.g.
    /// "before message_stop"): the connection broke, the answer is incomplete.
    pub fn cut_short(what: &str) -> Self {
        StreamFault { class: ErrorClass::Network, message: format!("the stream ended {what}") }
    }
}

/// Turns one streamed answer into another format, chunk by chunk. Chunk boundaries
/// are arbitrary (an event may arrive split anywhere); what is written to `out` is
/// always whole events.
pub trait StreamTranslator: Send {
    /// Take upstream bytes; append what the client gets to `out`.
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), StreamFault>;
    /// The upstream ended cleanly: append whatever is still owed (closing events).
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), StreamFault>;
}

/// The identity translation.
pub struct Passthrough;

impl StreamTranslator for Passthrough {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), StreamFault> {
        out.extend_from_slice(chunk);
        Ok(())
    }
    fn finish(&mut self, _out: &mut Vec<u8>) -> Result<(), StreamFault> {
        Ok(())
    }
}

/// Two translations in a row (a Gemini stream to OpenAI chunks to Anthropic events).
pub struct Chain {
    first: Box<dyn StreamTranslator>,
    second: Box<dyn StreamTranslator>,
    between: Vec<u8>,
}

impl Chain {
    pub fn new(first: Box<dyn StreamTranslator>, second: Box<dyn StreamTranslator>) -> Self {
        Chain { first, second, between: Vec::new() }
    }
}

impl StreamTranslator for Chain {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), StreamFault> {
        self.between.clear();
        self.first.feed(chunk, &mut self.between)?;
        if self.between.is_empty() {
            return Ok(());
        }
        self.second.feed(&self.between, out)
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), StreamFault> {
        self.between.clear();
        self.first.finish(&mut self.between)?;
        if !self.between.is_empty() {
            self.second.feed(&self.between, out)?;
        }
        self.second.finish(out)
    }
}

/// The API a client speaks, which decides the shape of its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
}

/// An error body in `dialect`'s shape. `kind` is OpenAI's error type; Anthropic's is
/// derived from the status, as Anthropic's own API does.
pub fn error_body(dialect: Dialect, status: u16, kind: &str, code: &str, message: &str) -> Vec<u8> {
    let value = match dialect {
        Dialect::OpenAi => {
            serde_json::json!({ "error": { "message": message, "type": kind, "code": code, "param": null } })
        }
        Dialect::Anthropic => {
            serde_json::json!({ "type": "error", "error": { "type": anthropic::error_type(status), "message": message } })
        }
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

/// OpenAI's error type for an upstream status.
pub fn openai_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

/// Milliseconds since the epoch / 1000: the `created` of translated answers.
pub(crate) fn now_s() -> u64 {
    crate::health::now_ms() / 1000
}

/// Text of a JSON value that is a string or a list of text parts (OpenAI's and
/// Anthropic's two ways of writing content).
pub(crate) fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("")
        }
        _ => String::new(),
    }
}
