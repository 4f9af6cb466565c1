//! The stream-back phase: upstream SSE bytes are handed to the client frame by
//! frame as they arrive, never buffered or re-framed (so `event:`/`id:` lines and
//! comments survive). The outcome is recorded once, when the stream ends:
//! success at a clean end; a network failure (and an SSE error event to the
//! client) when the upstream breaks or stalls mid-stream.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::time::Sleep;

use crate::gateway::Route;
use crate::health::{CircuitPolicy, ErrorClass, InFlight, Outcome};
use crate::plugin::strategy::wit;
use crate::server::body::BerryBody;

/// The metrics a stream reports when it ends.
pub struct Tally {
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    pub user: String,
    pub model: String,
}

/// What to record when the stream ends.
pub struct Finish {
    tally: Tally,
    route: Arc<Route>,
    index: u32,
    request: wit::Request,
    policy: CircuitPolicy,
    /// Time to first byte: the latency a stream's backend is judged by.
    first_byte_ms: f64,
    _in_flight: InFlight,
}

impl Finish {
    pub fn new(
        route: Arc<Route>,
        index: u32,
        request: wit::Request,
        policy: CircuitPolicy,
        first_byte_ms: f64,
        in_flight: InFlight,
        tally: Tally,
    ) -> Self {
        Finish { tally, route, index, request, policy, first_byte_ms, _in_flight: in_flight }
    }

    fn record(self, outcome: Outcome, usage: Option<super::usage::Usage>) {
        self.route.record(self.index, outcome, self.first_byte_ms, &self.request, &self.policy);
        let t = &self.tally;
        if let Some(backend) = self.route.backends.get(self.index as usize) {
            backend.count_attempt(&t.metrics, outcome);
        }
        if let Some(u) = usage {
            super::forward::count_tokens(&t.metrics, &t.user, &t.model, u);
        }
    }
}

struct RelayStream<B> {
    first: Option<Bytes>,
    upstream: B,
    /// `Some` until the outcome is recorded.
    finish: Option<Finish>,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    done: bool,
    usage: super::usage::SseUsage,
}

/// Relay `upstream` (after `first`, the bytes already read while waiting for the
/// first byte) to the client. Generic over the body so benches can feed it from memory.
pub fn relay_stream<B>(first: Option<Bytes>, upstream: B, finish: Finish, idle_timeout: Duration) -> BerryBody
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: std::fmt::Display,
{
    RelayStream {
        first,
        upstream,
        finish: Some(finish),
        idle_timeout,
        idle: Box::pin(tokio::time::sleep(idle_timeout)),
        done: false,
        usage: super::usage::SseUsage::default(),
    }
    .boxed_unsync()
}

/// The event sent when the upstream fails mid-stream; OpenAI clients raise it as an API error.
fn error_event(message: &str) -> Bytes {
    let body = serde_json::json!({
        "error": { "message": message, "type": "upstream_error", "code": "stream_interrupted", "param": null }
    });
    Bytes::from(format!("data: {body}\n\n"))
}

impl<B> RelayStream<B> {
    fn fail(
        &mut self,
        message: &str,
        class: ErrorClass,
    ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        self.done = true;
        if let Some(finish) = self.finish.take() {
            tracing::warn!(route = %finish.route.name, class = class.as_str(), "upstream stream failed mid-way: {message}");
            finish.record(Outcome::Failure(class), None);
        }
        Poll::Ready(Some(Ok(Frame::data(error_event(message)))))
    }
}

impl<B> Body for RelayStream<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(first) = this.first.take() {
            this.usage.feed(&first);
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let deadline = tokio::time::Instant::now() + this.idle_timeout;
                    this.idle.as_mut().reset(deadline);
                    // Trailers have no place in an SSE response; data passes as is.
                    if let Ok(data) = frame.into_data() {
                        this.usage.feed(&data);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    return this.fail(&format!("upstream connection broke: {e}"), ErrorClass::Network);
                }
                Poll::Ready(None) => {
                    this.done = true;
                    if let Some(finish) = this.finish.take() {
                        finish.record(Outcome::Success, this.usage.found);
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    ready!(this.idle.as_mut().poll(cx));
                    let secs = this.idle_timeout.as_secs_f64();
                    return this.fail(&format!("upstream sent nothing for {secs}s"), ErrorClass::Timeout);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.first.is_none()
    }
}

// When the client goes away mid-stream, `finish` drops unrecorded: the backend was
// not at fault. Its in-flight count is released by `InFlight`'s own drop.
