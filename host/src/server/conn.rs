//! One client connection, below HTTP: the protocol is detected under a deadline,
//! writes the client does not take are cut off, and a connection that fails before
//! or between requests (silent, malformed, headers too large, stalled) is logged
//! and counted once.
//!
//! hyper's own protocol detection (`auto::Builder`) waits for the first bytes with no
//! deadline, so a client that connects and says nothing would hold its socket forever.
//! Here the first bytes are read under `client_header_timeout`, then the connection
//! is handed to hyper's HTTP/1 or HTTP/2 server with those bytes replayed.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::body::BerryBody;
use super::connections::{Busy, Closer, Connection};
use super::router;
use crate::gateway::Gateway;
use crate::metrics::ConnectionLabels;

/// The first bytes of every HTTP/2 connection (prior knowledge, "h2c"). Anything
/// else is served as HTTP/1.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Largest request head (HTTP/1 request line and headers; HTTP/2 header list). An
/// API request's headers are a few hundred bytes; larger heads are refused (431).
const MAX_HEAD_BYTES: usize = 64 << 10;
/// Concurrent HTTP/2 streams per connection.
const MAX_H2_STREAMS: u32 = 256;

enum Protocol {
    Http1,
    Http2,
}

/// Serve one accepted connection until it ends, or until `connection.close` is
/// set (the gateway drains, or the connection was evicted or keeps stalling):
/// then it is closed gracefully, its requests in flight finishing first.
pub async fn serve(stream: TcpStream, peer: SocketAddr, gateway: Arc<Gateway>, connection: Arc<Connection>) {
    // Only the numbers: the connection lives long, the settings' strings need not.
    let (header_timeout, write_timeout) = {
        let snapshot = gateway.snapshot();
        (snapshot.config.settings.client_header_timeout, snapshot.config.settings.client_write_timeout)
    };
    let mut stream = stream;
    let detected = tokio::select! {
        d = tokio::time::timeout(header_timeout, detect(&mut stream)) => d,
        () = connection.close.closed() => return,
    };
    let (protocol, prefix) = match detected {
        Ok(Ok(Some(found))) => found,
        // Closed before saying anything (TCP health checks, port scans): nothing to report.
        Ok(Ok(None)) | Ok(Err(_)) => return,
        Err(_) => return report(&gateway, peer, Failure::Silent),
    };
    let io = TokioIo::new(ClientIo::new(stream, prefix, write_timeout));
    let gw = gateway.clone();
    let conn = connection.clone();
    // Boxed: hyper keeps room for the service future in every connection for its
    // whole life. The relay future is kilobytes; boxed, an idle keep-alive connection
    // or a long stream (whose future has finished) holds 8 bytes.
    let service = service_fn(move |req| {
        // The request is in flight until its answer's body is done (or dropped).
        let busy = conn.start();
        let handled = router::handle(gw.clone(), peer, req);
        Box::pin(async move {
            let response = handled.await?;
            Ok::<_, Infallible>(response.map(|body| Tracked { body, _busy: busy }))
        })
    });
    let result = match protocol {
        Protocol::Http1 => {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                // Also the idle timeout between two requests on a kept-alive connection.
                .header_read_timeout(header_timeout)
                .max_header_size(MAX_HEAD_BYTES)
                .keep_alive(true);
            // Boxed, each protocol's connection: the task then holds the one it
            // serves, not room for the larger of the two.
            let served = Box::pin(builder.serve_connection(io, service));
            drive(served, |c| c.graceful_shutdown(), &connection, None).await
        }
        Protocol::Http2 => {
            let mut builder = http2::Builder::new(StreamExecutor { connection: connection.clone() });
            builder
                .timer(TokioTimer::new())
                // A peer that stops answering pings (or never spoke after the preface)
                // is gone: close it instead of keeping its socket forever.
                .keep_alive_interval(header_timeout)
                .keep_alive_timeout(header_timeout)
                .max_header_list_size(MAX_HEAD_BYTES as u32)
                .max_concurrent_streams(MAX_H2_STREAMS);
            let served = Box::pin(builder.serve_connection(io, service));
            // A peer that answers pings but opens no stream is idle all the same: it
            // gets the idle limit of a kept-alive HTTP/1 connection.
            drive(served, |c| c.graceful_shutdown(), &connection, Some(header_timeout)).await
        }
    };
    if let Err(e) = result {
        match Failure::of(&e) {
            Some(failure) => report(&gateway, peer, failure),
            None => tracing::debug!(client = %peer, "connection ended with an error: {e}"),
        }
    }
}

/// Run a hyper connection to its end, starting its graceful shutdown (`shutdown`)
/// when the connection is told to close or, given `idle_limit`, once it has had no
/// request in flight for that long.
async fn drive<C>(
    mut served: Pin<Box<C>>,
    shutdown: impl Fn(Pin<&mut C>),
    connection: &Connection,
    idle_limit: Option<Duration>,
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let limit = idle_limit.unwrap_or(Duration::MAX);
    let mut idle = std::pin::pin!(tokio::time::sleep(limit));
    let mut closing = false;
    loop {
        tokio::select! {
            result = served.as_mut() => return result,
            () = connection.close.closed(), if !closing => {
                closing = true;
                shutdown(served.as_mut());
            }
            () = &mut idle, if !closing && idle_limit.is_some() => {
                let idle_for = connection.idle_for();
                if idle_for >= limit {
                    closing = true;
                    shutdown(served.as_mut());
                } else {
                    idle.as_mut().reset(Instant::now() + (limit - idle_for));
                }
            }
        }
    }
}

/// A response body that keeps its request counted as in flight on its connection
/// until the body is done or dropped (then the connection may count as idle).
struct Tracked {
    body: BerryBody,
    _busy: Busy,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

tokio::task_local! {
    /// The reset switch of the HTTP/2 stream a request arrived on.
    static STREAM_RESET: Arc<Closer>;
}

/// The reset switch of the HTTP/2 stream the current request arrived on, if it did:
/// closing it resets the stream (RST_STREAM) and counts a stall against its
/// connection. A stream the client grants no flow-control window is no longer
/// polled by hyper, so nothing inside its body can end it; this can.
pub fn stream_reset() -> Option<Arc<Closer>> {
    STREAM_RESET.try_with(Arc::clone).ok()
}

/// Runs each HTTP/2 stream of a connection (hyper hands it the stream's task) with
/// a reset switch: dropping the task drops hyper's handles on the stream, and h2
/// then resets it.
#[derive(Clone)]
struct StreamExecutor {
    connection: Arc<Connection>,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        // A `Closer`, not a `CancellationToken`: it is polled on every wake of the
        // stream's task, and a token locks a mutex each time.
        let reset = Arc::new(Closer::default());
        let connection = self.connection.clone();
        let run = STREAM_RESET.scope(reset.clone(), async move {
            tokio::select! {
                () = stream => {}
                () = reset.closed() => connection.stalled(),
            }
        });
        tokio::spawn(run);
    }
}

/// Read until the protocol is known: the HTTP/2 preface, or a byte that departs from
/// it. Returns the bytes read (to be replayed), or `None` when the client closed first.
async fn detect(stream: &mut TcpStream) -> io::Result<Option<(Protocol, Bytes)>> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(None);
        }
        filled += n;
        let read = &buf[..filled];
        if read != &H2_PREFACE[..filled] {
            return Ok(Some((Protocol::Http1, Bytes::copy_from_slice(read))));
        }
        if filled == H2_PREFACE.len() {
            return Ok(Some((Protocol::Http2, Bytes::from_static(H2_PREFACE))));
        }
    }
}

/// Why a connection ended below HTTP, as logged and counted.
#[derive(Clone, Copy)]
enum Failure {
    /// Connected and never sent a byte within the header timeout.
    Silent,
    /// Request headers not complete within the header timeout.
    HeaderTimeout,
    /// Not HTTP, or malformed HTTP.
    Malformed,
    /// The request head (line and headers) is over `MAX_HEAD_BYTES`.
    HeadersTooLarge,
    /// Went away in the middle of sending a request.
    ClosedEarly,
    /// Stopped taking the response for `client_write_timeout`.
    WriteStalled,
}

impl Failure {
    fn of(e: &hyper::Error) -> Option<Failure> {
        let io_kind = std::error::Error::source(e).and_then(|s| s.downcast_ref::<io::Error>()).map(io::Error::kind);
        if e.is_timeout() {
            Some(Failure::HeaderTimeout)
        } else if e.is_parse_too_large() {
            // Headers, or a URI, beyond the head limit (which is below hyper's own URI
            // limit, so a long URI ends here too).
            Some(Failure::HeadersTooLarge)
        } else if e.is_parse() {
            Some(Failure::Malformed)
        } else if io_kind == Some(io::ErrorKind::TimedOut) {
            Some(Failure::WriteStalled)
        } else if e.is_incomplete_message() {
            Some(Failure::ClosedEarly)
        } else {
            None
        }
    }

    /// The status nginx would log for it (408 timeouts, 499 client gone).
    fn status(self) -> u16 {
        match self {
            Failure::Silent | Failure::HeaderTimeout => 408,
            Failure::Malformed => 400,
            Failure::HeadersTooLarge => 431,
            Failure::ClosedEarly | Failure::WriteStalled => 499,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Failure::Silent => "silent",
            Failure::HeaderTimeout => "header_timeout",
            Failure::Malformed => "malformed_request",
            Failure::HeadersTooLarge => "headers_too_large",
            Failure::ClosedEarly => "closed_early",
            Failure::WriteStalled => "write_stalled",
        }
    }
}

fn report(gateway: &Gateway, peer: SocketAddr, failure: Failure) {
    gateway.metrics.connection_errors.get_or_create(&ConnectionLabels { reason: failure.as_str() }).inc();
    tracing::info!(
        target: "berry::request",
        client = %peer,
        status = failure.status(),
        error = failure.as_str(),
        "connection closed before a request completed"
    );
}

/// The client socket as hyper sees it: the bytes read during detection come first,
/// and a write that stays blocked (the client stopped reading) for longer than the
/// write timeout fails, so hyper closes the connection and drops whatever it was
/// sending, upstream stream included.
struct ClientIo {
    prefix: Bytes,
    stream: TcpStream,
    write_timeout: Duration,
    /// Made on the first blocked write, reused after.
    stall: Option<Pin<Box<Sleep>>>,
    /// Whether `stall` is counting down the current blocked write.
    stalling: bool,
}

impl ClientIo {
    fn new(stream: TcpStream, prefix: Bytes, write_timeout: Duration) -> Self {
        ClientIo { prefix, stream, write_timeout, stall: None, stalling: false }
    }

    /// Pass a write's result through, timing how long the socket stays blocked.
    fn guard<T>(&mut self, cx: &mut Context<'_>, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if result.is_ready() {
            self.stalling = false;
            return result;
        }
        if !self.stalling {
            self.stalling = true;
            let deadline = Instant::now() + self.write_timeout;
            match &mut self.stall {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.stall = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let expired = self.stall.as_mut().is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
        if expired {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading")));
        }
        Poll::Pending
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.prefix.is_empty() {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix[..n]);
        this.prefix.advance(n);
        // The rest of what has arrived comes in the same read: hyper then gets the
        // whole request head at once instead of growing its buffer for a few bytes.
        if this.prefix.is_empty() && buf.remaining() > 0 {
            let before = buf.filled().len();
            match Pin::new(&mut this.stream).poll_read(cx, buf) {
                Poll::Ready(Err(e)) if buf.filled().len() == before => return Poll::Ready(Err(e)),
                _ => {}
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.guard(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.guard(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.stream).poll_flush(cx);
        self.guard(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Raise the open-file soft limit to the hard limit: every client connection and
/// every upstream connection is a file descriptor, and common defaults (1024) are far
/// below what a gateway holds. Returns the limit now in force.
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(max) = limit.maximum
        && limit.current.is_none_or(|c| c < max)
    {
        limit.current = Some(max);
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!("cannot raise the open-file limit to {max}: {e}");
        }
    }
    getrlimit(Resource::Nofile).current
}
