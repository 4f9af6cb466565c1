//! Per-user request-rate limits: requests per minute, hour and day, each optional.
//!
//! Each window is a GCRA (generic cell rate algorithm) bucket: a burst of up to the
//! limit from idle, then one request per `period / limit` — the smooth equivalent of
//! a sliding window, in 8 bytes of state per window. State is per user behind its own
//! small lock, found through a sharded map: no lock is shared by all requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::plugin::auth::wit::RateLimits;

const SHARDS: usize = 16;
const WINDOWS: [(&str, Duration); 3] =
    [("minute", Duration::from_secs(60)), ("hour", Duration::from_secs(3600)), ("day", Duration::from_secs(86_400))];

#[derive(Default)]
pub struct RateLimiter {
    shards: [Mutex<HashMap<String, Arc<Mutex<UserState>>>>; SHARDS],
}

/// Theoretical arrival time per window (minute, hour, day).
#[derive(Default)]
struct UserState {
    tat: [Option<Instant>; 3],
}

/// The outcome of a check, with what the `x-ratelimit-*` headers report (for the
/// tightest configured window).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Until the window is full again (allowed) or until the next request may pass (refused).
    pub reset: Duration,
}

impl RateLimiter {
    /// Count one request of `user` against `limits`; `None` when no limit is set.
    pub fn check(&self, user: &str, limits: &RateLimits) -> Option<Decision> {
        let configured = [limits.per_minute, limits.per_hour, limits.per_day];
        if configured.iter().all(Option::is_none) {
            return None;
        }
        let state = {
            let shard = &self.shards[shard_of(user)];
            let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(user.to_string()).or_default().clone()
        };
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Check every window before charging any: a refused request costs nothing.
        let mut report: Option<Decision> = None;
        let mut refused: Option<Duration> = None;
        let mut next = state.tat;
        for (w, limit) in configured.iter().enumerate() {
            let Some(limit) = limit.filter(|l| *l > 0) else { continue };
            let interval = WINDOWS[w].1 / limit;
            let tolerance = WINDOWS[w].1.saturating_sub(interval);
            let tat = state.tat[w].map_or(now, |t| t.max(now));
            let ahead = tat - now;
            if ahead > tolerance {
                let wait = ahead - tolerance;
                refused = Some(refused.map_or(wait, |r| r.max(wait)));
                let d = Decision { allowed: false, limit, remaining: 0, reset: wait };
                report = Some(report.map_or(d.clone(), |r| if r.allowed || r.reset < wait { d } else { r }));
                continue;
            }
            next[w] = Some(tat + interval);
            let used = ((tat + interval - now).as_secs_f64() / interval.as_secs_f64()).ceil() as u32;
            let d =
                Decision { allowed: true, limit, remaining: limit.saturating_sub(used), reset: tat + interval - now };
            report = Some(match report {
                Some(r) if !r.allowed || r.remaining <= d.remaining => r,
                _ => d,
            });
        }
        if refused.is_none() {
            state.tat = next;
        }
        report
    }
}

fn shard_of(user: &str) -> usize {
    // FNV-1a: cheap, and users are ids from config, not attacker-chosen keys.
    let hash = crate::fnv::hash(user.as_bytes());
    (hash % SHARDS as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_minute(n: u32) -> RateLimits {
        RateLimits { per_minute: Some(n), per_hour: None, per_day: None }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_gets_exactly_the_limit_then_refills_smoothly() {
        let limiter = RateLimiter::default();
        let limits = per_minute(5);
        for i in 0..5 {
            let d = limiter.check("u", &limits).expect("limited");
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 4 - i);
        }
        let refused = limiter.check("u", &limits).expect("limited");
        assert!(!refused.allowed);
        assert_eq!(refused.reset, Duration::from_secs(12), "one request per 12 s after the burst");
        tokio::time::advance(Duration::from_secs(12)).await;
        assert!(limiter.check("u", &limits).expect("limited").allowed);
        assert!(!limiter.check("u", &limits).expect("limited").allowed);
        // Users do not share buckets.
        assert!(limiter.check("other", &limits).expect("limited").allowed);
        assert_eq!(limiter.check("x", &RateLimits { per_minute: None, per_hour: None, per_day: None }), None);
    }

    #[tokio::test(start_paused = true)]
    async fn every_window_must_allow_and_a_refusal_costs_nothing() {
        let limiter = RateLimiter::default();
        let limits = RateLimits { per_minute: Some(10), per_hour: Some(3), per_day: None };
        for _ in 0..3 {
            assert!(limiter.check("u", &limits).expect("limited").allowed);
        }
        let refused = limiter.check("u", &limits).expect("limited");
        assert!(!refused.allowed);
        assert_eq!(refused.limit, 3, "the hour window refused");
        assert_eq!(refused.reset, Duration::from_secs(1200));
        tokio::time::advance(Duration::from_secs(1200)).await;
        assert!(limiter.check("u", &limits).expect("limited").allowed);
    }
}
