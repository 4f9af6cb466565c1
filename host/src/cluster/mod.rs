//! The fleet: replicas of Berry sharing state through Redis (`[cluster]`).
//!
//! What is shared, and how exactly (the README's "Running more than one" says the same):
//!
//! | state | how | exact? |
//! |---|---|---|
//! | rate limits | permits leased from one Redis counter per window (`INCRBY`, `limits.rs`) | exact: never more than the limit in a window, whatever the replicas and concurrency |
//! | circuits, recovery stages, `Retry-After` cooling | published on change, read every `sync_interval_ms` (`sync.rs`) | within about one sync interval plus one op |
//! | strategy scores (smart_ai confidence) | each replica adds its own changes to one shared value per backend (`sync.rs`) | converge within about one sync interval |
//! | uploaded plugins | bytes and SHA-256 in Redis; each replica verifies, prepares, trials and swaps (`plugins.rs`) | the exact component, within about one sync interval plus its preparation |
//! | budgets and `tokens_per_minute` | reserve → settle on one Redis counter per user and window (`INCRBY`/`INCRBYFLOAT`, `budgets.rs`) | exact as on one node: overshoot only by what reservations underestimate |
//! | round-robin position, latency averages, in-flight counts | not shared | per replica |
//!
//! Redis is never on a request's critical path longer than `timeout_ms`: the link
//! (`link.rs`) marks Redis down at the first failure, and requests then apply
//! `on_unavailable` without trying it until the sync loop sees Redis answer again.

mod budgets;
mod limits;
mod link;
mod plugins;
mod sync;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use serde_json::{Value, json};

pub use plugins::Published;
pub use sync::join;

use crate::config::ClusterSettings;
use crate::metrics::ClusterMetrics;
use link::Link;

pub struct Cluster {
    pub settings: ClusterSettings,
    link: Arc<Link>,
    /// Replicas that announced themselves within the last few sync intervals (≥ 1).
    replicas: AtomicU32,
    last_sync_ms: AtomicU64,
    fleet: plugins::Fleet,
    /// Rate-limit permits this replica leased from the fleet's counters.
    leases: limits::Leases,
    metrics: ClusterMetrics,
}

impl Cluster {
    pub fn new(settings: ClusterSettings, metrics: ClusterMetrics) -> Result<Arc<Cluster>, String> {
        let link = Arc::new(Link::new(&settings, metrics.clone())?);
        metrics.replicas.set(1);
        Ok(Arc::new(Cluster {
            settings,
            link,
            replicas: AtomicU32::new(1),
            last_sync_ms: AtomicU64::new(0),
            fleet: plugins::Fleet::default(),
            leases: limits::Leases::default(),
            metrics,
        }))
    }

    /// Replicas seen in the fleet, this one included.
    pub fn replicas(&self) -> u32 {
        self.replicas.load(Ordering::Relaxed).max(1)
    }

    /// A decision made without Redis: counted, and decided by `on_unavailable`.
    fn fallback(&self) -> crate::config::OnUnavailable {
        let policy = self.settings.on_unavailable;
        self.metrics.fallbacks.get_or_create(&crate::metrics::PolicyLabels { policy: policy.as_str() }).inc();
        policy
    }

    /// A key of this fleet.
    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.settings.key_prefix)
    }

    /// Leave the fleet (a stopping replica): the others count one replica fewer at
    /// once, instead of after the few seconds a silent one takes to expire.
    pub async fn leave(&self) {
        let mut p = redis::pipe();
        p.zrem(self.key("replicas"), &self.settings.replica_name).ignore();
        let _ = self.link.query::<()>(link::Op::Sync, &p).await;
    }

    /// Whether Redis answers a PING (`check-config`).
    pub async fn ping(&self) -> Result<(), String> {
        let mut p = redis::pipe();
        p.cmd("PING");
        self.link.query::<(String,)>(link::Op::Sync, &p).await.map(|_| ())
    }

    /// The cluster as `/health` and `/status` show it.
    pub fn report(&self) -> Value {
        let last_sync = self.last_sync_ms.load(Ordering::Relaxed);
        let up = self.link.up();
        json!({
            "replica": self.settings.replica_name,
            "redis": self.link.report(),
            "replicas_seen": self.replicas(),
            "last_sync_ms": (last_sync > 0).then_some(last_sync),
            "on_unavailable": self.settings.on_unavailable.as_str(),
            // What is in force now instead of shared state, if anything.
            "fallback": (!up).then(|| json!({
                "rate_limits": self.settings.on_unavailable.as_str(),
                "health": "local",
                "plugins": "local",
            })),
        })
    }
}
