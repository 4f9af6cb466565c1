//! `backend_type = "anthropic"` (berry-api: `"claude"`): Anthropic's Messages API.
//!
//! Requests to `/v1/messages` (Anthropic's own API, from clients that speak it) pass
//! through natively. OpenAI chat completions are translated: the request in
//! [`request`], the answer in [`response`], a streamed answer event by event in
//! [`stream`]. `base_url` may end in `/v1` or not (`https://api.anthropic.com`).

pub mod request;
pub mod response;
pub mod stream;

use http::{HeaderName, HeaderValue};
use serde_json::Value;

use super::{Adapter, StreamTranslator};
use crate::config::Provider;
use crate::health::ErrorClass;
use crate::relay::Endpoint;

/// The API version Berry speaks, sent unless the provider's headers set another.
pub const API_VERSION: &str = "2023-06-01";

pub struct Anthropic;

impl Adapter for Anthropic {
    fn url(&self, provider: &Provider, endpoint: Endpoint, _model: &str, _stream: bool) -> Option<String> {
        let base = provider.base_url.as_str();
        let root = if base.ends_with("/v1") { base.to_string() } else { format!("{base}/v1") };
        let path = match endpoint {
            Endpoint::ChatCompletions | Endpoint::Messages => "/messages",
            Endpoint::CountTokens => "/messages/count_tokens",
            Endpoint::Models => "/models",
            _ => return None,
        };
        Some(format!("{root}{path}"))
    }

    fn key_header(&self, key: &str) -> Result<(HeaderName, HeaderValue), String> {
        let value = HeaderValue::try_from(key).map_err(|_| "not a valid header value")?;
        Ok((HeaderName::from_static("x-api-key"), value))
    }

    fn default_headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        vec![(HeaderName::from_static("anthropic-version"), HeaderValue::from_static(API_VERSION))]
    }

    fn native(&self, endpoint: Endpoint) -> bool {
        matches!(endpoint, Endpoint::Messages | Endpoint::CountTokens | Endpoint::Models)
    }

    fn translates_chat(&self) -> bool {
        true
    }

    fn chat_request(&self, chat: &Value, model: &str, stream: bool) -> Result<Vec<u8>, String> {
        let body = request::from_chat(chat, model, stream)?;
        serde_json::to_vec(&body).map_err(|e| e.to_string())
    }

    fn chat_response(&self, body: &[u8], model: &str) -> Result<Vec<u8>, String> {
        let message: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        serde_json::to_vec(&response::to_chat(&message, model)?).map_err(|e| e.to_string())
    }

    fn chat_stream(&self, model: &str, include_usage: bool) -> Box<dyn StreamTranslator> {
        Box::new(stream::ToChat::new(model, include_usage))
    }
}

/// Anthropic's error type for a status, as its API names them.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

/// The health class of an error Anthropic reports inside a stream.
pub fn class_of(error_type: &str) -> ErrorClass {
    match error_type {
        "rate_limit_error" => ErrorClass::RateLimit,
        "authentication_error" | "permission_error" => ErrorClass::Auth,
        "not_found_error" => ErrorClass::Model,
        "timeout_error" => ErrorClass::Timeout,
        _ => ErrorClass::Server,
    }
}
