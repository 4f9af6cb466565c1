//! A strategy plugin bound to one config snapshot: its routes are configured into
//! every instance when the instance is made.

use std::sync::Arc;

use super::bindings::strategy::{StrategyPlugin as Bindings, StrategyPluginPre};
use super::engine::{CompiledPlugin, engine, linker_for};
use super::pool::{CallStats, Pool, Warm, trap_message};
use super::sandbox::{HostState, arm, new_store};
use super::{Limits, PluginError};

/// The WIT types strategies exchange with the host.
pub mod wit {
    pub use crate::plugin::bindings::strategy::berry::gateway::types::{BillingMode, Circuit, ErrorCounts, Outcome};
    pub use crate::plugin::bindings::strategy::exports::berry::gateway::strategy::{
        BackendInfo, BackendState, Request, RouteInfo,
    };
}

pub struct StrategyPlugin {
    compiled: CompiledPlugin,
    pre: StrategyPluginPre<HostState>,
    limits: Limits,
    config_json: String,
    routes: Vec<wit::RouteInfo>,
    pool: Pool<Bindings>,
}

impl StrategyPlugin {
    /// Link, instantiate and configure one instance (the smoke test): a plugin that
    /// cannot do that is rejected here, before any request sees it.
    pub fn prepare(
        compiled: CompiledPlugin,
        limits: Limits,
        config_json: String,
        routes: Vec<wit::RouteInfo>,
    ) -> Result<Self, PluginError> {
        let pe = engine()?;
        let name = compiled.name.to_string();
        let linker = linker_for(&pe.strategy_linker, &compiled.component).map_err(|e| PluginError::Load {
            plugin: name.clone(),
            message: format!("cannot link: {e:#}"),
        })?;
        let instance_pre = linker.instantiate_pre(&compiled.component).map_err(|e| PluginError::Load {
            plugin: name.clone(),
            message: format!("not a Berry strategy plugin for this gateway (berry:gateway@0.1.0): {e:#}"),
        })?;
        let pre = StrategyPluginPre::new(instance_pre).map_err(|e| PluginError::Load {
            plugin: name.clone(),
            message: format!("does not export the strategy interface of berry:gateway@0.1.0: {e:#}"),
        })?;
        let pool = Pool::new(compiled.name.clone(), limits);
        let plugin = StrategyPlugin { compiled, pre, limits, config_json, routes, pool };
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
            .berry_gateway_strategy()
            .call_configure(&mut store, &self.config_json, &self.routes)
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

    pub fn select(&self, request: &wit::Request, states: &[wit::BackendState]) -> Result<Vec<u32>, PluginError> {
        self.pool.call(|| self.make(), |store, b| b.berry_gateway_strategy().call_select(store, request, states))
    }

    pub fn observe(
        &self,
        request: &wit::Request,
        backend: u32,
        outcome: wit::Outcome,
        latency_ms: f64,
        state: &wit::BackendState,
    ) -> Result<Option<f64>, PluginError> {
        self.pool.call(
            || self.make(),
            |store, b| b.berry_gateway_strategy().call_observe(store, request, backend, outcome, latency_ms, state.clone()),
        )
    }

    pub fn explain(&self, request: &wit::Request, states: &[wit::BackendState]) -> Result<Vec<f64>, PluginError> {
        self.pool.call(|| self.make(), |store, b| b.berry_gateway_strategy().call_explain(store, request, states))
    }
}
