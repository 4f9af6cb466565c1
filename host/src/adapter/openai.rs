//! `backend_type = "openai"`: OpenAI and everything compatible with it. Requests and
//! answers pass through byte for byte (but `model`); nothing is translated.

use super::Adapter;
use crate::config::Provider;
use crate::relay::Endpoint;

pub struct OpenAi;

impl Adapter for OpenAi {
    fn url(&self, provider: &Provider, endpoint: Endpoint, _model: &str, _stream: bool) -> Option<String> {
        self.native(endpoint).then(|| format!("{}{}", provider.base_url, endpoint.upstream_path()))
    }

    fn native(&self, endpoint: Endpoint) -> bool {
        matches!(
            endpoint,
            Endpoint::ChatCompletions
                | Endpoint::Completions
                | Endpoint::Embeddings
                | Endpoint::Responses
                | Endpoint::Models
        )
    }
}

/// `s` made safe as one URL path segment (deployment and model names).
pub(crate) fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
