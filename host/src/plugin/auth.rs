//! An auth plugin bound to one config snapshot: the users are configured into every
//! instance when the instance is made.

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::auth::{AuthPlugin as Bindings, AuthPluginPre};
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

pub struct AuthKind;

impl Kind for AuthKind {
    type Bindings = Bindings;
    type Pre = AuthPluginPre<HostState>;
    type Data = Vec<wit::UserInfo>;
    /// The request headers the policy reads.
    type Answer = Vec<String>;
    const NAME: &'static str = "auth";

    fn base_linker(pe: &PluginEngine) -> &wasmtime::component::Linker<HostState> {
        &pe.auth_linker
    }
    fn pre(instance_pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        AuthPluginPre::new(instance_pre)
    }
    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Bindings> {
        pre.instantiate(store)
    }
    fn configure(
        b: &Bindings,
        store: &mut Store<HostState>,
        config: &str,
        users: &Self::Data,
    ) -> wasmtime::Result<Result<Vec<String>, String>> {
        b.berry_gateway_auth().call_configure(store, config, users)
    }
}

pub struct AuthPlugin(Loaded<AuthKind>);

impl AuthPlugin {
    pub fn prepare(
        compiled: CompiledPlugin,
        limits: Limits,
        config_json: String,
        users: Vec<wit::UserInfo>,
    ) -> Result<Self, PluginError> {
        let mut loaded: Loaded<AuthKind> = Loaded::prepare(compiled, limits, config_json, users)?;
        // Header names are matched against lowercase request headers; a policy built
        // without the SDK may answer them in any case, or twice.
        let headers = &mut loaded.answer;
        headers.iter_mut().for_each(|h| h.make_ascii_lowercase());
        headers.sort();
        headers.dedup();
        Ok(AuthPlugin(loaded))
    }

    pub fn compiled(&self) -> &CompiledPlugin {
        &self.0.compiled
    }

    pub fn name(&self) -> &Arc<str> {
        &self.0.compiled.name
    }

    pub fn stats(&self) -> &CallStats {
        &self.0.pool.stats
    }

    /// The request headers (lowercase names) the policy asked to see.
    pub fn headers(&self) -> &[String] {
        &self.0.answer
    }

    pub fn authorize(&self, request: &wit::AuthRequest) -> Result<Result<wit::Principal, wit::Denial>, PluginError> {
        // Neutral input: no credentials. A working policy answers it (with a denial).
        let recheck = |store: &mut Store<HostState>, b: &Bindings| {
            let neutral = wit::AuthRequest { token: String::new(), model: String::new(), headers: Vec::new() };
            b.berry_gateway_auth().call_authorize(store, &neutral).map(drop)
        };
        self.0.call(|store, b| b.berry_gateway_auth().call_authorize(store, request), Some(&recheck))
    }
}
