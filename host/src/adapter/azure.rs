//! `backend_type = "azure"`: Azure OpenAI. The bodies are OpenAI's and pass through;
//! the URLs and the key header are Azure's:
//!
//! - with `api_version`: deployment URLs, the backend's `model` being the deployment
//!   (`{base_url}/openai/deployments/{model}/chat/completions?api-version=…`);
//! - without: Azure's v1 API (`{base_url}/openai/v1/chat/completions`), the model
//!   (deployment) named in the body, as with OpenAI.
//!
//! `base_url` is the resource, e.g. `https://my-resource.openai.azure.com`.

use http::{HeaderName, HeaderValue};

use super::Adapter;
use super::openai::{OpenAi, path_segment};
use crate::config::Provider;
use crate::relay::Endpoint;

pub struct Azure;

impl Adapter for Azure {
    fn url(&self, provider: &Provider, endpoint: Endpoint, model: &str, _stream: bool) -> Option<String> {
        if !self.native(endpoint) {
            return None;
        }
        let base = provider.base_url.as_str();
        let path = endpoint.upstream_path();
        Some(match &provider.api_version {
            Some(version) => {
                let root = base.strip_suffix("/openai").unwrap_or(base);
                match endpoint {
                    Endpoint::Responses | Endpoint::Models => format!("{root}/openai{path}?api-version={version}"),
                    _ => format!("{root}/openai/deployments/{}{path}?api-version={version}", path_segment(model)),
                }
            }
            None if base.ends_with("/openai/v1") => format!("{base}{path}"),
            None if base.ends_with("/openai") => format!("{base}/v1{path}"),
            None => format!("{base}/openai/v1{path}"),
        })
    }

    fn key_header(&self, key: &str) -> Result<(HeaderName, HeaderValue), String> {
        let value = HeaderValue::try_from(key).map_err(|_| "not a valid header value")?;
        Ok((HeaderName::from_static("api-key"), value))
    }

    /// Azure serves OpenAI's own endpoints.
    fn native(&self, endpoint: Endpoint) -> bool {
        OpenAi.native(endpoint)
    }
}
