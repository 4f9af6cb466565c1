//! Rate limits shared exactly across the fleet, in at most one Redis round trip per
//! request and no scripts (managed Redis that forbids `EVAL` works as well as any).
//!
//! Each window (minute, hour, day) is a fixed window aligned to the clock, one Redis
//! counter whose key names the window's index (a key that outlives its window, or
//! loses its expiry, is never counted again). A replica leases permits from the
//! counter with `INCRBY block` — Redis orders every increment, so the permits handed
//! out across all replicas never exceed the limit, whatever the concurrency — and
//! spends them locally. For small limits the block is one permit: every request asks
//! Redis, and of 200 concurrent requests exactly `limit` pass. For large limits a
//! block is a small share of the limit, so a busy user costs Redis one round trip
//! per block. A window the fleet has exhausted refuses without asking Redis again.
//!
//! One node uses a smooth GCRA instead (`crate::ratelimit`); the fleet's windows can
//! admit a full limit at the end of one window and another at the start of the next.

use std::time::Duration;

use redis::pipe;

use super::Cluster;
use super::link::Op;
use crate::by_user::ByUser;
use crate::config::OnUnavailable;
use crate::error::GatewayError;
use crate::health::now_ms;
use crate::plugin::auth::wit::RateLimits;
use crate::ratelimit::{Decision, RateLimiter};

const WINDOWS: [(&str, u64); 3] = [("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)];

impl Cluster {
    /// Count one request of `user` against `limits` across the fleet; `None` when no
    /// limit is set. Without Redis, `on_unavailable` decides (`deny` is an error).
    pub async fn check_rate(
        &self,
        local: &RateLimiter,
        user: &str,
        limits: &RateLimits,
    ) -> Result<Option<Decision>, GatewayError> {
        let configured = [limits.per_minute, limits.per_hour, limits.per_day];
        if configured.iter().flatten().all(|l| *l == 0) {
            return Ok(None);
        }
        if self.link.up()
            && let Ok(decision) = self.shared(user, configured).await
        {
            return Ok(Some(decision));
        }
        match self.fallback() {
            OnUnavailable::Local => {
                // This replica's share of each limit: together the replicas it last saw
                // admit no more than the limit (at least one request each).
                let n = self.replicas();
                let share = |l: Option<u32>| l.map(|l| (l / n).max(1));
                let scaled = RateLimits {
                    per_minute: share(limits.per_minute),
                    per_hour: share(limits.per_hour),
                    per_day: share(limits.per_day),
                };
                Ok(local.check(user, &scaled))
            }
            OnUnavailable::Allow => Ok(None),
            OnUnavailable::Deny => Err(GatewayError::shared_limits_unavailable()),
        }
    }

    async fn shared(&self, user: &str, configured: [Option<u32>; 3]) -> Result<Decision, String> {
        let now = now_ms();
        let windows: Vec<Window> = WINDOWS
            .iter()
            .zip(configured)
            .enumerate()
            .filter_map(|(slot, ((name, len), limit))| {
                let limit = limit.filter(|l| *l > 0)?;
                let index = now / len;
                Some(Window {
                    slot,
                    name,
                    len: *len,
                    limit,
                    index,
                    left: Duration::from_millis((index + 1) * len - now),
                })
            })
            .collect();
        let leader = match self.leases.take(user, &windows, None) {
            Take::Decided(decision) => return Ok(decision),
            Take::Lease { leader } => leader,
        };
        // Lease permits in every window at once (one round trip): a block for the
        // replica's pool if no other request of this user is leasing one now, else
        // just this request's own permit (so concurrent requests never over-lease).
        let replicas = self.replicas();
        let most = self.settings.lease_max;
        let blocks: Vec<u32> =
            windows.iter().map(|w| if leader { block(w.limit, replicas, most) } else { 1 }).collect();
        // Ends the block lease however this request ends (a client that leaves
        // mid-lease drops this future).
        // (`then`, not `then_some`: a guard built and dropped would end the lease.)
        let _leading = leader.then(|| Leading { leases: &self.leases, user });
        let counts = self.lease(user, &windows, &blocks).await?;
        let granted: Vec<Grant> = windows
            .iter()
            .zip(blocks.iter().zip(&counts))
            .map(|(w, (block, count))| {
                // The permits of this block within the limit: the fleet's count before
                // it was `count - block`.
                let before = count.saturating_sub(u64::from(*block));
                let permits = u64::from(w.limit).saturating_sub(before).min(u64::from(*block)) as u32;
                Grant { permits, count: *count }
            })
            .collect();
        match self.leases.take(user, &windows, Some(&granted)) {
            Take::Decided(decision) => Ok(decision),
            // Not reached: with `granted`, every window either has a permit or refuses.
            Take::Lease { .. } => {
                Ok(Decision { allowed: false, limit: windows[0].limit, remaining: 0, reset: windows[0].left })
            }
        }
    }

    /// `INCRBY` every window's counter by its block; the counts after.
    async fn lease(&self, user: &str, windows: &[Window], blocks: &[u32]) -> Result<Vec<u64>, String> {
        let mut p = pipe();
        let keys: Vec<String> =
            windows.iter().map(|w| self.key(&format!("rl:{}:{}:{user}", w.name, w.index))).collect();
        for (key, block) in keys.iter().zip(blocks) {
            p.incr(key, *block);
        }
        let counts: Vec<u64> = self.link.query(Op::RateLimit, &p).await?;
        if counts.len() != windows.len() {
            return Err("Redis answered an unexpected shape".to_string());
        }
        // The increment that created a counter gives it its expiry, off the request
        // path: one command per request on the path, one more per key and window.
        // (Should that second command fail, the key stays without an expiry; its name
        // is never counted again, so it only takes a few bytes.)
        let mut expire = pipe();
        let mut created = false;
        for ((key, w), (block, count)) in keys.iter().zip(windows).zip(blocks.iter().zip(&counts)) {
            if *count == u64::from(*block) {
                expire.pexpire(key, (2 * w.len) as i64).ignore();
                created = true;
            }
        }
        if created {
            let link = self.link.clone();
            tokio::spawn(async move { link.query::<()>(Op::RateLimit, &expire).await });
        }
        Ok(counts)
    }
}

/// Permits a replica leases at a time: one while the limit is small (every request
/// asks Redis, and the count is exact to the request); for large limits a block of
/// at most 1/16 of the limit per replica and at most `most` (`cluster.lease_max`),
/// so a busy user costs Redis a round trip per block instead of per request.
/// Admitted requests never exceed the limit; the permits a replica leased but did
/// not use by the window's end go unused (at most 1/16 of the limit).
fn block(limit: u32, replicas: u32, most: u32) -> u32 {
    (limit / (replicas.max(1) * 16)).clamp(1, most.max(1))
}

struct Window {
    /// Which of minute, hour, day.
    slot: usize,
    name: &'static str,
    len: u64,
    limit: u32,
    index: u64,
    left: Duration,
}

struct Grant {
    permits: u32,
    count: u64,
}

/// The permits this replica holds, per user and window.
#[derive(Default)]
pub(super) struct Leases(ByUser<UserLeases>);

#[derive(Default)]
struct UserLeases {
    windows: [Lease; 3],
    /// A request of this user is leasing a block now.
    leasing: bool,
}

#[derive(Default, Clone, Copy)]
struct Lease {
    /// The window these permits belong to.
    index: u64,
    permits: u32,
    /// The fleet's count when this replica last leased (for `remaining`).
    count: u64,
    /// The fleet reached the limit in this window: refuse without asking Redis.
    exhausted: bool,
}

struct Leading<'a> {
    leases: &'a Leases,
    user: &'a str,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.leases.led(self.user);
    }
}

enum Take {
    Decided(Decision),
    /// No permit here: lease (`leader`: a block for the pool, else one permit).
    Lease {
        leader: bool,
    },
}

impl Leases {
    fn with<T>(&self, user: &str, f: impl FnOnce(&mut UserLeases) -> T) -> T {
        self.0.with(user, f)
    }

    /// The block lease of `user` has ended (answered or failed).
    fn led(&self, user: &str) {
        self.with(user, |leases| leases.leasing = false);
    }

    /// Take one permit in every window, or say a lease is needed. With `granted` (a
    /// lease's answer) its permits are added first, and a window still without one
    /// refuses.
    fn take(&self, user: &str, windows: &[Window], granted: Option<&[Grant]>) -> Take {
        self.with(user, |user| {
            let leases = &mut user.windows;
            for (i, w) in windows.iter().enumerate() {
                let lease = &mut leases[w.slot];
                if lease.index != w.index {
                    *lease = Lease { index: w.index, ..Lease::default() };
                }
                if let Some(g) = granted.and_then(|g| g.get(i)) {
                    lease.permits += g.permits;
                    lease.count = lease.count.max(g.count);
                    lease.exhausted |= g.count >= u64::from(w.limit);
                }
            }
            let empty: Vec<&Window> = windows.iter().filter(|w| leases[w.slot].permits == 0).collect();
            let refusing = empty.iter().filter(|w| leases[w.slot].exhausted || granted.is_some());
            if let Some(w) = refusing.max_by_key(|w| w.left) {
                return Take::Decided(Decision { allowed: false, limit: w.limit, remaining: 0, reset: w.left });
            }
            if !empty.is_empty() {
                let leader = !user.leasing;
                user.leasing = true;
                return Take::Lease { leader };
            }
            let mut report: Option<Decision> = None;
            for w in windows {
                let lease = &mut leases[w.slot];
                lease.permits -= 1;
                let unclaimed = u64::from(w.limit).saturating_sub(lease.count) as u32;
                let d = Decision {
                    allowed: true,
                    limit: w.limit,
                    remaining: unclaimed.saturating_add(lease.permits),
                    reset: w.left,
                };
                report = Some(match report {
                    Some(r) if r.remaining <= d.remaining => r,
                    _ => d,
                });
            }
            match report {
                Some(d) => Take::Decided(d),
                None => Take::Lease { leader: false },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(take: Take) -> Decision {
        match take {
            Take::Decided(d) => d,
            Take::Lease { .. } => panic!("expected a decision"),
        }
    }

    fn minute(limit: u32, index: u64) -> Window {
        Window { slot: 0, name: "m", len: 60_000, limit, index, left: Duration::from_secs(30) }
    }

    #[test]
    fn blocks_are_one_permit_for_small_limits_and_a_sixteenth_share_at_most() {
        assert_eq!(block(20, 3, 256), 1);
        assert_eq!(block(1_000, 2, 256), 31);
        assert_eq!(block(1_000_000_000, 1, 256), 256);
        assert_eq!(block(1_000_000_000, 1, 1), 1, "lease_max = 1: every request asks Redis");
        assert_eq!(block(5, 0, 0), 1);
    }

    #[test]
    fn leased_permits_are_spent_locally_and_an_exhausted_window_refuses_without_redis() {
        let leases = Leases::default();
        let w = [minute(3, 7)];
        assert!(matches!(leases.take("u", &w, None), Take::Lease { leader: true }), "no permit yet: lease a block");
        assert!(matches!(leases.take("u", &w, None), Take::Lease { leader: false }), "one block at a time");
        leases.led("u");
        // Leased 2 of a block of 2 (the fleet's count is now 2 of 3).
        let d = decided(leases.take("u", &w, Some(&[Grant { permits: 2, count: 2 }])));
        assert!(d.allowed);
        assert_eq!(d.remaining, 2, "1 held here + 1 unclaimed in the fleet");
        assert!(decided(leases.take("u", &w, None)).allowed);
        assert!(matches!(leases.take("u", &w, None), Take::Lease { leader: true }), "spent: lease again");
        leases.led("u");
        // The fleet went past the limit: nothing granted, refused, and from now on
        // refused without a lease.
        let refused = decided(leases.take("u", &w, Some(&[Grant { permits: 0, count: 4 }])));
        assert!(!refused.allowed);
        assert_eq!(refused.reset, Duration::from_secs(30));
        assert!(!decided(leases.take("u", &w, None)).allowed);
        // The next window starts over.
        assert!(matches!(leases.take("u", &[minute(3, 8)], None), Take::Lease { .. }));
    }

    #[test]
    fn a_refusing_window_keeps_the_other_windows_permits() {
        let leases = Leases::default();
        let hour = Window { slot: 1, name: "h", len: 3_600_000, limit: 1, index: 1, left: Duration::from_secs(600) };
        let both = [minute(10, 1), hour];
        let granted = [Grant { permits: 1, count: 1 }, Grant { permits: 0, count: 2 }];
        let refused = decided(leases.take("u", &both, Some(&granted)));
        assert!(!refused.allowed);
        assert_eq!(refused.limit, 1, "the hour refused");
        assert!(decided(leases.take("u", &[minute(10, 1)], None)).allowed, "the minute's permit was not spent");
    }
}
