//! The upstream HTTP client: pooled clients kept per gateway (across reloads),
//! HTTP/1.1 keep-alive and HTTP/2 (ALPN), TLS with the Mozilla root set, TCP_NODELAY.
//!
//! Two clients share the settings: one for `https://` providers, and a plain one for
//! `http://` providers (local models, sidecars, the mock), whose connections then
//! carry no TLS state — a pooled connection, and so a stream in flight, is smaller.
//!
//! Outbound proxies ([`super::proxy`]) are decided per provider when the config is
//! loaded: each way out (direct, the environment's proxies, each configured proxy)
//! has its own pair of pooled clients, and a provider names its way by index — a
//! request pays one array lookup, and a proxy is consulted only when a connection
//! is opened.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Builder, Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::proxy::{Connector, Way};
use crate::config::{Config, Proxy};

/// The clients for one way out.
#[derive(Clone)]
struct Pair {
    https: Client<HttpsConnector<Connector>, Full<Bytes>>,
    http: Client<Connector, Full<Bytes>>,
}

#[derive(Clone)]
pub struct UpstreamClient {
    /// One per way out, in [`UpstreamClient::ways`] order; 0 is direct.
    pairs: Vec<Pair>,
    ways: Vec<Way>,
    connect_timeout: Duration,
}

/// Which of the client's ways out a provider's requests take.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Route(usize);

impl UpstreamClient {
    /// The clients every provider of `config` needs (the environment's proxies read
    /// now), reusing `previous`'s pools where its ways and timeout are the same.
    pub fn new(connect_timeout: Duration, config: &Config, previous: Option<&UpstreamClient>) -> Result<Self, String> {
        let mut ways = vec![Way::Direct];
        let environment = Way::from_environment();
        for p in config.providers.values() {
            let way = match &p.proxy {
                Proxy::Direct => Way::Direct,
                Proxy::Environment => environment.clone(),
                Proxy::Via(url) => Way::via(url.expose()).map_err(|e| format!("providers.{}.proxy: {e}", p.key))?,
            };
            if !ways.contains(&way) {
                ways.push(way);
            }
        }
        if let Some(previous) = previous.filter(|p| p.ways == ways && p.connect_timeout == connect_timeout) {
            return Ok(previous.clone());
        }
        let pairs = ways.iter().map(|way| pair(connect_timeout, way)).collect();
        Ok(UpstreamClient { pairs, ways, connect_timeout })
    }

    /// The way a provider's requests leave (`proxy` as configured).
    pub fn route(&self, proxy: &Proxy) -> Route {
        let way = match proxy {
            Proxy::Direct => Way::Direct,
            Proxy::Environment => Way::from_environment(),
            Proxy::Via(url) => Way::via(url.expose()).unwrap_or(Way::Direct),
        };
        Route(self.ways.iter().position(|w| *w == way).unwrap_or(0))
    }

    /// Send `request` the provider's way, on the client its scheme calls for.
    pub fn request(&self, route: Route, request: Request<Full<Bytes>>) -> ResponseFuture {
        let pair = self.pairs.get(route.0).unwrap_or(&self.pairs[0]);
        if request.uri().scheme() == Some(&http::uri::Scheme::HTTP) {
            pair.http.request(request)
        } else {
            pair.https.request(request)
        }
    }
}

fn pair(connect_timeout: Duration, way: &Way) -> Pair {
    let connector = Connector::new(connect_timeout, way);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(connector.clone());
    Pair { https: builder().build(https), http: builder().build(connector) }
}

fn builder() -> Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        // An idle upstream connection is closed after 45 s (nginx's upstream
        // keepalive_timeout is 60 s): what a burst leaves is given back within a minute.
        .pool_idle_timeout(Duration::from_secs(45))
        // Idle connections kept per provider host between requests. Under load the
        // connections in use are not idle, so this bounds only what a burst leaves
        // behind (a TLS connection holds tens of KiB): 64, as nginx's upstream
        // `keepalive` is usually set, not the burst's thousands.
        .pool_max_idle_per_host(64);
    builder
}
