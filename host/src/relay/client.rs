//! The upstream HTTP client: pooled clients kept per gateway (across reloads),
//! HTTP/1.1 keep-alive and HTTP/2 (ALPN), TLS with the Mozilla root set, TCP_NODELAY.
//!
//! Two clients share the settings: one for `https://` providers, and a plain one for
//! `http://` providers (local models, sidecars, the mock), whose connections then
//! carry no TLS state — a pooled connection, and so a stream in flight, is smaller.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Builder, Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};

#[derive(Clone)]
pub struct UpstreamClient {
    https: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl UpstreamClient {
    pub fn new(connect_timeout: Duration) -> Result<Self, String> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http.clone());
        Ok(UpstreamClient { https: builder().build(https), http: builder().build(http) })
    }

    /// Send `request` on the client its scheme calls for.
    pub fn request(&self, request: Request<Full<Bytes>>) -> ResponseFuture {
        if request.uri().scheme() == Some(&http::uri::Scheme::HTTP) {
            self.http.request(request)
        } else {
            self.https.request(request)
        }
    }
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
