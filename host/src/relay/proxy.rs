//! Outbound proxies: the way a provider's connections leave the machine.
//!
//! A connection to a provider through a proxy is a `CONNECT` tunnel (for `https://`
//! and `http://` providers alike: the proxy sees only the destination, TLS runs end
//! to end through it). The environment's proxies are read as curl reads them —
//! `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY` and their lowercase forms —
//! by hyper-util's matcher; a provider's own `proxy` wins over them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A way out: direct, or the proxies a matcher picks per destination.
#[derive(Clone)]
pub enum Way {
    Direct,
    /// `key` tells ways apart: the environment's variables, or the proxy URL.
    Proxied {
        key: String,
        matcher: Arc<Matcher>,
    },
}

impl PartialEq for Way {
    fn eq(&self, other: &Way) -> bool {
        match (self, other) {
            (Way::Direct, Way::Direct) => true,
            (Way::Proxied { key: a, .. }, Way::Proxied { key: b, .. }) => a == b,
            _ => false,
        }
    }
}

/// The variables curl reads, upper and lower case.
const VARIABLES: [&str; 8] =
    ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"];

impl Way {
    /// The environment's proxies, or direct when no proxy variable is set.
    pub fn from_environment() -> Way {
        let values: Vec<String> = VARIABLES.iter().map(|v| std::env::var(v).unwrap_or_default()).collect();
        // Only NO_PROXY (or nothing) set: no proxy to use.
        if values[..6].iter().all(String::is_empty) {
            return Way::Direct;
        }
        Way::Proxied { key: format!("env:{}", values.join("\u{1f}")), matcher: Arc::new(Matcher::from_env()) }
    }

    /// One HTTP proxy for every destination.
    pub fn via(url: &str) -> Result<Way, String> {
        let uri: Uri = url.parse().map_err(|_| "is not a valid URL".to_string())?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err("must be an http:// proxy URL".into());
        }
        let matcher = Matcher::builder().all(url.to_string()).build();
        Ok(Way::Proxied { key: format!("via:{url}"), matcher: Arc::new(matcher) })
    }
}

/// Opens a provider's connections: directly, or through the tunnel its way's
/// matcher picks for the destination.
#[derive(Clone)]
pub struct Connector {
    direct: HttpConnector,
    matcher: Option<Arc<Matcher>>,
}

impl Connector {
    pub fn new(connect_timeout: Duration, way: &Way) -> Connector {
        let mut direct = HttpConnector::new();
        direct.enforce_http(false);
        direct.set_nodelay(true);
        direct.set_connect_timeout(Some(connect_timeout));
        direct.set_keepalive(Some(Duration::from_secs(60)));
        let matcher = match way {
            Way::Direct => None,
            Way::Proxied { matcher, .. } => Some(matcher.clone()),
        };
        Connector { direct, matcher }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.direct.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        let intercept = self.matcher.as_ref().and_then(|m| m.intercept(&destination));
        match intercept {
            None => {
                let connecting = self.direct.call(destination);
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
            Some(proxy) => {
                let mut tunnel = Tunnel::new(proxy.uri().clone(), self.direct.clone());
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                Box::pin(async move { tunnel.call(destination).await.map_err(|e| Box::new(e) as BoxError) })
            }
        }
    }
}
