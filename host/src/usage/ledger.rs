//! The ledger: one row per relayed request in SQLite, written by one thread off the
//! request path.
//!
//! A request hands its record to a bounded queue and goes on (it never waits on the
//! database); the writer takes what has queued, at most every [`BATCH_WINDOW`], and
//! writes it in one transaction (WAL: readers — `/admin/usage`, `berry usage` — never
//! block it). A `kill -9` loses at most the batch being gathered; a clean shutdown
//! flushes. A write that fails is logged, counted and retried with the next batch;
//! a full queue drops records and counts them, it never blocks a request.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

use super::Record;

/// Longest a record waits in the queue before it is written.
///
/// Short, so each batch is a short burst: at 250 ms a batch was a thousand rows or
/// more (milliseconds of SQLite work at once), and the requests that met it made
/// Berry's p99 at one connection ~1.4× what it is with this window (BENCHMARKS.md,
/// issue 22).
pub const BATCH_WINDOW: Duration = Duration::from_millis(25);
/// Records queued at most (a stalled disk must not grow memory without bound).
const QUEUE: usize = 100_000;
/// Records kept for a retry after failed writes, at most.
const RETRY_KEEP: usize = 200_000;

enum Message {
    Record(Box<Record>),
    /// Write everything queued before this, then answer.
    Flush(std::sync::mpsc::Sender<()>),
}

pub struct Ledger {
    path: PathBuf,
    queue: SyncSender<Message>,
    pub stats: Arc<Stats>,
}

#[derive(Default)]
pub struct Stats {
    pub queued: AtomicU64,
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub write_failures: AtomicU64,
}

impl Ledger {
    /// Open (or create) the database and start its writer. An unusable file is an
    /// error here, at start, not at the first request.
    pub fn open(path: &Path, retention: Duration) -> Result<Arc<Ledger>, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("settings.usage_db: cannot create {}: {e}", dir.display()))?;
        }
        let connection =
            connect(path).map_err(|e| format!("settings.usage_db: cannot open {}: {e}", path.display()))?;
        prune(&connection, retention);
        let (queue, received) = sync_channel(QUEUE);
        let stats = Arc::new(Stats::default());
        let writer_stats = stats.clone();
        // When the last handle goes, so does the queue's sender: the writer drains
        // what is left and ends.
        std::thread::Builder::new()
            .name("berry-ledger".into())
            .spawn(move || write_loop(connection, received, &writer_stats, retention))
            .map_err(|e| format!("cannot start the ledger writer: {e}"))?;
        Ok(Arc::new(Ledger { path: path.to_path_buf(), queue, stats }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queue one record; never waits.
    pub fn record(&self, record: Record) {
        match self.queue.try_send(Message::Record(Box::new(record))) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                if self.stats.dropped.fetch_add(1, Ordering::Relaxed).is_multiple_of(10_000) {
                    tracing::error!("the usage ledger cannot keep up (queue full): records are being dropped");
                }
            }
        }
    }

    /// Write everything queued so far (shutdown; tests), waiting at most `wait`.
    pub fn flush(&self, wait: Duration) -> bool {
        let (done, finished) = std::sync::mpsc::channel();
        let deadline = Instant::now() + wait;
        loop {
            match self.queue.try_send(Message::Flush(done.clone())) {
                Ok(()) => break,
                Err(TrySendError::Full(_)) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => return false,
            }
        }
        finished.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok()
    }

    /// Records waiting to be written.
    pub fn backlog(&self) -> u64 {
        let s = &self.stats;
        s.queued.load(Ordering::Relaxed).saturating_sub(s.written.load(Ordering::Relaxed))
    }
}

/// A connection as the ledger wants it: WAL, a busy timeout (readers and a second
/// gateway on the same file wait instead of failing), the schema in place.
///
/// Some lock conflicts skip SQLite's busy handler (the switch to WAL, or a schema
/// change racing another process's on a new file — seen when several gateways and
/// `check-config` start at once on a fresh machine): those are retried here, for
/// as long as the busy timeout.
pub fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match try_connect(path) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5 + fastrand::u64(..20)));
            }
            result => return result,
        }
    }
}

fn try_connect(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(Duration::from_secs(5))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.execute_batch(SCHEMA)?;
    Ok(connection)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    user TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    upstream_model TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    status INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cached_input_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cost REAL NOT NULL,
    latency_ms REAL NOT NULL,
    first_byte_ms REAL,
    attempts INTEGER NOT NULL,
    stream INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_by_time ON requests (time_ms);
";

fn write_loop(mut connection: Connection, received: Receiver<Message>, stats: &Stats, retention: Duration) {
    let mut batch: Vec<Record> = Vec::new();
    let mut waiting: Vec<std::sync::mpsc::Sender<()>> = Vec::new();
    let mut last_prune = Instant::now();
    let mut open = true;
    while open || !batch.is_empty() {
        // Sleep out the batch window, then take everything queued. The writer never
        // waits on the queue itself: a sender then has no sleeping thread to wake,
        // and a record costs the request path one push into the queue, no system call.
        std::thread::sleep(BATCH_WINDOW);
        loop {
            match received.try_recv() {
                Ok(m) => take(m, &mut batch, &mut waiting),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        match insert(&mut connection, &batch) {
            Ok(()) => {
                stats.written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
            }
            Err(e) => {
                let failures = stats.write_failures.fetch_add(1, Ordering::Relaxed);
                if failures.is_multiple_of(100) {
                    tracing::error!(error = %e, records = batch.len(), "writing the usage ledger failed; retrying");
                }
                if batch.len() > RETRY_KEEP {
                    let extra = batch.len() - RETRY_KEEP;
                    batch.drain(..extra);
                    stats.dropped.fetch_add(extra as u64, Ordering::Relaxed);
                    stats.written.fetch_add(extra as u64, Ordering::Relaxed);
                }
                if !open {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
        if last_prune.elapsed() > Duration::from_secs(3600) {
            prune(&connection, retention);
            last_prune = Instant::now();
        }
    }
}

fn take(message: Message, batch: &mut Vec<Record>, waiting: &mut Vec<std::sync::mpsc::Sender<()>>) {
    match message {
        Message::Record(r) => batch.push(*r),
        Message::Flush(done) => waiting.push(done),
    }
}

fn insert(connection: &mut Connection, batch: &[Record]) -> rusqlite::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let tx = connection.transaction()?;
    {
        let mut statement = tx.prepare_cached(
            "INSERT INTO requests (time_ms, request_id, user, model, provider, upstream_model, endpoint, status,
                input_tokens, output_tokens, cached_input_tokens, reasoning_tokens, cost, latency_ms, first_byte_ms,
                attempts, stream)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        )?;
        for r in batch {
            let (provider, upstream_model) = r.backend();
            statement.execute(params![
                r.time_ms as i64,
                r.request_id.to_str().unwrap_or("-"),
                r.principal.id,
                r.model(),
                provider,
                upstream_model,
                r.endpoint,
                r.status,
                r.usage.prompt_tokens as i64,
                r.usage.completion_tokens as i64,
                r.usage.cached_tokens as i64,
                r.usage.reasoning_tokens as i64,
                r.cost,
                r.latency_ms,
                r.first_byte_ms,
                r.attempts,
                r.stream,
            ])?;
        }
    }
    tx.commit()
}

/// Delete the records older than the retention.
fn prune(connection: &Connection, retention: Duration) {
    let before = crate::health::now_ms().saturating_sub(retention.as_millis() as u64);
    if let Err(e) = connection.execute("DELETE FROM requests WHERE time_ms < ?1", params![before as i64]) {
        tracing::warn!(error = %e, "pruning old usage records failed");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gateways_opening_a_new_ledger_at_once_all_get_it() {
        // A fresh machine: several processes (check-config, serve) create the default
        // ledger at the same moment; the switch to WAL must wait, not fail.
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("dir");
            let path = dir.path().join("usage.db");
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let path = path.clone();
                    std::thread::spawn(move || super::connect(&path).map(|_| ()).map_err(|e| e.to_string()))
                })
                .collect();
            for t in threads {
                assert_eq!(t.join().expect("thread"), Ok(()));
            }
        }
    }
}
