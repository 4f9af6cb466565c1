//! How one request reaches one backend, and how its answer comes back.
//!
//! Most requests go to a backend that speaks the client's API: the body passes
//! through byte for byte (but `model`) and so does the answer. Otherwise the request
//! goes through OpenAI's chat shape: an Anthropic `/v1/messages` request is put into
//! it first, and a backend whose adapter translates chat (Anthropic, Gemini) gets its
//! own format from it; the answer takes the same road back.

use bytes::Bytes;
use serde_json::Value;

use super::Endpoint;
use super::body::RequestBody;
use crate::adapter::inbound::{self, stream::FromChat};
use crate::adapter::{Adapter, Chain, Dialect, StreamTranslator, error_body, openai_error_type};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The client spoke Anthropic's Messages API; the backend does not.
    from_messages: bool,
    /// The backend's adapter translates OpenAI chat into its own API.
    adapter_translates: bool,
    /// The upstream API called.
    pub upstream: Endpoint,
}

impl Plan {
    /// How a request to `endpoint` reaches a backend with `adapter`, or `None` when
    /// that backend cannot serve it.
    pub fn new(endpoint: Endpoint, adapter: &dyn Adapter) -> Option<Plan> {
        if adapter.native(endpoint) {
            return Some(Plan { from_messages: false, adapter_translates: false, upstream: endpoint });
        }
        let from_messages = match endpoint {
            Endpoint::ChatCompletions => false,
            Endpoint::Messages => true,
            _ => return None,
        };
        let adapter_translates = if adapter.native(Endpoint::ChatCompletions) {
            false
        } else if adapter.translates_chat() {
            true
        } else {
            return None;
        };
        Some(Plan { from_messages, adapter_translates, upstream: Endpoint::ChatCompletions })
    }

    /// The body passes through untouched (but `model`), and so does the answer.
    pub fn is_native(&self) -> bool {
        !self.from_messages && !self.adapter_translates
    }

    /// The upstream request body for the provider's `model`. An error means the
    /// client's request could not be expressed for this backend.
    pub fn body(&self, body: &RequestBody, adapter: &dyn Adapter, model: &str) -> Result<Bytes, String> {
        if self.is_native() {
            return Ok(body.for_upstream(model));
        }
        let client: Value = serde_json::from_slice(body.bytes()).map_err(|e| e.to_string())?;
        let mut chat = if self.from_messages { inbound::request::to_chat(&client)? } else { client };
        if self.adapter_translates {
            return adapter.chat_request(&chat, model, body.stream).map(Bytes::from);
        }
        chat["model"] = Value::String(model.to_string());
        serde_json::to_vec(&chat).map(Bytes::from).map_err(|e| e.to_string())
    }

    /// A successful non-streaming answer, in the client's format. `model` is the
    /// backend's model name.
    ///
    /// One rule for every endpoint and format: an answer's `model` is the model that
    /// served it, as the upstream names it (what the provider reports, else the
    /// backend's configured `model`), never the alias the client sent; the serving
    /// backend is also named in the `x-berry-backend` header.
    pub fn answer(&self, bytes: Bytes, adapter: &dyn Adapter, model: &str) -> Result<Bytes, String> {
        if self.is_native() {
            return Ok(bytes);
        }
        let chat = if self.adapter_translates { Bytes::from(adapter.chat_response(&bytes, model)?) } else { bytes };
        if !self.from_messages {
            return Ok(chat);
        }
        let chat: Value = serde_json::from_slice(&chat).map_err(|e| format!("not JSON: {e}"))?;
        let message = inbound::from_chat(&chat, model)?;
        serde_json::to_vec(&message).map(Bytes::from).map_err(|e| e.to_string())
    }

    /// The translator of a streamed answer (`None`: it passes through).
    pub fn stream(&self, adapter: &dyn Adapter, model: &str, include_usage: bool) -> Option<Box<dyn StreamTranslator>> {
        match (self.adapter_translates, self.from_messages) {
            (false, false) => None,
            (true, false) => Some(adapter.chat_stream(model, include_usage)),
            (false, true) => Some(Box::new(FromChat::new(model))),
            // Anthropic's closing event carries the token counts: ask the first leg for them.
            (true, true) => {
                Some(Box::new(Chain::new(adapter.chat_stream(model, true), Box::new(FromChat::new(model)))))
            }
        }
    }

    /// An error answer that is the client's own fault (a 4xx other than the
    /// backend's problems), in the client's format.
    pub fn client_error(&self, status: u16, bytes: Bytes, adapter: &dyn Adapter, dialect: Dialect) -> Bytes {
        if self.is_native() {
            return bytes;
        }
        let message = adapter.error_message(&bytes).unwrap_or_else(|| format!("The provider answered {status}."));
        Bytes::from(error_body(dialect, status, openai_error_type(status), "upstream_error", &message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendType;

    #[test]
    fn each_endpoint_finds_its_way_to_each_backend() {
        let plan = |e, b| Plan::new(e, crate::adapter::for_backend(b));
        let native = |e| Some(Plan { from_messages: false, adapter_translates: false, upstream: e });
        assert_eq!(plan(Endpoint::ChatCompletions, BackendType::OpenAi), native(Endpoint::ChatCompletions));
        assert_eq!(plan(Endpoint::Messages, BackendType::Anthropic), native(Endpoint::Messages));
        assert_eq!(plan(Endpoint::Responses, BackendType::Azure), native(Endpoint::Responses));
        let via = |m, t| Some(Plan { from_messages: m, adapter_translates: t, upstream: Endpoint::ChatCompletions });
        assert_eq!(plan(Endpoint::ChatCompletions, BackendType::Anthropic), via(false, true));
        assert_eq!(plan(Endpoint::ChatCompletions, BackendType::Gemini), via(false, true));
        assert_eq!(plan(Endpoint::Messages, BackendType::OpenAi), via(true, false));
        assert_eq!(plan(Endpoint::Messages, BackendType::Gemini), via(true, true));
        assert_eq!(plan(Endpoint::Responses, BackendType::Anthropic), None);
        assert_eq!(plan(Endpoint::Embeddings, BackendType::Gemini), None);
        assert_eq!(plan(Endpoint::CountTokens, BackendType::OpenAi), None);
    }
}
