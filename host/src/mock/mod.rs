//! The embedded mock provider: deterministic answers in OpenAI's, Anthropic's and
//! Gemini's wire formats (stream and non-stream, tool calls, each API's own error
//! shape), with configurable latency and failure injection.
//!
//! It backs the demo config (`mock://` providers), the tests and the benchmarks, and
//! runs standalone as `berry mock-provider --port N`. Besides the OpenAI paths it
//! serves `POST /mock/control` (change knobs at runtime) and `GET /mock/stats`
//! (hit counters and the last request received, for assertions).

mod anthropic;
mod gemini;
mod openai_responses;
mod responses;
mod settings;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use settings::{FailMode, MockSettings, MockUpdate};

pub use responses::Api;
use responses::{MockBody, json_response};

/// Hit counters and the last request, shared by a server and its handle.
#[derive(Default)]
pub struct MockState {
    pub settings: ArcSwap<MockSettings>,
    pub requests: AtomicU64,
    pub chat: AtomicU64,
    pub completions: AtomicU64,
    pub embeddings: AtomicU64,
    /// `GET /models` hits: what active health probes use.
    pub models: AtomicU64,
    /// Responses API hits.
    pub responses: AtomicU64,
    /// Anthropic Messages API hits (count_tokens included).
    pub messages: AtomicU64,
    /// Gemini generateContent hits.
    pub gemini: AtomicU64,
    pub last: Mutex<Option<RecordedRequest>>,
    /// Failures left of a `fail_next` (then none); negative: `fail_rate` decides.
    fail_budget: std::sync::atomic::AtomicI64,
}

/// The last request the mock received, as received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl MockState {
    pub fn update(&self, update: MockUpdate) {
        if let Some(n) = update.fail_next {
            self.fail_budget.store(i64::from(n), Ordering::Relaxed);
        } else if update.fail.is_some() || update.fail_rate.is_some() {
            self.fail_budget.store(-1, Ordering::Relaxed);
        }
        let mut s = (**self.settings.load()).clone();
        s.apply(update);
        self.settings.store(Arc::new(s));
    }

    /// Whether this request fails: one of the `fail_next` budget, else by `fail_rate`.
    fn draw_failure(&self, rate: f64) -> bool {
        let budget = self.fail_budget.load(Ordering::Relaxed);
        if budget < 0 {
            return fastrand::f64() < rate;
        }
        self.fail_budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n > 0).then(|| n - 1)).is_ok()
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.last.lock().ok().and_then(|g| g.clone())
    }
}

/// A running mock. Dropping it stops the listener and closes every connection, so
/// the address then refuses connections like a dead provider.
pub struct MockServer {
    addr: SocketAddr,
    pub state: Arc<MockState>,
    stop: watch::Sender<bool>,
}

impl MockServer {
    pub async fn start(addr: &str, settings: MockSettings) -> std::io::Result<MockServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(MockState {
            settings: ArcSwap::from_pointee(settings),
            fail_budget: std::sync::atomic::AtomicI64::new(-1),
            ..Default::default()
        });
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(accept_loop(listener, state.clone(), stopped));
        Ok(MockServer { addr, state, stop })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI base URL of this mock (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<MockState>, mut stopped: watch::Receiver<bool>) {
    let watcher = stopped.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let mut conn_stopped = watcher.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = conn_stopped.wait_for(|s| *s) => {}
                    }
                });
            }
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}

/// Error returned to hyper to drop a connection without an answer.
#[derive(Debug)]
struct CloseConnection;
impl std::fmt::Display for CloseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mock closes the connection")
    }
}
impl std::error::Error for CloseConnection {}

async fn handle(state: Arc<MockState>, request: Request<Incoming>) -> Result<Response<MockBody>, CloseConnection> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let body = Limited::new(body, 16 << 20).collect().await.map(|c| c.to_bytes()).unwrap_or_default();

    if path == "/mock/control" && parts.method == Method::POST {
        return Ok(match serde_json::from_slice::<MockUpdate>(&body) {
            Ok(update) => {
                state.update(update);
                json_response(StatusCode::OK, &json!({ "ok": true }))
            }
            Err(e) => json_response(StatusCode::BAD_REQUEST, &json!({ "error": e.to_string() })),
        });
    }
    if path == "/mock/stats" {
        return Ok(json_response(StatusCode::OK, &stats_json(&state)));
    }

    state.requests.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut last) = state.last.lock() {
        *last = Some(RecordedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path_and_query().map_or_else(|| path.clone(), ToString::to_string),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect(),
            body: body.clone(),
        });
    }
    let settings = state.settings.load_full();
    let Some(api) = Api::of(&path) else {
        return Ok(responses::error(StatusCode::NOT_FOUND, "unknown_url", &format!("Unknown request URL: {path}")));
    };
    let counter = match api {
        Api::Chat => &state.chat,
        Api::Completions => &state.completions,
        Api::Embeddings => &state.embeddings,
        Api::Models => &state.models,
        Api::Responses => &state.responses,
        Api::Messages | Api::CountTokens => &state.messages,
        Api::Gemini { .. } => &state.gemini,
    };
    counter.fetch_add(1, Ordering::Relaxed);

    if settings.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(settings.latency_ms)).await;
    }
    let failing = !matches!(settings.fail, FailMode::None) && state.draw_failure(settings.fail_rate);
    if failing {
        match settings.fail {
            FailMode::Status(status) => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut response = responses::failure(&api, status, "Injected failure from the mock provider.");
                if settings.retry_after_ms > 0 {
                    let headers = response.headers_mut();
                    headers.insert("retry-after-ms", http::HeaderValue::from(settings.retry_after_ms));
                    headers.insert("retry-after", http::HeaderValue::from(settings.retry_after_ms.div_ceil(1000)));
                }
                return Ok(response);
            }
            FailMode::Hang => {
                std::future::pending::<()>().await;
            }
            FailMode::Close => return Err(CloseConnection),
            FailMode::MidStream | FailMode::None => {}
        }
    }
    let break_mid_stream = failing && settings.fail == FailMode::MidStream;
    let mut response = responses::answer(&api, &body, &settings, break_mid_stream);
    response.headers_mut().insert("x-request-id", http::HeaderValue::from_static("mock-upstream-request"));
    response.headers_mut().insert("x-ratelimit-remaining-requests", http::HeaderValue::from_static("999"));
    Ok(response)
}

fn stats_json(state: &MockState) -> serde_json::Value {
    let last = state.last_request().map(|r| {
        json!({
            "method": r.method,
            "path": r.path,
            "headers": r.headers,
            "body": String::from_utf8_lossy(&r.body),
        })
    });
    json!({
        "requests": state.requests.load(Ordering::Relaxed),
        "chat": state.chat.load(Ordering::Relaxed),
        "completions": state.completions.load(Ordering::Relaxed),
        "embeddings": state.embeddings.load(Ordering::Relaxed),
        "models": state.models.load(Ordering::Relaxed),
        "responses": state.responses.load(Ordering::Relaxed),
        "messages": state.messages.load(Ordering::Relaxed),
        "gemini": state.gemini.load(Ordering::Relaxed),
        "last_request": last,
        "settings": &**state.settings.load(),
    })
}
