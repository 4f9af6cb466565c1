//! A provider as the relay uses it: resolved URLs and prepared headers.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri, header};
use http_body_util::Full;

use crate::config::{Probe, Provider};
use crate::relay::Endpoint;

pub struct ProviderRuntime {
    pub key: String,
    pub enabled: bool,
    /// `Authorization: Bearer <key>`, marked sensitive so it is never logged.
    pub authorization: Option<HeaderValue>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub timeout: Option<std::time::Duration>,
    pub max_retries: Option<u32>,
    pub probe: Probe,
    /// Upstream URL per endpoint, indexed by `Endpoint as usize`.
    urls: Vec<Option<Uri>>,
}

impl ProviderRuntime {
    /// `base_url` is the provider's URL with any `mock://` already resolved to the
    /// embedded mock's real address.
    pub fn new(config: &Provider, base_url: &str) -> Result<Self, String> {
        let authorization = if config.api_key.is_empty() {
            None
        } else {
            let mut v = HeaderValue::try_from(format!("Bearer {}", config.api_key.expose()))
                .map_err(|_| format!("providers.{}.api_key: not a valid header value", config.key))?;
            v.set_sensitive(true);
            Some(v)
        };
        let urls =
            Endpoint::ALL.iter().map(|e| format!("{base_url}{}", e.upstream_path()).parse::<Uri>().ok()).collect();
        Ok(ProviderRuntime {
            key: config.key.clone(),
            enabled: config.enabled,
            authorization,
            headers: config.headers.clone(),
            timeout: config.timeout,
            max_retries: config.max_retries,
            probe: config.probe,
            urls,
        })
    }

    /// A placeholder for a disabled backend whose provider is not configured.
    pub fn disabled(key: &str) -> Self {
        ProviderRuntime {
            key: key.to_string(),
            enabled: false,
            authorization: None,
            headers: Vec::new(),
            timeout: None,
            max_retries: None,
            probe: Probe::None,
            urls: Vec::new(),
        }
    }

    pub fn url(&self, endpoint: Endpoint) -> Option<&Uri> {
        self.urls.get(endpoint as usize).and_then(Option::as_ref)
    }

    /// A request to this provider: its key, its configured headers, our user agent.
    /// The caller's own headers are never copied here.
    pub fn request(&self, method: Method, endpoint: Endpoint, body: Bytes) -> Option<Request<Full<Bytes>>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = self.url(endpoint)?.clone();
        let headers = request.headers_mut();
        headers.insert(header::USER_AGENT, HeaderValue::from_static(concat!("berry/", env!("CARGO_PKG_VERSION"))));
        if let Some(auth) = &self.authorization {
            headers.insert(header::AUTHORIZATION, auth.clone());
        }
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        Some(request)
    }
}
