//! An auth plugin bound to one config snapshot: the users are configured into every
//! instance when the instance is made.

use std::sync::Arc;

use super::bindings::auth::{AuthPlugin as Bindings, AuthPluginPre};
use super::engine::{CompiledPlugin, engine, linker_for};
use super::pool::{CallStats, Pool, Warm, trap_message};
use super::sandbox::{HostState, arm, new_store};
use super::{Limits, PluginError};

/// The WIT types auth policies exchange with the host.
pub mod wit {
    pub use crate::plugin::bindings::auth::exports::berry::gateway::auth::{
        AuthRequest, Denial, Principal, RateLimits, UserInfo,
    };
}

pub struct AuthPlugin {
    compiled: CompiledPlugin,
    pre: AuthPluginPre<HostState>,
    limits: Limits,
    config_json: String,
    users: Vec<wit::UserInfo>,
    pool: Pool<Bindings>,
}

impl AuthPlugin {
    /// Link, instantiate and configure one instance; see `StrategyPlugin::prepare`.
    pub fn prepare(
        compiled: CompiledPlugin,
        limits: Limits,
        config_json: String,
        users: Vec<wit::UserInfo>,
    ) -> Result<Self, PluginError> {
        let pe = engine()?;
        let name = compiled.name.to_string();
        let linker = linker_for(&pe.auth_linker, &compiled.component).map_err(|e| PluginError::Load {
            plugin: name.clone(),
            message: format!("cannot link: {e:#}"),
        })?;
        let instance_pre = linker.instantiate_pre(&compiled.component).map_err(|e| PluginError::Load {
            plugin: name.clone(),
            message: format!("not a Berry auth plugin for this gateway (berry:gateway@0.1.0): {e:#}"),
        })?;
        let pre = AuthPluginPre::new(instance_pre).map_err(|e| PluginError::Load {
            plugin: name.clone(),
            message: format!("does not export the auth interface of berry:gateway@0.1.0: {e:#}"),
        })?;
        let pool = Pool::new(compiled.name.clone(), limits);
        let plugin = AuthPlugin { compiled, pre, limits, config_json, users, pool };
        let warm = plugin.make()?;
        plugin.pool.put(warm);
        Ok(plugin)
    }

    fn make(&self) -> Result<Warm<Bindings>, PluginError> {
        let pe = engine()?;
        let name = || self.compiled.name.to_string();
        let mut store = new_store(pe, self.compiled.name.clone(), &self.limits);
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| PluginError::Instantiate { plugin: name(), message: trap_message(&e) })?;
        arm(&mut store, &self.limits);
        bindings
            .berry_gateway_auth()
            .call_configure(&mut store, &self.config_json, &self.users)
            .map_err(|e| PluginError::Instantiate { plugin: name(), message: trap_message(&e) })?
            .map_err(|message| PluginError::Configure { plugin: name(), message })?;
        Ok(Warm { store, bindings })
    }

    pub fn compiled(&self) -> &CompiledPlugin {
        &self.compiled
    }

    pub fn name(&self) -> &Arc<str> {
        &self.compiled.name
    }

    pub fn stats(&self) -> &CallStats {
        &self.pool.stats
    }

    pub fn authorize(&self, request: &wit::AuthRequest) -> Result<Result<wit::Principal, wit::Denial>, PluginError> {
        self.pool.call(|| self.make(), |store, b| b.berry_gateway_auth().call_authorize(store, request))
    }
}
