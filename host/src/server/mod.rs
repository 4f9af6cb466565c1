//! The HTTP front door: accept loop, per-connection hyper service, graceful drain.

mod admin;
pub mod auth;
pub mod body;
mod chat;
pub mod conn;
pub mod connections;
pub mod context;
mod info;
mod plugins;
mod router;
mod scrape;
mod status;
pub mod upload;
mod usage;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

use self::connections::{Connections, Refusal};

use crate::gateway::Gateway;

/// The request id header, as a constant name (a custom name given as text would be
/// parsed and allocated on every use).
pub const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// How a server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every in-flight request and stream finished within the drain timeout.
    Drained,
    /// The drain timeout passed: remaining streams were ended with an SSE error event.
    DrainTimeout,
    /// A second stop signal during the drain: no more waiting.
    Forced,
}

/// A running server, for callers (tests, `main`) that stop it themselves.
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Stopped>,
}

impl Server {
    /// Bind `addr` and serve `gateway` until [`Server::shutdown`].
    pub async fn start(gateway: Arc<Gateway>, addr: &str) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(serve(listener, gateway, shutdown, std::future::pending()));
        Ok(Server { addr, stop: Some(stop), task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting, drain in-flight requests (bounded by the drain timeout), return.
    pub async fn shutdown(mut self) -> Stopped {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap_or(Stopped::Forced)
    }
}

/// Serve until `shutdown` resolves, then stop accepting and let in-flight requests
/// and streams finish, for at most `settings.drain_timeout_seconds`; streams still
/// open then get an SSE error event and end. `force` (a second signal) ends the
/// drain at once.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
    force: impl Future<Output = ()>,
) -> Stopped {
    // Every connection task, so a shutdown can wait for them to finish.
    let tasks = TaskTracker::new();
    // Read once: the caps on open connections are properties of the listener.
    let (max_connections, per_ip) = {
        let settings = &gateway.snapshot().config.settings;
        (settings.max_connections, settings.max_connections_per_ip)
    };
    let registry = Connections::new(max_connections, per_ip);
    let mut last_full_warning: Option<std::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Usually EMFILE: back off briefly instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let lease = match registry.admit(peer.ip()) {
                    Ok(lease) => lease,
                    Err(refusal) => {
                        // Closing at once frees the descriptor; the client may retry.
                        gateway.metrics.connections_rejected.inc();
                        if last_full_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                            last_full_warning = Some(std::time::Instant::now());
                            match refusal {
                                Refusal::Full => tracing::warn!(
                                    max_connections,
                                    "connection limit reached with no idle connection to close: closing new connections"
                                ),
                                Refusal::PerIp => tracing::warn!(
                                    client = %peer.ip(),
                                    max_connections_per_ip = per_ip,
                                    "per-address connection limit reached: closing this address's new connections"
                                ),
                            }
                        }
                        continue;
                    }
                };
                if lease.made_room {
                    gateway.metrics.connections_evicted.inc();
                }
                let _ = stream.set_nodelay(true);
                let gw = gateway.clone();
                tasks.spawn(async move {
                    let open = OpenConnection::new(&gw.metrics);
                    conn::serve(stream, peer, gw.clone(), lease.connection.clone()).await;
                    drop((open, lease));
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    registry.close_all();
    let drain = gateway.snapshot().config.settings.drain_timeout;
    tracing::info!("shutting down: draining in-flight requests (up to {}s)", drain.as_secs_f64());
    tasks.close();
    let drained = tasks.wait();
    tokio::pin!(drained, force);
    tokio::select! {
        () = &mut drained => {
            tracing::info!("all connections drained");
            return Stopped::Drained;
        }
        () = tokio::time::sleep(drain) => {}
        () = &mut force => {
            tracing::warn!("second stop signal: exiting without waiting for the drain");
            return Stopped::Forced;
        }
    }
    // Streams still open are told why they end (an SSE error event), then given a
    // moment for that event to reach their clients.
    tracing::warn!("drain timeout reached: ending the remaining streams");
    gateway.signals.closing.cancel();
    tokio::select! {
        () = drained => {}
        () = tokio::time::sleep(CLOSE_GRACE) => {}
        () = force => return Stopped::Forced,
    }
    Stopped::DrainTimeout
}

/// After the drain timeout, how long closing streams get to send their last event.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Counts an open client connection in `berry_client_connections` while it lives.
struct OpenConnection(prometheus_client::metrics::gauge::Gauge);

impl OpenConnection {
    fn new(metrics: &crate::metrics::Metrics) -> Self {
        metrics.open_connections.inc();
        OpenConnection(metrics.open_connections.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
