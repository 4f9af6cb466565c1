//! A provider as the relay uses it: its adapter, its prepared key and headers.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri, header};
use http_body_util::Full;

use crate::adapter::{self, Adapter};
use crate::config::{BackendType, Probe, Provider};
use crate::relay::Endpoint;

pub struct ProviderRuntime {
    pub key: String,
    pub enabled: bool,
    /// The provider's config, with any `mock://` base URL resolved.
    pub spec: Provider,
    pub adapter: &'static dyn Adapter,
    /// The key header (`Authorization: Bearer …`, `x-api-key`, …), marked sensitive
    /// so it is never logged.
    key_header: Option<(HeaderName, HeaderValue)>,
    /// The adapter's default headers, then the configured ones (which win).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub timeout: Option<std::time::Duration>,
    pub max_retries: Option<u32>,
    pub probe: Probe,
    /// `GET` URL of the model list (the active probe).
    models_url: Option<Uri>,
    /// The way out its requests take (direct or through a proxy).
    pub route: crate::relay::ClientRoute,
}

impl ProviderRuntime {
    /// `base_url` is the provider's URL with any `mock://` already resolved to the
    /// embedded mock's real address.
    pub fn new(config: &Provider, base_url: &str, route: crate::relay::ClientRoute) -> Result<Self, String> {
        let adapter = adapter::for_backend(config.backend);
        let key_header = if config.api_key.is_empty() {
            None
        } else {
            let (name, mut value) = adapter
                .key_header(config.api_key.expose())
                .map_err(|e| format!("providers.{}.api_key: {e}", config.key))?;
            value.set_sensitive(true);
            Some((name, value))
        };
        let mut spec = config.clone();
        spec.base_url = base_url.to_string();
        let mut headers = adapter.default_headers();
        headers.retain(|(name, _)| !config.headers.iter().any(|(n, _)| n == name));
        headers.extend(config.headers.iter().cloned());
        let models_url = adapter.url(&spec, Endpoint::Models, "", false).and_then(|u| u.parse().ok());
        Ok(ProviderRuntime {
            key: config.key.clone(),
            enabled: config.enabled,
            adapter,
            key_header,
            headers,
            timeout: config.timeout,
            max_retries: config.max_retries,
            probe: config.probe,
            models_url,
            spec,
            route,
        })
    }

    /// A placeholder for a disabled backend whose provider is not configured.
    pub fn disabled(key: &str) -> Self {
        let spec = Provider {
            key: key.to_string(),
            name: key.to_string(),
            base_url: String::new(),
            api_key: crate::config::Secret::default(),
            models: Vec::new(),
            enabled: false,
            timeout: None,
            max_retries: None,
            probe: Probe::None,
            backend: BackendType::OpenAi,
            api_version: None,
            forward_organization_headers: false,
            headers: Vec::new(),
            proxy: crate::config::Proxy::Direct,
        };
        ProviderRuntime {
            key: key.to_string(),
            enabled: false,
            adapter: adapter::for_backend(BackendType::OpenAi),
            key_header: None,
            headers: Vec::new(),
            timeout: None,
            max_retries: None,
            probe: Probe::None,
            models_url: None,
            spec,
            route: crate::relay::ClientRoute::default(),
        }
    }

    /// The upstream URL of `endpoint` for the provider's `model`.
    pub fn url(&self, endpoint: Endpoint, model: &str, stream: bool) -> Option<Uri> {
        self.adapter.url(&self.spec, endpoint, model, stream)?.parse().ok()
    }

    pub fn models_url(&self) -> Option<&Uri> {
        self.models_url.as_ref()
    }

    /// A request to this provider: its key, its headers, our user agent. The
    /// caller's own headers are never copied here.
    pub fn request(&self, method: Method, uri: Uri, body: Bytes) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        // Room for ours and the relay's (content type, accept, request id) at once.
        *request.headers_mut() = http::HeaderMap::with_capacity(8 + self.headers.len());
        let headers = request.headers_mut();
        headers.insert(header::USER_AGENT, HeaderValue::from_static(concat!("berry/", env!("CARGO_PKG_VERSION"))));
        if let Some((name, value)) = &self.key_header {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        request
    }
}
