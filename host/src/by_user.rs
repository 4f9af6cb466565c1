//! Per-user state behind 16 locks picked by a hash of the user id: requests of
//! different users rarely share a lock, and no lock is held across an await.

use std::collections::HashMap;
use std::sync::Mutex;

pub struct ByUser<T> {
    shards: [Mutex<HashMap<String, T>>; 16],
}

impl<T> Default for ByUser<T> {
    fn default() -> Self {
        ByUser { shards: std::array::from_fn(|_| Mutex::new(HashMap::new())) }
    }
}

impl<T: Default> ByUser<T> {
    /// Run `f` on `user`'s state (created empty on first use) under its shard's lock.
    pub fn with<R>(&self, user: &str, f: impl FnOnce(&mut T) -> R) -> R {
        let shard = &self.shards[(crate::fnv::hash(user.as_bytes()) % 16) as usize];
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = map.get_mut(user) {
            return f(state);
        }
        f(map.entry(user.to_string()).or_default())
    }
}
