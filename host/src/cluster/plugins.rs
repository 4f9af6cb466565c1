//! Plugin swaps across the fleet.
//!
//! `PUT /admin/plugins/X` on any replica swaps X there (prepared and tried first, as
//! always), then publishes it: the component's bytes under their SHA-256, and the
//! entry `X → "{published_ms}:{sha256}"` (`"{published_ms}:"` for a revert to the
//! configured plugin). Every other replica sees the entry at its next sync, fetches
//! the bytes, checks their SHA-256, prepares and tries the component itself and swaps
//! it in — or keeps its running version and says why (`/admin/plugins` → `fleet`).
//! The newest publication wins. An upload made while Redis is down serves here at
//! once and is published when Redis answers again (unless a newer one was); a Redis
//! restarted empty gets back the versions the replicas serve.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::pipe;
use serde_json::{Value, json};

use super::Cluster;
use super::link::Op;
use crate::gateway::Gateway;
use crate::health::now_ms;
use crate::plugin::sha256_hex;

/// Plugin transfers move megabytes: they get more time than `timeout_ms`. They are
/// never on a request's path.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Fleet {
    entries: Mutex<BTreeMap<String, Entry>>,
    /// Plugins whose fleet entry is unreadable, already logged (once per damage).
    unreadable: Mutex<BTreeSet<String>>,
}

/// The newest publication of one plugin this replica knows, and what it did with it.
#[derive(Clone)]
struct Entry {
    published_ms: u64,
    /// Empty: reverted to the configured plugin.
    sha256: String,
    state: State,
}

#[derive(Clone)]
enum State {
    Preparing,
    InService,
    Rejected(String),
    /// Uploaded here while Redis was down: published when it answers.
    Unpublished,
}

/// Whether an upload reached the fleet (the admin API's answer says which).
pub enum Published {
    Fleet,
    Pending(String),
}

impl Cluster {
    /// Publish a version this replica just put in service (`bytes`), or a revert to
    /// the configured plugin (`None`).
    pub async fn publish_plugin(&self, name: &str, bytes: Option<&[u8]>) -> Published {
        let published_ms = now_ms();
        let sha256 = bytes.map(sha256_hex).unwrap_or_default();
        let entry = Entry { published_ms, sha256: sha256.clone(), state: State::InService };
        lock(&self.fleet.entries).insert(name.to_string(), entry);
        match self.write_plugin(name, published_ms, &sha256, bytes).await {
            Ok(()) => {
                tracing::info!(plugin = name, sha256, "plugin version published to the fleet");
                Published::Fleet
            }
            Err(e) => {
                self.set_state(name, published_ms, State::Unpublished);
                tracing::warn!(plugin = name, error = %e, "plugin version serves here; the fleet gets it when Redis answers");
                Published::Pending(e)
            }
        }
    }

    async fn write_plugin(
        &self,
        name: &str,
        published_ms: u64,
        sha256: &str,
        bytes: Option<&[u8]>,
    ) -> Result<(), String> {
        let mut p = pipe();
        p.atomic();
        if let Some(bytes) = bytes {
            p.set(self.key(&format!("plugin:{name}:{sha256}")), bytes).ignore();
        }
        p.hset(self.key("plugins"), name, format!("{published_ms}:{sha256}")).ignore();
        self.link.query_for::<()>(Op::Plugin, &p, TRANSFER_TIMEOUT).await
    }

    /// Act on the fleet's plugin entries read by a sync; returns the swaps started.
    pub(super) fn reconcile_plugins(
        self: &Arc<Self>,
        gateway: &Arc<Gateway>,
        fleet: HashMap<String, String>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        let mut entries = lock(&self.fleet.entries);
        for (name, value) in &fleet {
            let Some((published_ms, sha256)) = parse(value) else {
                if lock(&self.fleet.unreadable).insert(name.clone()) {
                    tracing::warn!(plugin = %name, "the fleet's plugin entry is not \"ms:sha256\"; ignored");
                }
                continue;
            };
            lock(&self.fleet.unreadable).remove(name);
            if entries.get(name).is_some_and(|e| e.published_ms >= published_ms || matches!(e.state, State::Preparing))
            {
                continue;
            }
            let entry = Entry { published_ms, sha256: sha256.to_string(), state: State::Preparing };
            entries.insert(name.clone(), entry);
            let (cluster, gateway, name, sha256) = (self.clone(), gateway.clone(), name.clone(), sha256.to_string());
            tasks.push(tokio::spawn(async move { cluster.apply(&gateway, &name, published_ms, &sha256).await }));
        }
        // Ours and newer than the fleet's (uploaded while Redis was down), or missing
        // from it (Redis restarted empty): publish again.
        for (name, entry) in entries.iter() {
            let fleet_ms = fleet.get(name).and_then(|v| parse(v)).map_or(0, |(ms, _)| ms);
            let ours = matches!(entry.state, State::Unpublished | State::InService);
            if !ours || entry.published_ms <= fleet_ms {
                continue;
            }
            let bytes = if entry.sha256.is_empty() { None } else { gateway.uploaded_bytes(name) };
            if !entry.sha256.is_empty() && bytes.as_deref().is_none_or(|b| sha256_hex(b) != entry.sha256) {
                continue; // no longer what serves here
            }
            let (cluster, name, entry) = (self.clone(), name.clone(), entry.clone());
            tasks.push(tokio::spawn(async move {
                if cluster.write_plugin(&name, entry.published_ms, &entry.sha256, bytes.as_deref()).await.is_ok() {
                    cluster.set_state(&name, entry.published_ms, State::InService);
                    tracing::info!(plugin = %name, "plugin version published to the fleet again");
                }
            }));
        }
        tasks
    }

    /// Fetch, verify, prepare, try and swap in one published version.
    async fn apply(&self, gateway: &Arc<Gateway>, name: &str, published_ms: u64, sha256: &str) {
        let result = async {
            if sha256.is_empty() {
                return gateway.revert_plugin(name).await.map(|_| ());
            }
            let mut p = pipe();
            p.get(self.key(&format!("plugin:{name}:{sha256}")));
            let (bytes,): (Option<Vec<u8>>,) = self.link.query_for(Op::Plugin, &p, TRANSFER_TIMEOUT).await?;
            let bytes = bytes.ok_or("its bytes are no longer in Redis (a newer version replaced them)")?;
            if sha256_hex(&bytes) != sha256 {
                return Err("its bytes in Redis do not have the published SHA-256".to_string());
            }
            gateway.swap_plugin(name, bytes).await
        }
        .await;
        match result {
            Ok(()) => {
                tracing::info!(plugin = name, sha256, "the fleet's plugin version is in service");
                self.set_state(name, published_ms, State::InService);
            }
            Err(e) => {
                tracing::warn!(plugin = name, sha256, error = %e, "the fleet's plugin version was rejected here; the running version keeps serving");
                self.set_state(name, published_ms, State::Rejected(e));
            }
        }
    }

    fn set_state(&self, name: &str, published_ms: u64, state: State) {
        if let Some(entry) = lock(&self.fleet.entries).get_mut(name).filter(|e| e.published_ms == published_ms) {
            entry.state = state;
        }
    }

    /// The fleet's plugin versions and what this replica did with each (`/admin/plugins`).
    pub fn plugins_report(&self) -> Value {
        let entries = lock(&self.fleet.entries);
        let list: Vec<Value> = entries
            .iter()
            .map(|(name, e)| {
                let (here, reason) = match &e.state {
                    State::Preparing => ("preparing", None),
                    State::InService => ("in_service", None),
                    State::Rejected(why) => ("rejected", Some(why.clone())),
                    State::Unpublished => ("in_service_not_yet_published", None),
                };
                json!({
                    "name": name,
                    "fleet_sha256": (!e.sha256.is_empty()).then_some(&e.sha256),
                    "fleet_version": if e.sha256.is_empty() { "configured" } else { "uploaded" },
                    "published_ms": e.published_ms,
                    "this_replica": here,
                    "reason": reason,
                })
            })
            .collect();
        json!(list)
    }
}

fn parse(value: &str) -> Option<(u64, &str)> {
    let (ms, sha) = value.split_once(':')?;
    let ok = sha.is_empty() || (sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()));
    Some((ms.parse().ok()?, sha)).filter(|_| ok)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn fleet_entries_are_a_time_and_a_sha256_or_nothing() {
        let sha = "a".repeat(64);
        assert_eq!(parse(&format!("1700000000000:{sha}")), Some((1_700_000_000_000, sha.as_str())));
        assert_eq!(parse("1700000000000:"), Some((1_700_000_000_000, "")), "a revert");
        assert_eq!(parse("garbage"), None);
        assert_eq!(parse("12:abc"), None, "not a SHA-256");
        assert_eq!(parse(&format!("x:{sha}")), None);
    }
}
