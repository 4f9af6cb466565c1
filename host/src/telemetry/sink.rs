//! Where log lines go: stdout, through a buffer. A request appends its line under a
//! short lock; a background thread writes the buffer out every [`FLUSH_EVERY`], so
//! many lines cost one write and none is written on the request path. When stdout is
//! a terminal, lines are written at once instead (someone is watching).
//!
//! Memory is bounded: while the buffer holds [`MAX_BUFFERED`] bytes (stdout stuck, a
//! full disk), further lines are dropped and counted, and the count is logged once
//! output moves again.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

const FLUSH_EVERY: Duration = Duration::from_millis(20);
const MAX_BUFFERED: usize = 16 << 20;

#[derive(Clone)]
pub struct Sink(Arc<Shared>);

struct Shared {
    batched: AtomicBool,
    /// Lines waiting to be written.
    pending: Mutex<Vec<u8>>,
    /// The buffer being written out (swapped with `pending`, so neither reallocates).
    writing: Mutex<Vec<u8>>,
    dropped: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sink {
    pub fn start(batched: bool) -> Sink {
        let sink = Sink(Arc::new(Shared {
            batched: AtomicBool::new(batched),
            pending: Mutex::new(Vec::with_capacity(64 << 10)),
            writing: Mutex::new(Vec::with_capacity(64 << 10)),
            dropped: AtomicU64::new(0),
        }));
        if batched {
            let flusher = sink.clone();
            let spawned = std::thread::Builder::new().name("berry-log".into()).spawn(move || {
                loop {
                    std::thread::sleep(FLUSH_EVERY);
                    flusher.flush();
                }
            });
            if spawned.is_err() {
                // Without the thread nothing would ever be written: write at once.
                sink.0.batched.store(false, Ordering::Relaxed);
            }
        }
        sink
    }

    /// Append one line (with its newline).
    pub fn write_line(&self, line: &[u8]) {
        if !self.0.batched.load(Ordering::Relaxed) {
            let _ = std::io::stdout().lock().write_all(line);
            return;
        }
        let mut pending = lock(&self.0.pending);
        if pending.len() + line.len() > MAX_BUFFERED {
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.extend_from_slice(line);
    }

    /// Write out everything buffered.
    pub fn flush(&self) {
        let mut writing = lock(&self.0.writing);
        std::mem::swap(&mut *writing, &mut *lock(&self.0.pending));
        let dropped = self.0.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let note = format!("berry: {dropped} log lines were dropped while output was blocked\n");
            writing.extend_from_slice(note.as_bytes());
        }
        if !writing.is_empty() {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&writing);
            let _ = out.flush();
            writing.clear();
        }
    }
}

/// What `tracing`'s formatter writes an event into: the whole line arrives in one
/// `write`.
pub struct SinkWriter<'a>(&'a Sink);

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_line(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = SinkWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter(self)
    }
}
