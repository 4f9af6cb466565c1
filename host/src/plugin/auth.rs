//! An auth plugin bound to one config snapshot: the users are configured into every
//! instance when the instance is made.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::auth::{AuthPlugin as Current, AuthPluginPre as CurrentPre};
use super::bindings::v0_1::auth::{AuthPlugin as Old, AuthPluginPre as OldPre};
use super::engine::{CompiledPlugin, PluginEngine};
use super::loaded::{Kind, Loaded};
use super::pool::CallStats;
use super::sandbox::HostState;
use super::{Limits, PluginError};

/// The WIT types auth policies exchange with the host.
pub mod wit {
    pub use crate::plugin::bindings::auth::exports::berry::gateway::auth::{
        AuthRequest, Denial, Principal, RateLimits, UserInfo,
    };
}

/// One loaded policy, whichever contract it was built for (a 0.1 policy answers
/// through the adapter in `v0_1.rs`).
pub enum Bindings {
    Current(Current),
    V0_1(Old),
}

pub enum Pre {
    Current(CurrentPre<HostState>),
    V0_1(OldPre<HostState>),
}

impl Bindings {
    pub fn authorize(
        &self,
        store: &mut Store<HostState>,
        request: &wit::AuthRequest,
    ) -> wasmtime::Result<Result<wit::Principal, wit::Denial>> {
        match self {
            Bindings::Current(b) => b.berry_gateway_auth().call_authorize(store, request),
            Bindings::V0_1(b) => super::v0_1::authorize(b, store, request),
        }
    }
}

pub struct AuthKind;

impl Kind for AuthKind {
    type Bindings = Bindings;
    type Pre = Pre;
    type Data = Vec<wit::UserInfo>;
    /// The request headers the policy reads.
    type Answer = Vec<String>;
    const NAME: &'static str = "auth";

    fn input_bytes(users: &Self::Data) -> usize {
        let strings = |v: &[String]| v.iter().map(|s| 16 + s.len()).sum::<usize>();
        users
            .iter()
            .map(|u| {
                96 + u.id.len()
                    + u.name.len()
                    + u.token.len()
                    + u.token_sha256.len()
                    + strings(&u.allowed_models)
                    + strings(&u.tags)
            })
            .sum()
    }

    fn base_linker(pe: &PluginEngine) -> &wasmtime::component::Linker<HostState> {
        &pe.auth_linker
    }
    fn pre(instance_pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        match CurrentPre::new(instance_pre.clone()) {
            Ok(pre) => Ok(Pre::Current(pre)),
            Err(current) => OldPre::new(instance_pre).map(Pre::V0_1).map_err(|_| current),
        }
    }
    fn contract(pre: &Self::Pre) -> &'static str {
        match pre {
            Pre::Current(_) => super::version::WIT_VERSION,
            Pre::V0_1(_) => "0.1.0",
        }
    }
    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Bindings> {
        match pre {
            Pre::Current(pre) => pre.instantiate(store).map(Bindings::Current),
            Pre::V0_1(pre) => pre.instantiate(store).map(Bindings::V0_1),
        }
    }
    fn configure(
        b: &Bindings,
        store: &mut Store<HostState>,
        config: &str,
        users: &Self::Data,
    ) -> wasmtime::Result<Result<Vec<String>, String>> {
        match b {
            Bindings::Current(b) => b.berry_gateway_auth().call_configure(store, config, users),
            Bindings::V0_1(b) => super::v0_1::configure_auth(b, store, config, users),
        }
    }
}

pub struct AuthPlugin {
    loaded: Loaded<AuthKind>,
    cache: PrincipalCache,
}

/// Principals the policy admitted, by credentials, for this snapshot only (a config
/// reload or a plugin swap starts afresh).
///
/// A policy is a pure function of its configuration and the request (the contract
/// says any instance gives the same answer), so a caller seen a moment ago gets the
/// same principal without a sandbox call. Entries expire after `ttl`, which bounds how
/// late a policy that reads the clock takes effect. Denials are never kept. The map
/// is sharded (no lock shared by all requests) and bounded: a full shard is emptied.
struct PrincipalCache {
    ttl: Duration,
    hasher: RandomState,
    shards: [RwLock<HashMap<Box<str>, Cached>>; SHARDS],
}

struct Cached {
    principal: Arc<wit::Principal>,
    expires: Instant,
}

const SHARDS: usize = 16;
/// Callers kept per shard: 65,536 in all, many more than the users of a deployment.
const PER_SHARD: usize = 4096;

impl PrincipalCache {
    fn get(&self, key: &str) -> Option<Arc<wit::Principal>> {
        let shard = self.shard(key).read().unwrap_or_else(|p| p.into_inner());
        let cached = shard.get(key)?;
        (cached.expires > Instant::now()).then(|| cached.principal.clone())
    }

    fn put(&self, key: &str, principal: Arc<wit::Principal>) {
        let mut shard = self.shard(key).write().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= PER_SHARD {
            shard.clear();
        }
        shard.insert(key.into(), Cached { principal, expires: Instant::now() + self.ttl });
    }

    fn shard(&self, key: &str) -> &RwLock<HashMap<Box<str>, Cached>> {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }
}

impl AuthPlugin {
    pub fn prepare(
        compiled: CompiledPlugin,
        limits: Limits,
        config_json: String,
        users: Vec<wit::UserInfo>,
        cache_ttl: Duration,
    ) -> Result<Self, PluginError> {
        let plugin = Self::untried(compiled, limits, config_json, users, cache_ttl)?;
        super::tried(plugin.compiled(), &plugin.trial(false))?;
        Ok(plugin)
    }

    /// Put the policy through its trial; `verbose` keeps the situations it passed.
    pub fn trial(&self, verbose: bool) -> super::trial::Report {
        super::trial::auth(&self.loaded, verbose)
    }

    /// Load the policy without trying it (`berry plugin test` tries it itself).
    pub fn untried(
        compiled: CompiledPlugin,
        limits: Limits,
        config_json: String,
        users: Vec<wit::UserInfo>,
        cache_ttl: Duration,
    ) -> Result<Self, PluginError> {
        let mut loaded: Loaded<AuthKind> = Loaded::prepare(compiled, limits, config_json, users)?;
        let cache = PrincipalCache { ttl: cache_ttl, hasher: RandomState::new(), shards: Default::default() };
        // Header names are matched against lowercase request headers; a policy built
        // without the SDK may answer them in any case, or twice.
        let headers = &mut loaded.answer;
        headers.iter_mut().for_each(|h| h.make_ascii_lowercase());
        headers.sort();
        headers.dedup();
        Ok(AuthPlugin { loaded, cache })
    }

    pub fn compiled(&self) -> &CompiledPlugin {
        &self.loaded.compiled
    }

    pub fn name(&self) -> &Arc<str> {
        &self.loaded.compiled.name
    }

    pub fn stats(&self) -> &CallStats {
        &self.loaded.pool.stats
    }

    /// The contract the policy was built for ("0.2.0", or "0.1.0" through the adapter).
    pub fn contract(&self) -> &'static str {
        self.loaded.contract()
    }

    /// The request headers (lowercase names) the policy asked to see.
    pub fn headers(&self) -> &[String] {
        &self.loaded.answer
    }

    /// Admit or refuse one request. `key` identifies its credentials (the token and
    /// the headers the policy reads): a principal admitted for the same key within
    /// the cache's lifetime comes back without calling the policy.
    pub fn authorize(
        &self,
        key: &str,
        request: impl FnOnce() -> wit::AuthRequest,
    ) -> Result<Result<Arc<wit::Principal>, wit::Denial>, PluginError> {
        let caching = !self.cache.ttl.is_zero();
        if caching && let Some(principal) = self.cache.get(key) {
            return Ok(Ok(principal));
        }
        let request = request();
        // Neutral input: no credentials. A working policy answers it (with a denial).
        let recheck = |store: &mut Store<HostState>, b: &Bindings| {
            let neutral = wit::AuthRequest { token: String::new(), model: String::new(), headers: Vec::new() };
            b.authorize(store, &neutral).map(drop)
        };
        let answer = self.loaded.call(|store, b| b.authorize(store, &request), Some(&recheck))?;
        Ok(answer.map(|principal| {
            let principal = Arc::new(principal);
            if caching {
                self.cache.put(key, principal.clone());
            }
            principal
        }))
    }
}
