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

use crate::adapter::{Dialect, StreamFault, StreamTranslator, error_body};
use crate::gateway::Route;
use crate::health::{CircuitPolicy, ErrorClass, InFlight, Outcome};
use crate::server::body::BerryBody;
use crate::server::context::RequestLog;

/// Largest incomplete event held back; beyond it (not SSE, or a giant event) bytes
/// are passed on as they are.
const MAX_PENDING: usize = 256 << 10;

/// What to record when the stream ends.
pub struct Finish {
    route: Arc<Route>,
    index: u32,
    policy: CircuitPolicy,
    upstream: Upstream,
    _in_flight: InFlight,
    /// The request's log line, written when the stream ends (or is dropped).
    log: Option<RequestLog>,
}

/// The stream's upstream exchange.
pub struct Upstream {
    /// Time to first byte: the latency a stream's backend is judged by.
    pub first_byte_ms: f64,
    /// When its request was sent.
    pub started: std::time::Instant,
    pub operation: Option<crate::metrics::genai::Operation>,
}

impl Finish {
    pub fn new(
        route: Arc<Route>,
        index: u32,
        policy: CircuitPolicy,
        upstream: Upstream,
        in_flight: InFlight,
        log: RequestLog,
    ) -> Self {
        Finish { route, index, policy, upstream, _in_flight: in_flight, log: Some(log) }
    }

    fn record(mut self, outcome: Outcome, usage: Option<super::usage::Usage>) {
        let Upstream { first_byte_ms, started, operation } = self.upstream;
        self.route.record(self.index, outcome, first_byte_ms, &self.policy);
        let Some(mut log) = self.log.take() else { return };
        let backend = self.route.backends.get(self.index as usize);
        if let Some(backend) = backend {
            let attempted = crate::gateway::Attempted {
                outcome,
                latency_ms: first_byte_ms,
                duration: started.elapsed(),
                operation,
            };
            backend.series.attempted(log.metrics(), &attempted);
        }
        if let Some(u) = usage {
            self.route.series.count_tokens(log.metrics(), &self.route.name, log.user(), u);
            if let Some(backend) = backend {
                backend.series.used(log.metrics(), operation, &u);
            }
        }
        log.usage = usage;
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
    events: EventFramer,
    /// Turns the provider's stream into the client's format (`None`: it passes).
    translator: Option<Box<dyn StreamTranslator>>,
    /// The API the client speaks: the shape of the error event.
    dialect: Dialect,
    usage: super::usage::SseUsage,
    redactor: Arc<crate::redact::Redactor>,
}

/// How a started stream is relayed.
pub struct Relay {
    /// What the client gets first (read while waiting for the first byte).
    pub first: Option<Bytes>,
    pub translator: Option<Box<dyn StreamTranslator>>,
    /// Token usage already seen in the provider's bytes.
    pub usage: super::usage::SseUsage,
    /// The longest silence between two upstream chunks.
    pub idle_timeout: Duration,
    /// Cancelled when the gateway's drain timeout has passed.
    pub closing: tokio_util::sync::CancellationToken,
    pub dialect: Dialect,
    /// For an HTTP/2 client: how long a frame may wait for the client to take it
    /// (see [`pumped`]). HTTP/1 clients are covered by the socket's write guard.
    pub h2_write_timeout: Option<Duration>,
    /// Keeps the configuration's secrets out of the provider's error events.
    pub redactor: Arc<crate::redact::Redactor>,
}

/// Relay `upstream` to the client. Generic over the body so benches can feed it
/// from memory.
pub fn relay_stream<B>(upstream: B, finish: Finish, relay: Relay) -> BerryBody
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: std::fmt::Display,
{
    let stream = RelayStream {
        first: relay.first,
        upstream,
        finish: Some(finish),
        idle_timeout: relay.idle_timeout,
        idle: Box::pin(tokio::time::sleep(relay.idle_timeout)),
        closing: Box::pin(relay.closing.cancelled_owned()),
        done: false,
        events: EventFramer::default(),
        translator: relay.translator,
        dialect: relay.dialect,
        usage: relay.usage,
        redactor: relay.redactor,
    };
    match relay.h2_write_timeout {
        None => stream.boxed_unsync(),
        Some(limit) => pumped(stream, limit),
    }
}

/// The relay of an HTTP/2 client's stream, run in a task of its own.
///
/// While an HTTP/2 client grants a stream no flow-control window, hyper stops
/// polling that stream's body and no socket write stalls, so nothing on the body's
/// path would ever notice: the upstream would be held for as long as the client
/// likes. Here the relay hands its frames over one at a time; when the client has
/// not taken one for `limit`, the relay ends, which releases the upstream, and the
/// client's stream is reset (RST_STREAM), which releases what it holds on the
/// connection.
fn pumped<B>(mut stream: RelayStream<B>, limit: Duration) -> BerryBody
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: std::fmt::Display,
{
    let (frames, taken) = tokio::sync::mpsc::channel::<Bytes>(1);
    let reset = crate::server::conn::stream_reset();
    tokio::spawn(async move {
        loop {
            // A client that resets the stream is noticed at once, not at the next
            // upstream event (which may be a long way off).
            let next = tokio::select! {
                next = stream.frame() => next,
                () = frames.closed() => return,
            };
            let Some(Ok(frame)) = next else { return };
            let Ok(data) = frame.into_data() else { continue };
            match tokio::time::timeout(limit, frames.send(data)).await {
                Ok(Ok(())) => {}
                // The client is gone: dropping the relay records that.
                Ok(Err(_)) => return,
                Err(_) => {
                    stream.stalled();
                    if let Some(reset) = reset {
                        reset.close();
                    }
                    return;
                }
            }
        }
    });
    Pumped(taken).boxed_unsync()
}

/// The client's side of [`pumped`].
struct Pumped(tokio::sync::mpsc::Receiver<Bytes>);

impl Body for Pumped {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|data| data.map(|d| Ok(Frame::data(d))))
    }
}

/// An SSE error event in the client's API; its clients raise it as an API error.
fn error_event(dialect: Dialect, message: &str, kind: &str, code: &str, at_boundary: bool) -> Bytes {
    // Only reachable when bytes were passed on unframed (not SSE, or an event over
    // MAX_PENDING): end that event first so the error is not glued to it.
    let separator = if at_boundary { "" } else { "\n\n" };
    let body = String::from_utf8_lossy(&error_body(dialect, 500, kind, code, message)).into_owned();
    let event = match dialect {
        Dialect::OpenAi => format!("{separator}data: {body}\n\n"),
        Dialect::Anthropic => format!("{separator}event: error\ndata: {body}\n\n"),
    };
    Bytes::from(event)
}

/// Cuts a byte stream where SSE events end: what [`EventFramer::push`] hands out is
/// always whole events, and an event's start is held until its end arrives. Chunks
/// that end where an event ends (the usual case) pass through untouched, without a
/// copy.
pub struct EventFramer {
    /// The start of an event whose end has not arrived yet.
    pending: BytesMut,
    /// Whether everything handed out so far ends at an event boundary.
    at_boundary: bool,
}

impl Default for EventFramer {
    fn default() -> Self {
        EventFramer { pending: BytesMut::new(), at_boundary: true }
    }
}

impl EventFramer {
    /// Take a chunk; returns what can go to the client now, if anything.
    pub fn push(&mut self, data: Bytes) -> Option<Bytes> {
        let out = if self.pending.is_empty() {
            match last_event_end(&data) {
                Some(end) if end == data.len() => Some(data),
                Some(end) => {
                    self.pending.extend_from_slice(&data[end..]);
                    Some(data.slice(..end))
                }
                None => {
                    self.pending.extend_from_slice(&data);
                    None
                }
            }
        } else {
            self.pending.extend_from_slice(&data);
            last_event_end(&self.pending).map(|end| self.pending.split_to(end).freeze())
        };
        // Not SSE, or a giant event: pass the bytes on rather than hold them all.
        let out = out.or_else(|| (self.pending.len() > MAX_PENDING).then(|| self.pending.split().freeze()))?;
        self.at_boundary = last_event_end(&out) == Some(out.len());
        Some(out)
    }

    /// The stream ended cleanly: whatever is held goes out as it was sent.
    pub fn finish(&mut self) -> Option<Bytes> {
        (!self.pending.is_empty()).then(|| self.pending.split().freeze())
    }

    /// The stream broke: the incomplete event is dropped.
    pub fn discard(&mut self) {
        self.pending.clear();
    }

    /// Whether everything handed out so far ends where an event ends (if not, an
    /// event sent after it must first end the open one).
    pub fn at_boundary(&self) -> bool {
        self.at_boundary
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Where the last complete event in `buf` ends (just after its blank line).
pub fn last_event_end(buf: &[u8]) -> Option<usize> {
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
        let redactor = self.redactor.clone();
        let message = &*redactor.text(message);
        self.done = true;
        self.events.discard();
        if let Some(finish) = self.finish.take() {
            tracing::warn!(route = %finish.route.name, class = class.as_str(), "upstream stream failed mid-way: {message}");
            finish.record(Outcome::Failure(class), None);
        }
        let at_boundary = self.events.at_boundary();
        let event = error_event(self.dialect, message, "upstream_error", "stream_interrupted", at_boundary);
        Poll::Ready(Some(Ok(Frame::data(event))))
    }

    /// The client stopped taking the stream: it ends, and the backend is not blamed.
    fn stalled(&mut self) {
        self.done = true;
        if let Some(finish) = self.finish.take() {
            finish.abandon("write_stalled");
        }
    }

    /// The gateway is shutting down and its drain time is over.
    fn close(&mut self) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        self.done = true;
        self.events.discard();
        if let Some(finish) = self.finish.take() {
            finish.abandon("server_shutting_down");
        }
        let message = "The gateway is shutting down; the stream was ended early.";
        let at_boundary = self.events.at_boundary();
        let event = error_event(self.dialect, message, "server_error", "server_shutting_down", at_boundary);
        Poll::Ready(Some(Ok(Frame::data(event))))
    }

    /// An upstream chunk: what of it the client gets now, if anything (`Err`: the
    /// provider reported a failure inside the stream).
    fn take(&mut self, data: Bytes) -> Result<Option<Bytes>, StreamFault> {
        self.usage.feed(&data);
        match self.translator.as_mut() {
            None => Ok(self.events.push(data)),
            // A translator writes whole events of its own.
            Some(t) => {
                let mut out = Vec::new();
                t.feed(&data, &mut out)?;
                Ok((!out.is_empty()).then(|| Bytes::from(out)))
            }
        }
    }

    /// The upstream ended cleanly: the last bytes owed to the client, if any.
    fn end(&mut self) -> Result<Option<Bytes>, StreamFault> {
        match self.translator.as_mut() {
            // A last event without its blank line still goes out as sent.
            None => Ok(self.events.finish()),
            Some(t) => {
                let mut out = Vec::new();
                t.finish(&mut out)?;
                Ok((!out.is_empty()).then(|| Bytes::from(out)))
            }
        }
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
            // A translator's output is whole events already; raw bytes are framed.
            let out = if this.translator.is_some() { Some(first) } else { this.events.push(first) };
            if let Some(out) = out {
                return Poll::Ready(Some(Ok(Frame::data(this.redactor.stream_chunk(out)))));
            }
        }
        if this.done {
            return Poll::Ready(None);
        }
        if this.closing.as_mut().poll(cx).is_ready() {
            return this.close();
        }
        loop {
            match Pin::new(&mut this.upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let deadline = tokio::time::Instant::now() + this.idle_timeout;
                    this.idle.as_mut().reset(deadline);
                    // Trailers have no place in an SSE response; data passes on.
                    let Ok(data) = frame.into_data() else { continue };
                    match this.take(data) {
                        Ok(Some(out)) => return Poll::Ready(Some(Ok(Frame::data(this.redactor.stream_chunk(out))))),
                        Ok(None) => {}
                        Err(fault) => return this.fail(&fault.message, fault.class),
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    return this.fail(&format!("upstream connection broke: {e}"), ErrorClass::Network);
                }
                Poll::Ready(None) => {
                    let last = match this.end() {
                        Ok(last) => last,
                        Err(fault) => return this.fail(&fault.message, fault.class),
                    };
                    this.done = true;
                    if let Some(finish) = this.finish.take() {
                        finish.record(Outcome::Success, this.usage.found);
                    }
                    return Poll::Ready(last.map(|bytes| Ok(Frame::data(bytes))));
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
        self.done && self.first.is_none() && self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::{EventFramer, last_event_end};
    use bytes::Bytes;

    #[test]
    fn only_whole_events_are_handed_out() {
        let mut f = EventFramer::default();
        assert_eq!(f.push(Bytes::from_static(b"data: 1\n\n")).as_deref(), Some(&b"data: 1\n\n"[..]));
        assert_eq!(f.push(Bytes::from_static(b"data: 2\n\ndata: ")).as_deref(), Some(&b"data: 2\n\n"[..]));
        assert_eq!(f.push(Bytes::from_static(b"3")), None);
        assert!(f.at_boundary());
        assert_eq!(f.push(Bytes::from_static(b"\n\n")).as_deref(), Some(&b"data: 3\n\n"[..]));
        assert_eq!(f.push(Bytes::from_static(b"data: 4")), None);
        assert_eq!(f.finish().as_deref(), Some(&b"data: 4"[..]));
    }

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
