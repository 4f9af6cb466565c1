//! `backend_type = "gemini"`: Google's Gemini API (`generateContent`,
//! `streamGenerateContent?alt=sse`), key in `x-goog-api-key`. OpenAI chat requests
//! are translated ([`request`]), and the answers back ([`response`], [`stream`]).
//! `base_url` is the API root, e.g. `https://generativelanguage.googleapis.com/v1beta`.

pub mod request;
pub mod response;
pub mod stream;

use http::{HeaderName, HeaderValue};
use serde_json::Value;

use super::openai::path_segment;
use super::{Adapter, StreamTranslator};
use crate::config::Provider;
use crate::health::ErrorClass;
use crate::relay::Endpoint;

pub struct Gemini;

impl Adapter for Gemini {
    fn url(&self, provider: &Provider, endpoint: Endpoint, model: &str, stream: bool) -> Option<String> {
        let base = &provider.base_url;
        match endpoint {
            Endpoint::ChatCompletions if stream => {
                Some(format!("{base}/models/{}:streamGenerateContent?alt=sse", path_segment(model)))
            }
            Endpoint::ChatCompletions => Some(format!("{base}/models/{}:generateContent", path_segment(model))),
            Endpoint::Models => Some(format!("{base}/models")),
            _ => None,
        }
    }

    fn key_header(&self, key: &str) -> Result<(HeaderName, HeaderValue), String> {
        let value = HeaderValue::try_from(key).map_err(|_| "not a valid header value")?;
        Ok((HeaderName::from_static("x-goog-api-key"), value))
    }

    fn native(&self, endpoint: Endpoint) -> bool {
        endpoint == Endpoint::Models
    }

    fn translates_chat(&self) -> bool {
        true
    }

    fn chat_request(&self, chat: &Value, _model: &str, _stream: bool) -> Result<Vec<u8>, String> {
        // The model and the streaming choice are in the URL, not the body.
        serde_json::to_vec(&request::from_chat(chat)?).map_err(|e| e.to_string())
    }

    fn chat_response(&self, body: &[u8], model: &str) -> Result<Vec<u8>, String> {
        let answer: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        serde_json::to_vec(&response::to_chat(&answer, model)).map_err(|e| e.to_string())
    }

    fn chat_stream(&self, model: &str, include_usage: bool) -> Box<dyn StreamTranslator> {
        Box::new(stream::ToChat::new(model, include_usage))
    }

    /// Gemini answers a bad key with 400 (`API_KEY_INVALID`), not 401: the reason
    /// code (structured, not message text) tells it from a bad request.
    fn classify(&self, status: u16, body: &[u8]) -> Option<ErrorClass> {
        if status == 400 && key_rejected(body) {
            return Some(ErrorClass::Auth);
        }
        ErrorClass::from_status(status)
    }
}

fn key_rejected(body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(body) else { return false };
    v.pointer("/error/details").and_then(Value::as_array).is_some_and(|details| {
        details.iter().any(|d| d.get("reason").and_then(Value::as_str) == Some("API_KEY_INVALID"))
    })
}
