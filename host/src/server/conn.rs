//! One client connection, below HTTP: the protocol is detected under a deadline,
//! writes the client does not take are cut off, and a connection that fails before
//! or between requests (silent, malformed, headers too large, stalled) is logged
//! and counted once.
//!
//! hyper's own protocol detection (`auto::Builder`) waits for the first bytes with no
//! deadline, so a client that connects and says nothing would hold its socket forever.
//! Here the first bytes are read under `client_header_timeout`, then the connection
//! is handed to hyper's HTTP/1 or HTTP/2 server with those bytes replayed.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

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

/// Serve one accepted connection until it ends. `watcher` lets a graceful shutdown
/// finish its in-flight requests; `draining` ends a connection still being detected.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    gateway: Arc<Gateway>,
    watcher: Watcher,
    draining: tokio_util::sync::CancellationToken,
) {
    // Only the numbers: the connection lives long, the settings' strings need not.
    let (header_timeout, write_timeout) = {
        let snapshot = gateway.snapshot();
        (snapshot.config.settings.client_header_timeout, snapshot.config.settings.client_write_timeout)
    };
    let mut stream = stream;
    let detected = tokio::select! {
        d = tokio::time::timeout(header_timeout, detect(&mut stream)) => d,
        () = draining.cancelled() => return,
    };
    let (protocol, prefix) = match detected {
        Ok(Ok(Some(found))) => found,
        // Closed before saying anything (TCP health checks, port scans): nothing to report.
        Ok(Ok(None)) | Ok(Err(_)) => return,
        Err(_) => return report(&gateway, peer, Failure::Silent),
    };
    let io = TokioIo::new(ClientIo::new(stream, prefix, write_timeout));
    let gw = gateway.clone();
    // Boxed: hyper keeps room for the service future in every connection for its
    // whole life. The relay future is kilobytes; boxed, an idle keep-alive connection
    // or a long stream (whose future has finished) holds 8 bytes.
    let service = service_fn(move |req| Box::pin(router::handle(gw.clone(), peer, req)));
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
            Box::pin(watcher.watch(builder.serve_connection(io, service))).await
        }
        Protocol::Http2 => {
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                // A peer that stops answering pings (or never spoke after the preface)
                // is gone: close it instead of keeping its socket forever.
                .keep_alive_interval(header_timeout)
                .keep_alive_timeout(header_timeout)
                .max_header_list_size(MAX_HEAD_BYTES as u32)
                .max_concurrent_streams(MAX_H2_STREAMS);
            Box::pin(watcher.watch(builder.serve_connection(io, service))).await
        }
    };
    if let Err(e) = result {
        match Failure::of(&e) {
            Some(failure) => report(&gateway, peer, failure),
            None => tracing::debug!(client = %peer, "connection ended with an error: {e}"),
        }
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
