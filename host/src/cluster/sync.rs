//! The sync loop: every `sync_interval_ms`, one pipelined round trip that announces
//! this replica, publishes what changed here, and reads what the fleet holds —
//! replicas, circuits and cooling, strategy scores, plugin versions — then applies
//! it. It is also Redis's probe: while Redis is down, this loop is the only thing
//! that tries it.
//!
//! Health: a backend whose circuit or cooling changed here is published with the
//! time of the change; a replica takes a published state newer than the one it
//! knows. Scores: each replica adds its own changes since the last tick to one
//! shared value per backend (`HINCRBYFLOAT`), then takes the sum, so every
//! replica's observations count everywhere, as if one node had seen all traffic.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use redis::pipe;

use super::Cluster;
use super::link::Op;
use crate::gateway::Gateway;
use crate::health::{SharedHealth, now_ms};

/// What this replica last published or took, per backend ("provider/model").
#[derive(Default)]
pub struct Memory {
    /// Every backend's health and its field name ("provider/model"), refreshed only
    /// when the registry grew (it never shrinks): a tick allocates no names.
    backends: Vec<(std::sync::Arc<crate::health::BackendHealth>, String)>,
    /// The shared state and the time it changed.
    health: HashMap<String, (SharedHealth, u64)>,
    /// The fleet's score as last taken: local changes are counted from it.
    scores: HashMap<String, f64>,
}

/// Join the fleet: one sync (plugin versions applied before this returns, so a
/// replica that starts late serves the fleet's plugins from its first request),
/// then the loop in the background.
pub async fn join(cluster: &Arc<Cluster>, gateway: &Arc<Gateway>) {
    let mut memory = Memory::default();
    match tick(cluster, gateway, &mut memory).await {
        Ok(applying) => {
            for task in applying {
                let _ = task.await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read the fleet's state at start; serving with local state"),
    }
    let cluster = cluster.clone();
    let gateway = Arc::downgrade(gateway);
    tokio::spawn(run(cluster, gateway, memory));
}

async fn run(cluster: Arc<Cluster>, gateway: Weak<Gateway>, mut memory: Memory) {
    let mut interval = tokio::time::interval(cluster.settings.sync_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(gateway) = gateway.upgrade() else { return };
        // Failures are the link's to count and log; the next tick tries again.
        let _ = tick(&cluster, &gateway, &mut memory).await;
    }
}

type Answer =
    (Vec<String>, HashMap<String, String>, HashMap<String, String>, HashMap<String, String>, HashMap<String, String>);

/// One sync; returns the plugin swaps it started.
async fn tick(
    cluster: &Arc<Cluster>,
    gateway: &Arc<Gateway>,
    memory: &mut Memory,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    // Scores shared below include every outcome so far.
    gateway.snapshot().deliver_outcomes();
    let now = now_ms();
    let me = cluster.settings.replica_name.as_str();
    if memory.backends.len() != gateway.health.count() {
        memory.backends =
            gateway.health.all().into_iter().map(|b| (b.clone(), format!("{}/{}", b.provider, b.model))).collect();
    }
    // Taken out for the tick (the loops below also update `memory`), put back at its end.
    let walked = std::mem::take(&mut memory.backends);
    let (replicas_key, health_key) = (cluster.key("replicas"), cluster.key("health"));
    let (scores_key, scores_at_key) = (cluster.key("scores"), cluster.key("scores_at"));
    // A replica that has not announced itself for five intervals (3 s at least) is gone.
    let alive_ms = (cluster.settings.sync_interval.as_millis() as u64 * 5).max(3_000);

    let mut p = pipe();
    p.zadd(&replicas_key, me, now)
        .ignore()
        .zrembyscore(&replicas_key, "-inf", now.saturating_sub(alive_ms))
        .ignore()
        .zrangebyscore(&replicas_key, now.saturating_sub(alive_ms), "+inf");

    // Health changed here since the last tick.
    for (backend, field) in &walked {
        let current = backend.shared();
        let changed = match memory.health.get_mut(field) {
            None => current != SharedHealth::default(),
            Some((known, _)) if current.only_time_passed(known) => {
                *known = current;
                false
            }
            Some((known, _)) => current != *known,
        };
        if changed {
            p.hset(&health_key, field, format!("{}|{now}|{me}", current.encode())).ignore();
            memory.health.insert(field.clone(), (current, now));
        }
    }
    p.hgetall(&health_key);

    // Scores moved here since the last tick: add the change to the fleet's value
    // (set first from ours when the fleet has none: a new backend, or Redis restarted empty).
    let mut sent: HashMap<usize, f64> = HashMap::new();
    for (i, (backend, field)) in walked.iter().enumerate() {
        let Some((score, at)) = backend.score() else { continue };
        sent.insert(i, score);
        let base = memory.scores.get(field).copied().unwrap_or(score);
        let delta = score - base;
        if !memory.scores.contains_key(field) || delta.abs() > 1e-12 {
            p.hset_nx(&scores_key, field, base).ignore();
            if delta != 0.0 {
                p.cmd("HINCRBYFLOAT").arg(&scores_key).arg(field).arg(delta).ignore();
            }
            p.hset(&scores_at_key, field, at).ignore();
        }
    }
    p.hgetall(&scores_key).hgetall(&scores_at_key).hgetall(cluster.key("plugins"));

    let (replicas, health, scores, scores_at, plugins): Answer = match cluster.link.query(Op::Sync, &p).await {
        Ok(answer) => answer,
        Err(e) => {
            memory.backends = walked;
            return Err(e);
        }
    };
    cluster.last_sync_ms.store(now_ms(), Ordering::Relaxed);
    let seen = (replicas.len() as u32).max(1);
    cluster.replicas.store(seen, Ordering::Relaxed);
    cluster.metrics.replicas.set(i64::from(seen));

    for (backend, field) in &walked {
        let Some(value) = health.get(field) else { continue };
        // "circuit,opened,cooling|changed_ms|replica"; anything else is skipped.
        let mut parts = value.splitn(3, '|');
        let (Some(state), Some(changed), Some(replica)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let (Some(state), Ok(changed)) = (SharedHealth::decode(state), changed.parse::<u64>()) else { continue };
        let known_at = memory.health.get(field).map_or(0, |(_, at)| *at);
        if replica == me || changed <= known_at {
            continue;
        }
        let before = backend.shared();
        backend.adopt(state);
        let after = backend.shared();
        if before.circuit != after.circuit {
            tracing::info!(
                provider = &*backend.provider,
                model = &*backend.model,
                replica,
                circuit = circuit_name(after.circuit),
                "circuit state taken from the fleet"
            );
        }
        memory.health.insert(field.clone(), (after, changed));
    }

    for (i, (backend, field)) in walked.iter().enumerate() {
        let Some(shared) = scores.get(field).and_then(|v| v.parse::<f64>().ok()).filter(|v| v.is_finite()) else {
            continue;
        };
        let at = scores_at.get(field).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // Observations made here while the round trip was in flight are kept on top.
        let since_sent = match (backend.score(), sent.get(&i)) {
            (Some((now_score, _)), Some(sent)) => now_score - sent,
            _ => 0.0,
        };
        backend.set_score_at(shared + since_sent, at);
        memory.scores.insert(field.clone(), shared);
    }

    memory.backends = walked;
    Ok(cluster.reconcile_plugins(gateway, plugins))
}

fn circuit_name(state: u8) -> &'static str {
    match state {
        0 => "closed",
        1 => "open",
        _ => "half_open",
    }
}
