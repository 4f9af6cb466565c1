//! Reading a request body: only after the caller is authenticated (and its rate
//! limit charged), bounded in size (413), in time (408) and, all requests together,
//! in memory: every buffered byte holds a share of the [`BodyBudget`] until the
//! request is over. The budget is taken as bytes arrive, never from a declared
//! `Content-Length` (headers alone cost nothing to send), and no single user may
//! hold more than `max_buffered_body_bytes_per_user` of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::GatewayError;
use crate::plugin::auth::wit::Principal;

/// The bytes of request bodies buffered at once: in all, and per user.
pub struct BodyBudget {
    total: Arc<Semaphore>,
    total_bytes: usize,
    per_user: usize,
    /// Bytes each user holds now, sharded so users do not share one lock. User ids
    /// come from the configuration (or an auth policy), not from callers: FNV.
    users: [Mutex<HashMap<Box<str>, usize, crate::fnv::BuildFnv>>; SHARDS],
}

const SHARDS: usize = 16;
/// Users remembered per shard with nothing in flight, so a user's next request
/// finds its entry without allocating; beyond it, idle entries are dropped.
const KEEP_IDLE: usize = 1024;

impl BodyBudget {
    pub fn new(total: usize, per_user: usize) -> Arc<Self> {
        let total = total.min(Semaphore::MAX_PERMITS);
        Arc::new(BodyBudget {
            total: Arc::new(Semaphore::new(total)),
            total_bytes: total,
            per_user,
            users: Default::default(),
        })
    }

    /// Whether this budget has the given sizes (a reload keeps it if so, with the
    /// bodies in flight still counted).
    pub fn sized(&self, total: usize, per_user: usize) -> bool {
        self.total_bytes == total.min(Semaphore::MAX_PERMITS) && self.per_user == per_user
    }

    fn shard(&self, user: &str) -> &Mutex<HashMap<Box<str>, usize, crate::fnv::BuildFnv>> {
        &self.users[crate::fnv::hash(user.as_bytes()) as usize % SHARDS]
    }

    /// Take `bytes` more for `held` (one request of `user`).
    fn take(&self, user: &str, held: &mut Held, bytes: usize) -> Result<(), GatewayError> {
        {
            let mut users = lock(self.shard(user));
            let mine = match users.get_mut(user) {
                Some(n) => n,
                None => users.entry(user.into()).or_default(),
            };
            if *mine + bytes > self.per_user {
                return Err(GatewayError::user_upload_budget(self.per_user));
            }
            *mine += bytes;
        }
        let permit = u32::try_from(bytes).ok().and_then(|n| self.total.clone().try_acquire_many_owned(n).ok());
        let Some(permit) = permit else {
            // Over the gateway's budget: the user's count goes back as it was.
            self.release(user, bytes);
            return Err(GatewayError::busy());
        };
        held.user_bytes += bytes;
        match &mut held.permit {
            Some(p) => p.merge(permit),
            None => held.permit = Some(permit),
        }
        Ok(())
    }

    fn release(&self, user: &str, bytes: usize) {
        let mut users = lock(self.shard(user));
        if let Some(n) = users.get_mut(user) {
            *n = n.saturating_sub(bytes);
        }
        if users.len() > KEEP_IDLE {
            users.retain(|_, n| *n > 0);
        }
    }
}

/// What one request holds of the budget; given back on drop.
struct Held {
    budget: Arc<BodyBudget>,
    /// Whose bytes these are (`id`); shared with the request, not copied.
    user: Arc<Principal>,
    user_bytes: usize,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.user_bytes > 0 {
            self.budget.release(&self.user.id, self.user_bytes);
        }
    }
}

/// A buffered body and its share of the budget (released on drop).
pub struct Upload {
    pub bytes: Bytes,
    _held: Held,
}

/// Read `body` whole for `user`, taking budget as its bytes arrive. `declared` is
/// its Content-Length, if any (already checked against `limit`): only a hint for
/// the buffer's size.
pub async fn read(
    body: Incoming,
    declared: Option<u64>,
    limit: usize,
    timeout: Duration,
    budget: &Arc<BodyBudget>,
    user: &Arc<Principal>,
) -> Result<Upload, GatewayError> {
    let mut held = Held { budget: budget.clone(), user: user.clone(), user_bytes: 0, permit: None };
    let read = async {
        let mut body = body;
        // One frame (the usual case) is kept as is; more are joined.
        let mut first: Option<Bytes> = None;
        let mut joined: Option<BytesMut> = None;
        let mut total = 0usize;
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|_| GatewayError::bad_request("body_read_error", "Could not read the request body."))?;
            let Ok(data) = frame.into_data() else { continue };
            total += data.len();
            if total > limit {
                return Err(GatewayError::payload_too_large(limit));
            }
            budget.take(&user.id, &mut held, data.len())?;
            match (&mut first, &mut joined) {
                (None, None) => first = Some(data),
                (Some(f), None) => {
                    // Sized for the declared length, but never beyond what has
                    // arrived by more than one frame's worth of trust.
                    let hint = declared.map_or(0, |n| n as usize).min(limit).min(4 * total.max(f.len() + data.len()));
                    let mut j = BytesMut::with_capacity(hint.max(f.len() + data.len()));
                    j.extend_from_slice(f);
                    j.extend_from_slice(&data);
                    first = None;
                    joined = Some(j);
                }
                (_, Some(j)) => j.extend_from_slice(&data),
            }
        }
        Ok(joined.map(BytesMut::freeze).or(first).unwrap_or_default())
    };
    // A small body usually arrives with the headers: read it without arming a timer,
    // and only a body still on its way gets the deadline.
    let bytes = {
        let mut read = std::pin::pin!(read);
        let first = std::future::poll_fn(|cx| std::task::Poll::Ready(read.as_mut().poll(cx))).await;
        match first {
            std::task::Poll::Ready(result) => result?,
            std::task::Poll::Pending => {
                tokio::time::timeout(timeout, read).await.map_err(|_| GatewayError::timeout_reading_body())??
            }
        }
    };
    Ok(Upload { bytes, _held: held })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(budget: &Arc<BodyBudget>, user: &str) -> Held {
        let principal = Principal {
            id: user.into(),
            allowed_models: Vec::new(),
            tags: Vec::new(),
            limits: crate::plugin::auth::wit::RateLimits { per_minute: None, per_hour: None, per_day: None },
            admin: false,
        };
        Held { budget: budget.clone(), user: Arc::new(principal), user_bytes: 0, permit: None }
    }

    #[test]
    fn one_user_holds_at_most_its_share_and_everyone_the_total() {
        let budget = BodyBudget::new(100, 40);
        let (mut a1, mut a2, mut b, mut c) =
            (held(&budget, "a"), held(&budget, "a"), held(&budget, "b"), held(&budget, "c"));
        budget.take("a", &mut a1, 30).expect("within a's share");
        assert_eq!(budget.take("a", &mut a2, 20).map_err(|e| e.code), Err("too_many_uploads"));
        budget.take("a", &mut a2, 10).expect("a's share, exactly");
        budget.take("b", &mut b, 40).expect("b's share");
        assert_eq!(budget.take("c", &mut c, 30).map_err(|e| e.code), Err("server_busy"), "over the total");
        drop(a1);
        budget.take("c", &mut c, 30).expect("a's bytes came back");
        budget.take("a", &mut a2, 20).expect("and a's share with them");
        drop((a2, b, c));
        assert_eq!(budget.total.available_permits(), 100);
        assert!(budget.users.iter().all(|s| lock(s).values().all(|n| *n == 0)));
    }
}
