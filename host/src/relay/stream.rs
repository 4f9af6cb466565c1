//! The stream-back phase: upstream SSE bytes are handed to the client as they
//! arrive, never re-encoded (so `event:`/`id:` lines and comments survive). Only a
//! trailing, incomplete event is held back until its end arrives, so the client only
//! ever sees whole events: if the upstream breaks mid-event, the partial event is
//! dropped and the SSE error event that follows stands on its own.
//!
//! The outcome is recorded once, when the stream ends: success at a clean end; a
//! network failure (and an SSE error event to the client) when the upstream breaks or
//! stalls mid-stream. The request's log line is written then too.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::time::Sleep;
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::gateway::Route;
use crate::health::{CircuitPolicy, ErrorClass, InFlight, Outcome};
use crate::plugin::strategy::wit;
use crate::server::body::BerryBody;
use crate::server::context::RequestLog;

/// Largest incomplete event held back; beyond it (not SSE, or a giant event) bytes
/// are passed on as they are.
const MAX_PENDING: usize = 256 << 10;

/// What to record when the stream ends.
pub struct Finish {
    route: Arc<Route>,
    index: u32,
    request: wit::Request,
    policy: CircuitPolicy,
    /// Time to first byte: the latency a stream's backend is judged by.
    first_byte_ms: f64,
    _in_flight: InFlight,
    /// The request's log line, written when the stream ends (or is dropped).
    log: Option<RequestLog>,
}

impl Finish {
    pub fn new(
        route: Arc<Route>,
        index: u32,
        request: wit::Request,
        policy: CircuitPolicy,
        first_byte_ms: f64,
        in_flight: InFlight,
        log: RequestLog,
    ) -> Self {
        Finish { route, index, request, policy, first_byte_ms, _in_flight: in_flight, log: Some(log) }
    }

    fn record(mut self, outcome: Outcome, usage: Option<super::usage::Usage>) {
        self.route.record(self.index, outcome, self.first_byte_ms, &self.request, &self.policy);
        let Some(mut log) = self.log.take() else { return };
        if let Some(backend) = self.route.backends.get(self.index as usize) {
            backend.count_attempt(log.metrics(), outcome);
        }
        if let Some(u) = usage {
            super::forward::count_tokens(log.metrics(), log.user.as_deref().unwrap_or("-"), &self.route.name, u);
        }
        if outcome != Outcome::Success {
            log.error = Some("stream_interrupted");
        }
        log.emit(200);
    }

    /// The stream ends for a reason that is not the backend's: nothing is recorded
    /// against it.
    fn abandon(mut self, reason: &'static str) {
        if let Some(mut log) = self.log.take() {
            log.error = Some(reason);
            log.emit(200);
        }
    }
}

impl Drop for Finish {
    // Dropped unrecorded: the client went away mid-stream. The backend was not at
    // fault; its in-flight count is released by `InFlight`'s own drop.
    fn drop(&mut self) {
        if let Some(mut log) = self.log.take() {
            log.error = Some("client_closed");
            log.emit(200);
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
    /// Resolves when the gateway's drain timeout has passed.
    closing: Pin<Box<WaitForCancellationFutureOwned>>,
    done: bool,
    /// The start of an event whose end has not arrived yet.
    pending: BytesMut,
    /// Whether what the client got so far ends at an event boundary.
    at_boundary: bool,
    usage: super::usage::SseUsage,
}

/// Relay `upstream` (after `first`, the bytes already read while waiting for the
/// first byte) to the client. Generic over the body so benches can feed it from memory.
pub fn relay_stream<B>(
    first: Option<Bytes>,
    upstream: B,
    finish: Finish,
    idle_timeout: Duration,
    closing: tokio_util::sync::CancellationToken,
) -> BerryBody
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
        closing: Box::pin(closing.cancelled_owned()),
        done: false,
        pending: BytesMut::new(),
        at_boundary: true,
        usage: super::usage::SseUsage::default(),
    }
    .boxed_unsync()
}

/// An SSE error event; OpenAI clients raise it as an API error.
fn error_event(message: &str, kind: &str, code: &str, at_boundary: bool) -> Bytes {
    let body = serde_json::json!({ "error": { "message": message, "type": kind, "code": code, "param": null } });
    // Only reachable when bytes were passed on unframed (not SSE, or an event over
    // MAX_PENDING): end that event first so the error is not glued to it.
    let separator = if at_boundary { "" } else { "\n\n" };
    Bytes::from(format!("{separator}data: {body}\n\n"))
}

/// Where the last complete event in `buf` ends (just after its blank line).
fn last_event_end(buf: &[u8]) -> Option<usize> {
    (1..buf.len()).rev().find_map(|i| {
        let blank_line = match buf[i] {
            b'\n' => buf[i - 1] == b'\n' || (i >= 2 && buf[i - 2..i] == *b"\n\r"),
            b'\r' => buf[i - 1] == b'\r' && buf.get(i + 1) != Some(&b'\n'),
            _ => false,
        };
        blank_line.then_some(i + 1)
    })
}

impl<B> RelayStream<B> {
    fn fail(
        &mut self,
        message: &str,
        class: ErrorClass,
    ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        self.done = true;
        self.pending.clear();
        if let Some(finish) = self.finish.take() {
            tracing::warn!(route = %finish.route.name, class = class.as_str(), "upstream stream failed mid-way: {message}");
            finish.record(Outcome::Failure(class), None);
        }
        let event = error_event(message, "upstream_error", "stream_interrupted", self.at_boundary);
        Poll::Ready(Some(Ok(Frame::data(event))))
    }

    /// The gateway is shutting down and its drain time is over.
    fn close(&mut self) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        self.done = true;
        self.pending.clear();
        if let Some(finish) = self.finish.take() {
            finish.abandon("server_shutting_down");
        }
        let message = "The gateway is shutting down; the stream was ended early.";
        let event = error_event(message, "server_error", "server_shutting_down", self.at_boundary);
        Poll::Ready(Some(Ok(Frame::data(event))))
    }

    /// Take an upstream chunk: what of it (with what was held back) can go to the
    /// client now, if anything.
    fn take(&mut self, data: Bytes) -> Option<Bytes> {
        if self.pending.is_empty() {
            // The usual case: chunks end where events end, and pass untouched.
            match last_event_end(&data) {
                Some(end) if end == data.len() => return Some(data),
                Some(end) => {
                    self.pending.extend_from_slice(&data[end..]);
                    return Some(data.slice(..end));
                }
                None => self.pending.extend_from_slice(&data),
            }
        } else {
            self.pending.extend_from_slice(&data);
            if let Some(end) = last_event_end(&self.pending) {
                return Some(self.pending.split_to(end).freeze());
            }
        }
        (self.pending.len() > MAX_PENDING).then(|| self.pending.split().freeze())
    }

    fn emit(&mut self, data: Bytes) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        self.usage.feed(&data);
        self.at_boundary = last_event_end(&data) == Some(data.len());
        Poll::Ready(Some(Ok(Frame::data(data))))
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
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(first) = this.first.take()
            && let Some(out) = this.take(first)
        {
            return this.emit(out);
        }
        if this.closing.as_mut().poll(cx).is_ready() {
            return this.close();
        }
        loop {
            match Pin::new(&mut this.upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let deadline = tokio::time::Instant::now() + this.idle_timeout;
                    this.idle.as_mut().reset(deadline);
                    // Trailers have no place in an SSE response; data passes as is.
                    if let Ok(data) = frame.into_data()
                        && let Some(out) = this.take(data)
                    {
                        return this.emit(out);
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
                    // A last event without its blank line still goes out as sent.
                    if !this.pending.is_empty() {
                        let rest = this.pending.split().freeze();
                        this.usage.feed(&rest);
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
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
        self.done && self.first.is_none() && self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::last_event_end;

    #[test]
    fn finds_the_end_of_the_last_complete_event() {
        assert_eq!(last_event_end(b"data: a\n\n"), Some(9));
        assert_eq!(last_event_end(b"data: a\n\ndata: b"), Some(9));
        assert_eq!(last_event_end(b"data: a\r\n\r\ndata: b"), Some(11));
        assert_eq!(last_event_end(b"data: a\r\rdata: b"), Some(9));
        assert_eq!(last_event_end(b"data: a\ndata: b\n"), None);
        assert_eq!(last_event_end(b"data: a\r\n"), None);
        assert_eq!(last_event_end(b""), None);
        assert_eq!(last_event_end(b"\n"), None);
    }
}
