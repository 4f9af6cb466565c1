//! The last hour, kept by the gateway itself: for each model and backend, attempts,
//! failures and a latency histogram per 10-second slot, in a fixed ring (no external
//! service; readable after an incident from `/status/history.json` and the status
//! page's charts).
//!
//! Recording is three relaxed atomic adds into the current slot; the first record of
//! a new slot clears it under the track's lock (once per slot, not per request).
//! Memory is fixed: `SLOTS` slots per (model, backend) pair of the configuration.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed, Ordering::Release};
use std::sync::{Arc, Mutex, RwLock};

/// Length of one slot.
pub const SLOT_MS: u64 = 10_000;
/// Slots kept: one hour.
pub const SLOTS: usize = 360;
/// Latency buckets: upper bounds 0.5 ms · √2^i (to ~23 s); the last one is open.
const BUCKETS: usize = 32;

struct Slot {
    /// `now / SLOT_MS` of the slot's contents.
    epoch: AtomicU64,
    attempts: AtomicU32,
    failures: AtomicU32,
    latency: [AtomicU32; BUCKETS],
}

/// One (model, backend) pair's last hour.
pub struct Track {
    slots: Box<[Slot]>,
    clearing: Mutex<()>,
}

/// What one slot (or several, merged) held.
#[derive(Clone, Default)]
pub struct Counts {
    pub attempts: u32,
    pub failures: u32,
    latency: [u32; BUCKETS],
}

impl Default for Track {
    fn default() -> Self {
        let slots = (0..SLOTS)
            .map(|_| Slot {
                epoch: AtomicU64::new(u64::MAX),
                attempts: AtomicU32::new(0),
                failures: AtomicU32::new(0),
                latency: std::array::from_fn(|_| AtomicU32::new(0)),
            })
            .collect();
        Track { slots, clearing: Mutex::new(()) }
    }
}

impl Track {
    pub fn record(&self, now_ms: u64, latency_ms: f64, failed: bool) {
        let epoch = now_ms / SLOT_MS;
        let slot = &self.slots[(epoch % SLOTS as u64) as usize];
        if slot.epoch.load(std::sync::atomic::Ordering::Acquire) != epoch {
            let _one = self.clearing.lock().unwrap_or_else(|p| p.into_inner());
            if slot.epoch.load(std::sync::atomic::Ordering::Acquire) != epoch {
                slot.attempts.store(0, Relaxed);
                slot.failures.store(0, Relaxed);
                slot.latency.iter().for_each(|b| b.store(0, Relaxed));
                slot.epoch.store(epoch, Release);
            }
        }
        slot.attempts.fetch_add(1, Relaxed);
        if failed {
            slot.failures.fetch_add(1, Relaxed);
        }
        slot.latency[bucket(latency_ms)].fetch_add(1, Relaxed);
    }

    /// The last hour, oldest slot first, ending with the slot holding `now_ms`.
    pub fn counts(&self, now_ms: u64) -> Vec<Counts> {
        let last = now_ms / SLOT_MS;
        (0..SLOTS as u64)
            .map(|back| last + 1 + back - SLOTS as u64)
            .map(|epoch| {
                let slot = &self.slots[(epoch % SLOTS as u64) as usize];
                if slot.epoch.load(std::sync::atomic::Ordering::Acquire) != epoch {
                    return Counts::default();
                }
                Counts {
                    attempts: slot.attempts.load(Relaxed),
                    failures: slot.failures.load(Relaxed),
                    latency: std::array::from_fn(|i| slot.latency[i].load(Relaxed)),
                }
            })
            .collect()
    }
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.attempts += other.attempts;
        self.failures += other.failures;
        self.latency.iter_mut().zip(other.latency).for_each(|(a, b)| *a += b);
    }

    /// The latency at quantile `q` (0..1), in ms: the geometric middle of the bucket
    /// it falls in (within ±19% of the truth); `None` without attempts.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().map(|&n| u64::from(n)).sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &n) in self.latency.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                return Some(upper_ms(i) / std::f64::consts::SQRT_2.sqrt());
            }
        }
        None
    }
}

fn upper_ms(i: usize) -> f64 {
    0.5 * std::f64::consts::SQRT_2.powi(i as i32)
}

fn bucket(latency_ms: f64) -> usize {
    // NaN and anything up to the first bound land in the first bucket.
    if latency_ms.is_nan() || latency_ms <= 0.5 {
        return 0;
    }
    // upper(i) = 0.5·2^(i/2) ≥ latency ⇔ i ≥ 2·log2(latency / 0.5).
    let i = (2.0 * (latency_ms / 0.5).log2()).ceil() as usize;
    i.min(BUCKETS - 1)
}

/// Every track, by model and backend label; kept across reloads, pruned to the
/// configuration's pairs when a snapshot is built.
#[derive(Default)]
pub struct History {
    tracks: RwLock<HashMap<(String, String), Arc<Track>>>,
}

impl History {
    pub fn track(&self, model: &str, backend: &str) -> Arc<Track> {
        let key = (model.to_string(), backend.to_string());
        if let Some(t) = self.tracks.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return t.clone();
        }
        self.tracks.write().unwrap_or_else(|p| p.into_inner()).entry(key).or_default().clone()
    }

    /// Forget the pairs a new configuration no longer has.
    pub fn keep_only(&self, pairs: &std::collections::HashSet<(String, String)>) {
        self.tracks.write().unwrap_or_else(|p| p.into_inner()).retain(|k, _| pairs.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_grow_by_root_two_and_quantiles_land_near_the_truth() {
        assert_eq!(bucket(0.1), 0);
        assert_eq!(bucket(0.5), 0);
        assert_eq!(bucket(0.6), 1);
        assert_eq!(bucket(1.0), 2);
        assert_eq!(bucket(1e9), BUCKETS - 1);
        let track = Track::default();
        let now = 1_000_000_000;
        for i in 1..=100 {
            track.record(now, f64::from(i), i > 98);
        }
        let counts = track.counts(now);
        assert_eq!(counts.len(), SLOTS);
        let last = counts.last().expect("slot");
        assert_eq!((last.attempts, last.failures), (100, 2));
        let p50 = last.quantile_ms(0.5).expect("p50");
        let p99 = last.quantile_ms(0.99).expect("p99");
        assert!((50.0 / 1.2..=50.0 * 1.2).contains(&p50), "{p50}");
        assert!((99.0 / 1.2..=99.0 * 1.2).contains(&p99), "{p99}");
    }

    #[test]
    fn an_hour_later_the_slot_is_reused_and_old_slots_read_empty() {
        let track = Track::default();
        let t0 = 5_000_000;
        track.record(t0, 3.0, false);
        assert_eq!(track.counts(t0 + SLOT_MS).iter().map(|c| c.attempts).sum::<u32>(), 1);
        // One hour on, the same ring position holds a new slot.
        let later = t0 + SLOTS as u64 * SLOT_MS;
        assert_eq!(track.counts(later).iter().map(|c| c.attempts).sum::<u32>(), 0);
        track.record(later, 3.0, true);
        let counts = track.counts(later);
        assert_eq!(counts.iter().map(|c| c.attempts).sum::<u32>(), 1);
        assert_eq!(counts.iter().map(|c| c.failures).sum::<u32>(), 1);
    }
}
