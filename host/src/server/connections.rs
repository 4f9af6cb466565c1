//! The open client connections: how many may be open (in all, and per client
//! address), which of them are idle, and which to close to make room.
//!
//! A gateway that closes newcomers at its cap lets one client hold every slot with
//! idle connections. Instead, at the cap the connection idle the longest (no request
//! or HTTP/2 stream in flight) is closed to admit the newcomer, as nginx reuses idle
//! keep-alive connections; only when none is idle is the newcomer closed.
//!
//! The registry is touched twice per connection (accept, close), never per request:
//! a request only moves its connection's own counter.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;

/// Every open connection, keyed by an id of its own.
pub struct Connections {
    max: usize,
    /// 0: no per-address limit.
    max_per_ip: u32,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    open: HashMap<u64, Arc<Connection>>,
    per_ip: HashMap<IpAddr, u32>,
}

/// One open client connection, as its requests and the registry see it.
pub struct Connection {
    id: u64,
    ip: IpAddr,
    /// Requests (HTTP/1) or streams (HTTP/2) in flight.
    busy: AtomicU32,
    /// When `busy` last fell to zero, in ms of [`clock_ms`]; `EVICTED` once chosen
    /// to make room.
    idle_since: AtomicU64,
    /// Set to close the connection gracefully: evicted, stalling, or the gateway
    /// draining.
    pub close: Closer,
    /// HTTP/2 streams of this connection reset because the client took nothing.
    stalls: AtomicU32,
}

const EVICTED: u64 = u64::MAX;

/// Streams reset for stalling after which their connection is closed: a client
/// whose streams keep stalling is not reading.
const MAX_STALLS: u32 = 4;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot is taken by a connection with a request in flight.
    Full,
    /// Its client address holds `max_connections_per_ip` already.
    PerIp,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Full => "full",
            Refusal::PerIp => "per_ip",
        }
    }
}

/// An admitted connection; dropping it frees its slot.
pub struct Lease {
    registry: Arc<Connections>,
    pub connection: Arc<Connection>,
    /// An idle connection was closed to admit this one.
    pub made_room: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        inner.open.remove(&self.connection.id);
        if let Some(n) = inner.per_ip.get_mut(&self.connection.ip) {
            *n -= 1;
            if *n == 0 {
                inner.per_ip.remove(&self.connection.ip);
            }
        }
    }
}

impl Connections {
    pub fn new(max: u32, max_per_ip: u32) -> Arc<Self> {
        Arc::new(Connections { max: max as usize, max_per_ip, inner: Mutex::new(Inner::default()) })
    }

    /// Admit a connection from `ip`, closing the longest-idle one if every slot is
    /// taken.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Lease, Refusal> {
        let mut inner = self.lock();
        if self.max_per_ip > 0 && inner.per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_ip {
            return Err(Refusal::PerIp);
        }
        let made_room = inner.open.len() >= self.max;
        if made_room {
            let victim = inner
                .open
                .values()
                .filter(|c| c.busy.load(Ordering::Relaxed) == 0)
                .filter(|c| c.idle_since.load(Ordering::Relaxed) != EVICTED)
                .min_by_key(|c| c.idle_since.load(Ordering::Relaxed))
                .cloned()
                .ok_or(Refusal::Full)?;
            // Out of the count at once: its socket closes in a moment (it is idle, so
            // a graceful close is immediate), and the newcomer needs its slot now.
            victim.idle_since.store(EVICTED, Ordering::Relaxed);
            inner.open.remove(&victim.id);
            victim.close.close();
        }
        inner.next_id += 1;
        let connection = Arc::new(Connection {
            id: inner.next_id,
            ip,
            busy: AtomicU32::new(0),
            idle_since: AtomicU64::new(clock_ms()),
            close: Closer::default(),
            stalls: AtomicU32::new(0),
        });
        inner.open.insert(connection.id, connection.clone());
        *inner.per_ip.entry(ip).or_default() += 1;
        Ok(Lease { registry: self.clone(), connection, made_room })
    }

    /// Close every open connection gracefully (the gateway is draining).
    pub fn close_all(&self) {
        for connection in self.lock().open.values() {
            connection.close.close();
        }
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.lock().open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Connection {
    /// A request or stream starts; it is done when the returned guard drops.
    pub fn start(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// How long the connection has had nothing in flight (zero while busy).
    pub fn idle_for(&self) -> Duration {
        if self.busy.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        match self.idle_since.load(Ordering::Relaxed) {
            EVICTED => Duration::MAX,
            since => Duration::from_millis(clock_ms().saturating_sub(since)),
        }
    }

    /// An HTTP/2 stream of this connection was reset because the client took
    /// nothing for `client_write_timeout`; a connection whose streams keep stalling
    /// is closed.
    pub fn stalled(&self) {
        if self.stalls.fetch_add(1, Ordering::Relaxed) + 1 >= MAX_STALLS {
            self.close.close();
        }
    }
}

/// A connection's close switch. Its future is polled every time the connection's
/// task wakes (on every read and write), so it costs an atomic load and a waker
/// check, not a lock (as a `CancellationToken` would).
#[derive(Default)]
pub struct Closer {
    closed: AtomicBool,
    waker: AtomicWaker,
}

impl Closer {
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Resolves once [`Closer::close`] has been called.
    pub fn closed(&self) -> Closed<'_> {
        Closed(self)
    }
}

pub struct Closed<'a>(&'a Closer);

impl Future for Closed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.is_closed() {
            return Poll::Ready(());
        }
        self.0.waker.register(cx.waker());
        // Closed between the check and the registration: the wake may have missed us.
        if self.0.is_closed() { Poll::Ready(()) } else { Poll::Pending }
    }
}

/// A request or HTTP/2 stream in flight on a connection.
pub struct Busy(Arc<Connection>);

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.idle_since.store(clock_ms(), Ordering::Relaxed);
        }
    }
}

/// Milliseconds of a monotonic clock (since its first use).
fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn at_the_cap_the_longest_idle_connection_makes_room() {
        let registry = Connections::new(2, 0);
        let first = registry.admit(ip(1)).expect("room");
        std::thread::sleep(Duration::from_millis(5));
        let second = registry.admit(ip(1)).expect("room");
        let busy = second.connection.start();
        let third = registry.admit(ip(2)).expect("the idle one makes room");
        assert!(third.made_room && !second.made_room);
        assert!(first.connection.close.is_closed(), "the idle connection is closed");
        assert!(!second.connection.close.is_closed(), "a busy connection is kept");
        assert_eq!(registry.len(), 2);
        let _fourth_busy = third.connection.start();
        assert_eq!(registry.admit(ip(3)).err(), Some(Refusal::Full), "nothing idle: refused");
        drop(busy);
        let fourth = registry.admit(ip(3)).expect("idle again: it makes room");
        assert!(fourth.made_room && second.connection.close.is_closed());
        drop(first);
        assert_eq!(registry.len(), 2, "a closed victim's lease frees nothing twice");
    }

    #[test]
    fn one_address_holds_at_most_its_share() {
        let registry = Connections::new(100, 2);
        let a = registry.admit(ip(1)).expect("room");
        let _b = registry.admit(ip(1)).expect("room");
        assert_eq!(registry.admit(ip(1)).err(), Some(Refusal::PerIp));
        assert!(registry.admit(ip(2)).is_ok(), "other addresses are not affected");
        drop(a);
        assert!(registry.admit(ip(1)).is_ok(), "a closed connection frees its address's share");
    }

    #[test]
    fn streams_that_keep_stalling_close_their_connection() {
        let registry = Connections::new(10, 0);
        let lease = registry.admit(ip(1)).expect("room");
        for _ in 1..MAX_STALLS {
            lease.connection.stalled();
        }
        assert!(!lease.connection.close.is_closed());
        lease.connection.stalled();
        assert!(lease.connection.close.is_closed());
        let other = registry.admit(ip(2)).expect("room");
        assert!(!other.connection.close.is_closed());
        registry.close_all();
        assert!(other.connection.close.is_closed(), "a drain closes every connection");
    }
}
