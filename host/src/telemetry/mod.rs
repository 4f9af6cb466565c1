//! Logging: `tracing` with `RUST_LOG` filtering (default `info`), human-readable by
//! default, one JSON object per line with `BERRY_LOG_FORMAT=json`.
//!
//! Two things keep logging cheap enough to leave on, as operators do:
//! - output goes through [`sink::Sink`]: lines are appended to a buffer that a
//!   background thread writes out every few milliseconds (one write for many lines,
//!   none on the request path), unless stdout is a terminal, which gets each line at
//!   once, in colour;
//! - the per-request line ([`request_line`]) is formatted by hand into that buffer,
//!   in the same shape the `tracing` formatter gives every other line.

pub mod clean;
mod line;
mod sink;
pub mod trace;

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

pub use line::{RequestLine, request_line};
use sink::Sink;

/// The output the binary set up; `None` in tests and benches, whose request lines go
/// through `tracing` like any other event.
static OUTPUT: OnceLock<Output> = OnceLock::new();

struct Output {
    sink: Sink,
    json: bool,
}

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("BERRY_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let terminal = std::io::stdout().is_terminal();
    let sink = Sink::start(!terminal);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(terminal)
        .with_writer(sink.clone());
    // `try_init` fails only if a subscriber is already set: keep that one.
    let installed = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
    if installed.is_ok() {
        let _ = OUTPUT.set(Output { sink, json });
    }
}

/// Write out whatever is buffered (before the process exits).
pub fn flush() {
    if let Some(output) = OUTPUT.get() {
        output.sink.flush();
    }
}
