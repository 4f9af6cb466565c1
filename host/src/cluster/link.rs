//! The one door to Redis: every operation goes through [`Link::query`], which caps
//! it at `timeout_ms`, times it, counts its failures, and keeps the verdict "Redis is
//! up / down" that the request path reads (one atomic load) before it tries Redis.
//!
//! A refused or broken connection marks Redis down at once, three timeouts in a row
//! likewise: requests then apply the fault policy without waiting on Redis, and only
//! the sync loop keeps trying (one probe per tick) until Redis answers again. So at
//! most the requests already waiting when Redis failed wait `timeout_ms`; none after
//! them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Pipeline};

use super::ClusterMetrics;
use crate::config::{ClusterSettings, OnUnavailable};
use crate::health::now_ms;

pub struct Link {
    manager: ConnectionManager,
    timeout: Duration,
    policy: OnUnavailable,
    up: AtomicBool,
    /// Whether the "down" verdict was ever logged (the first connect is not news).
    ever_up: AtomicBool,
    last_ok_ms: AtomicU64,
    /// f64 bits: moving average of the round trip, in ms; `u64::MAX` before any.
    latency_ms: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Operations in a row that got no answer in time.
    timeouts: AtomicU32,
    bad_answer_logged_ms: AtomicU64,
    metrics: ClusterMetrics,
}

/// Timeouts in a row that declare Redis down.
const TIMEOUTS_FOR_DOWN: u32 = 3;

/// What one operation is, for metrics and logs.
#[derive(Clone, Copy)]
pub enum Op {
    RateLimit,
    Sync,
    Plugin,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::RateLimit => "rate_limit",
            Op::Sync => "sync",
            Op::Plugin => "plugin",
        }
    }
}

impl Link {
    pub fn new(settings: &ClusterSettings, metrics: ClusterMetrics) -> Result<Link, String> {
        let client = redis::Client::open(settings.redis_url.expose())
            .map_err(|_| "cluster.redis_url is not a valid Redis URL".to_string())?;
        // Lazy: Berry starts (and serves, under the fault policy) while Redis is down.
        // Reconnects are the manager's, in the background; each op is capped by us.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout.max(Duration::from_millis(200))))
            .set_response_timeout(None)
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let manager = client
            .get_connection_manager_lazy(config)
            .map_err(|e| format!("cannot set up the Redis connection: {:?}", e.kind()))?;
        Ok(Link {
            manager,
            timeout: settings.timeout,
            policy: settings.on_unavailable,
            up: AtomicBool::new(false),
            ever_up: AtomicBool::new(false),
            last_ok_ms: AtomicU64::new(0),
            latency_ms: AtomicU64::new(u64::MAX),
            last_error: Mutex::new(Some("not connected yet".to_string())),
            timeouts: AtomicU32::new(0),
            bad_answer_logged_ms: AtomicU64::new(0),
            metrics,
        })
    }

    /// Whether the last operation succeeded: the request path tries Redis only then.
    pub fn up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Run `pipe` with the operation cap (`timeout_ms`; bulk plugin transfers get
    /// more, see [`Link::query_for`]).
    pub async fn query<T: FromRedisValue>(&self, op: Op, pipe: &Pipeline) -> Result<T, String> {
        self.query_for(op, pipe, self.timeout).await
    }

    pub async fn query_for<T: FromRedisValue>(&self, op: Op, pipe: &Pipeline, cap: Duration) -> Result<T, String> {
        let mut connection = self.manager.clone();
        let started = Instant::now();
        let (result, fault) = match tokio::time::timeout(cap, pipe.query_async::<T>(&mut connection)).await {
            Ok(Ok(value)) => (Ok(value), None),
            // Kinds and server error codes only: a message could quote what we sent.
            Ok(Err(e)) => (Err(describe(&e)), Some(classify(&e))),
            Err(_) => (Err(format!("no answer within {} ms", cap.as_millis())), Some(Fault::Late)),
        };
        let elapsed = started.elapsed();
        self.metrics.seconds(op.as_str()).observe(elapsed.as_secs_f64());
        match (&result, fault) {
            (Err(e), Some(Fault::BadAnswer)) => self.answered_badly(op, elapsed, e),
            (Err(e), Some(fault)) => self.failed(op, e, fault == Fault::Late),
            _ => self.answered(elapsed),
        }
        result
    }

    fn answered(&self, elapsed: Duration) {
        let sample = elapsed.as_secs_f64() * 1000.0;
        let old = self.latency_ms.load(Ordering::Relaxed);
        let new = if old == u64::MAX { sample } else { f64::from_bits(old) * 0.8 + sample * 0.2 };
        self.latency_ms.store(new.to_bits(), Ordering::Relaxed);
        self.last_ok_ms.store(now_ms(), Ordering::Relaxed);
        self.timeouts.store(0, Ordering::Relaxed);
        if !self.up.swap(true, Ordering::AcqRel) {
            self.metrics.up.set(1);
            *lock(&self.last_error) = None;
            if self.ever_up.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    "Redis answers again: rate limits, health and plugins are shared across the fleet again"
                );
            } else {
                tracing::info!("connected to Redis: rate limits, health and plugins are shared across the fleet");
            }
        }
    }

    /// Redis answered, but with an error or something that is not what Berry wrote
    /// there (a key of another type, a counter that is not a number): the operation
    /// failed (its request takes the fault policy), Redis itself is up.
    fn answered_badly(&self, op: Op, elapsed: Duration, error: &str) {
        self.answered(elapsed);
        self.metrics.errors(op.as_str()).inc();
        *lock(&self.last_error) = Some(error.to_string());
        // Once per 10 s: a damaged key fails every sync until it is repaired.
        let now = now_ms();
        let last = self.bad_answer_logged_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 10_000 && self.bad_answer_logged_ms.swap(now, Ordering::Relaxed) == last {
            tracing::warn!(
                op = op.as_str(),
                error,
                "Redis answered an error or unexpected data; this operation failed"
            );
        }
    }

    fn failed(&self, op: Op, error: &str, timed_out: bool) {
        self.metrics.errors(op.as_str()).inc();
        *lock(&self.last_error) = Some(error.to_string());
        // A refused or broken connection is Redis down at once; a late answer may be
        // one slow moment (this request alone takes the fault policy), so Redis is
        // declared down after a few in a row.
        if timed_out && self.timeouts.fetch_add(1, Ordering::Relaxed) + 1 < TIMEOUTS_FOR_DOWN && self.up() {
            return;
        }
        if self.up.swap(false, Ordering::AcqRel) || !self.ever_up.swap(true, Ordering::Relaxed) {
            self.metrics.up.set(0);
            tracing::warn!(
                error,
                policy = self.policy.as_str(),
                "Redis is unreachable: rate limits now follow on_unavailable = \"{}\" ({}); health and plugin \
                 swaps stay local until it answers",
                self.policy.as_str(),
                match self.policy {
                    OnUnavailable::Local => "each replica counts alone, at its share of every limit",
                    OnUnavailable::Allow => "rate limits are off",
                    OnUnavailable::Deny => "rate-limited users are refused",
                }
            );
        }
    }

    /// For `/health` and `/status`.
    pub fn report(&self) -> serde_json::Value {
        let latency = self.latency_ms.load(Ordering::Relaxed);
        let last_ok = self.last_ok_ms.load(Ordering::Relaxed);
        serde_json::json!({
            "reachable": self.up(),
            "latency_ms": (latency != u64::MAX).then(|| (f64::from_bits(latency) * 1000.0).round() / 1000.0),
            "last_answer_ms": (last_ok > 0).then_some(last_ok),
            "last_error": lock(&self.last_error).clone(),
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// No answer in time.
    Late,
    /// No connection, or it broke.
    Connection,
    /// An answer: an error reply, or data of the wrong shape.
    BadAnswer,
}

/// Server errors that say "not serving now" rather than "not that data".
const UNAVAILABLE_CODES: [&str; 10] = [
    "NOAUTH",
    "WRONGPASS",
    "NOPERM",
    "LOADING",
    "READONLY",
    "MASTERDOWN",
    "BUSY",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "MISCONF",
];

fn classify(e: &redis::RedisError) -> Fault {
    if e.is_timeout() {
        Fault::Late
    } else if e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || server_code(e).is_some_and(|code| UNAVAILABLE_CODES.contains(&code.as_str()))
    {
        Fault::Connection
    } else {
        Fault::BadAnswer
    }
}

/// A Redis error as its kind and, for server errors, its code ("WRONGTYPE", "NOAUTH"):
/// never the text, which may quote keys or values.
fn describe(e: &redis::RedisError) -> String {
    match server_code(e) {
        Some(code) => format!("Redis answered {code}"),
        None if e.is_timeout() => "timed out".to_string(),
        None if e.is_connection_refusal() => "connection refused".to_string(),
        None if e.is_connection_dropped() || e.is_io_error() => "connection lost".to_string(),
        None => format!("Redis fault ({:?})", e.kind()),
    }
}

/// The code of a server error ("WRONGTYPE"), also the first one of a failed pipeline.
fn server_code(e: &redis::RedisError) -> Option<String> {
    if let Some(code) = e.code() {
        return Some(code.to_string());
    }
    let errors = e.clone().into_server_errors()?;
    errors.first().map(|(_, error)| error.code().to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
