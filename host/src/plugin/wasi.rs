//! The WASI a plugin gets, from `wasmtime-wasi`: clocks, randomness, an empty
//! environment, and stdout and stderr, which go to the gateway's log (tagged with
//! the plugin, bounded, rate-limited), so `println!` debugging works as in any Rust
//! program. Files, sockets and the rest of WASI are not linked: they trap.
//!
//! The randomness is deterministic — every instance of a plugin draws the same
//! bytes — so any instance keeps giving the same answer for the same input, as the
//! contract promises. A plugin that needs a fresh random number per request has one
//! in `request.random`.
//!
//! Plugins are called synchronously on the gateway's worker threads, where
//! wasmtime-wasi's synchronous bindings may not run: their blocking calls enter a
//! tokio `block_on`. The stream and poll calls are therefore answered here, by
//! running wasmtime-wasi's own (async) implementation to its first poll: the log
//! streams are always ready, so a write completes; anything that would really wait
//! (a plugin sleeping on a clock) traps instead of blocking a worker.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream, WasiCliView as _};
use wasmtime_wasi::clocks::WasiClocksView as _;
use wasmtime_wasi::p2::bindings::sync::io::{poll as sync_poll, streams as sync_streams};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};
use wasmtime_wasi_io::bindings::wasi::io::{poll as async_poll, streams as async_streams};
use wasmtime_wasi_io::poll::DynPollable;
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream};

use super::sandbox::HostState;

/// The WASI interfaces [`add_to_linker`] defines (any 0.2.x version of them
/// resolves to these definitions).
pub const LINKED: &[&str] = &[
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
];

/// Add the WASI a plugin gets to `linker` (once, for the engine's base linkers).
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::{cli, clocks, random};
    use wasmtime_wasi::{cli::WasiCli, clocks::WasiClocks, random::WasiRandom};
    let l = linker;
    clocks::wall_clock::add_to_linker::<HostState, WasiClocks>(l, |s| s.clocks())?;
    clocks::monotonic_clock::add_to_linker::<HostState, WasiClocks>(l, |s| s.clocks())?;
    random::random::add_to_linker::<HostState, WasiRandom>(l, |s| s.wasi.random())?;
    random::insecure::add_to_linker::<HostState, WasiRandom>(l, |s| s.wasi.random())?;
    random::insecure_seed::add_to_linker::<HostState, WasiRandom>(l, |s| s.wasi.random())?;
    cli::environment::add_to_linker::<HostState, WasiCli>(l, |s| s.cli())?;
    cli::exit::add_to_linker::<HostState, WasiCli>(l, |s| s.cli())?;
    cli::stdin::add_to_linker::<HostState, WasiCli>(l, |s| s.cli())?;
    cli::stdout::add_to_linker::<HostState, WasiCli>(l, |s| s.cli())?;
    cli::stderr::add_to_linker::<HostState, WasiCli>(l, |s| s.cli())?;
    cli::terminal_input::add_to_linker::<HostState, WasiCli>(l, |s| s.cli())?;
    cli::terminal_output::add_to_linker::<HostState, WasiCli>(l, |s| s.cli())?;
    cli::terminal_stdin::add_to_linker::<HostState, WasiCli>(l, |s| s.cli())?;
    cli::terminal_stdout::add_to_linker::<HostState, WasiCli>(l, |s| s.cli())?;
    cli::terminal_stderr::add_to_linker::<HostState, WasiCli>(l, |s| s.cli())?;
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<HostState, Table>(l, |s| &mut s.table)?;
    sync_poll::add_to_linker::<HostState, AtOnce>(l, |s| Now(&mut s.table))?;
    sync_streams::add_to_linker::<HostState, AtOnce>(l, |s| Now(&mut s.table))?;
    Ok(())
}

/// The WASI context of one plugin instance.
pub fn context(plugin: &Arc<str>, output: &Arc<LineBudget>) -> WasiCtx {
    let seed = crate::fnv::hash(plugin.as_bytes());
    let mut rng = fastrand::Rng::with_seed(seed);
    // A long cycle of pseudo-random bytes, the same for every instance of the plugin.
    let mut cycle = || -> Vec<u8> { (0..RANDOM_CYCLE).map(|_| rng.u8(..)).collect() };
    let (secure, insecure) = (cycle(), cycle());
    let mut builder = WasiCtxBuilder::new();
    builder
        .stdout(LogOutput { plugin: plugin.clone(), stderr: false, budget: output.clone() })
        .stderr(LogOutput { plugin: plugin.clone(), stderr: true, budget: output.clone() })
        .secure_random(wasmtime_wasi::Deterministic::new(secure))
        .insecure_random(wasmtime_wasi::Deterministic::new(insecure))
        .insecure_random_seed(u128::from(seed) << 64 | u128::from(seed.rotate_left(17)))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    builder.build()
}

/// Bytes of each random cycle (a plugin's `HashMap` seeds and the like come from it).
const RANDOM_CYCLE: usize = 4096;

struct Table;

impl HasData for Table {
    type Data<'a> = &'a mut ResourceTable;
}

/// The stream and poll calls, answered at once (see the module comment).
struct AtOnce;

impl HasData for AtOnce {
    type Data<'a> = Now<'a>;
}

struct Now<'a>(&'a mut ResourceTable);

/// Run `future` to its first poll: its value if it is ready then, a trap if it
/// would wait.
fn now<F: Future>(future: F) -> wasmtime::Result<F::Output> {
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => Ok(value),
        Poll::Pending => {
            wasmtime::bail!("the plugin waited (on a clock or a stream): plugins run to completion, they cannot wait")
        }
    }
}

/// [`now`] for a call that answers a stream result.
fn now_stream<T>(future: impl Future<Output = StreamResult<T>>) -> StreamResult<T> {
    now(future).map_err(StreamError::Trap)?
}

impl sync_streams::Host for Now<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<sync_streams::StreamError> {
        sync_streams::Host::convert_stream_error(self.0, err)
    }
}

impl sync_streams::HostOutputStream for Now<'_> {
    fn drop(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<()> {
        now(async_streams::HostOutputStream::drop(self.0, stream))?
    }
    fn check_write(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<u64> {
        sync_streams::HostOutputStream::check_write(self.0, stream)
    }
    fn write(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        sync_streams::HostOutputStream::write(self.0, stream, bytes)
    }
    fn blocking_write_and_flush(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        now_stream(async_streams::HostOutputStream::blocking_write_and_flush(self.0, stream, bytes))
    }
    fn flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        sync_streams::HostOutputStream::flush(self.0, stream)
    }
    fn blocking_flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        now_stream(async_streams::HostOutputStream::blocking_flush(self.0, stream))
    }
    fn subscribe(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<Resource<DynPollable>> {
        sync_streams::HostOutputStream::subscribe(self.0, stream)
    }
    fn write_zeroes(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        sync_streams::HostOutputStream::write_zeroes(self.0, stream, len)
    }
    fn blocking_write_zeroes_and_flush(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        now_stream(async_streams::HostOutputStream::blocking_write_zeroes_and_flush(self.0, stream, len))
    }
    fn splice(&mut self, dst: Resource<DynOutputStream>, src: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        sync_streams::HostOutputStream::splice(self.0, dst, src, len)
    }
    fn blocking_splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        now_stream(async_streams::HostOutputStream::blocking_splice(self.0, dst, src, len))
    }
}

impl sync_streams::HostInputStream for Now<'_> {
    fn drop(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<()> {
        now(async_streams::HostInputStream::drop(self.0, stream))?
    }
    fn read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        sync_streams::HostInputStream::read(self.0, stream, len)
    }
    fn blocking_read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        now_stream(async_streams::HostInputStream::blocking_read(self.0, stream, len))
    }
    fn skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        sync_streams::HostInputStream::skip(self.0, stream, len)
    }
    fn blocking_skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        now_stream(async_streams::HostInputStream::blocking_skip(self.0, stream, len))
    }
    fn subscribe(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<Resource<DynPollable>> {
        sync_streams::HostInputStream::subscribe(self.0, stream)
    }
}

impl sync_poll::Host for Now<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        now(async_poll::Host::poll(self.0, pollables))?
    }
}

impl sync_poll::HostPollable for Now<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        now(async_poll::HostPollable::ready(self.0, pollable))?
    }
    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        now(async_poll::HostPollable::block(self.0, pollable))?
    }
    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(self.0, pollable)
    }
}

// === stdout and stderr into the log ===

/// Lines a plugin's stdout and stderr may write to the log: a burst, then a steady
/// rate; what goes over is counted and reported with the next line that fits.
pub struct LineBudget {
    state: std::sync::Mutex<(f64, std::time::Instant, u64)>,
}

/// Lines at once, and lines a second after that.
const LINE_BURST: f64 = 100.0;
const LINES_PER_SECOND: f64 = 20.0;
/// Longest line written; longer ones are cut.
const MAX_LINE_CHARS: usize = 2048;

impl Default for LineBudget {
    fn default() -> Self {
        LineBudget { state: std::sync::Mutex::new((LINE_BURST, std::time::Instant::now(), 0)) }
    }
}

impl LineBudget {
    /// Whether a line may be written now, and how many were dropped before it.
    fn take(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, at, dropped) = &mut *state;
        let now = std::time::Instant::now();
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * LINES_PER_SECOND).min(LINE_BURST);
        *at = now;
        if *tokens < 1.0 {
            *dropped += 1;
            return None;
        }
        *tokens -= 1.0;
        Some(std::mem::take(dropped))
    }
}

/// The stdout (or stderr) of a plugin instance.
struct LogOutput {
    plugin: Arc<str>,
    stderr: bool,
    budget: Arc<LineBudget>,
}

impl IsTerminal for LogOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.lines())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.lines())
    }
}

impl LogOutput {
    fn lines(&self) -> LogLines {
        LogLines { plugin: self.plugin.clone(), stderr: self.stderr, budget: self.budget.clone(), partial: Vec::new() }
    }
}

/// Bytes written to a plugin's stdout or stderr, logged a line at a time.
struct LogLines {
    plugin: Arc<str>,
    stderr: bool,
    budget: Arc<LineBudget>,
    /// The start of a line whose end has not been written yet.
    partial: Vec<u8>,
}

impl LogLines {
    fn push(&mut self, bytes: &[u8]) {
        for piece in bytes.split_inclusive(|&b| b == b'\n') {
            if self.partial.len() < MAX_LINE_CHARS * 4 {
                self.partial.extend_from_slice(piece);
            }
            if piece.ends_with(b"\n") {
                self.emit();
            }
        }
    }

    fn emit(&mut self) {
        if self.partial.is_empty() {
            return;
        }
        let line = String::from_utf8_lossy(&self.partial).trim_end_matches(['\n', '\r']).to_string();
        self.partial.clear();
        let Some(dropped) = self.budget.take() else { return };
        let line: String = line.chars().take(MAX_LINE_CHARS).collect();
        let line = crate::telemetry::clean::escape(&line);
        let (plugin, stream) = (&*self.plugin, if self.stderr { "stderr" } else { "stdout" });
        if dropped > 0 {
            tracing::warn!(plugin, stream, dropped, "plugin output over its rate limit: lines dropped");
        }
        if self.stderr {
            tracing::warn!(plugin, stream, "{line}");
        } else {
            tracing::info!(plugin, stream, "{line}");
        }
    }
}

impl Drop for LogLines {
    fn drop(&mut self) {
        // A last line without its newline is still the plugin's.
        self.emit();
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogLines {
    async fn ready(&mut self) {}
}

impl OutputStream for LogLines {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for LogLines {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugins_lines_are_rate_limited_and_drops_counted() {
        let budget = LineBudget::default();
        let allowed = (0..150).filter(|_| budget.take().is_some()).count();
        assert_eq!(allowed, LINE_BURST as usize, "a burst, then nothing until the budget refills");
        std::thread::sleep(std::time::Duration::from_millis(120));
        assert_eq!(budget.take(), Some(50), "the next line reports the lines dropped before it");
    }

    #[test]
    fn a_future_that_would_wait_traps() {
        assert_eq!(now(async { 7 }).ok(), Some(7));
        assert!(now(std::future::pending::<()>()).is_err());
    }
}
