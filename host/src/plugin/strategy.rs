//! A strategy plugin bound to one config snapshot: its routes are configured into
//! every instance when the instance is made.

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::strategy::{StrategyPlugin as Bindings, StrategyPluginPre};
use super::engine::{CompiledPlugin, PluginEngine};
use super::loaded::{Kind, Loaded};
use super::pool::CallStats;
use super::sandbox::HostState;
use super::{Limits, PluginError};

/// The WIT types strategies exchange with the host.
pub mod wit {
    pub use crate::plugin::bindings::strategy::berry::gateway::types::{BillingMode, Circuit, ErrorCounts, Outcome};
    pub use crate::plugin::bindings::strategy::exports::berry::gateway::strategy::{
        BackendInfo, BackendState, Explanation, Request, RouteInfo,
    };
}

pub struct StrategyKind;

impl Kind for StrategyKind {
    type Bindings = Bindings;
    type Pre = StrategyPluginPre<HostState>;
    type Data = Vec<wit::RouteInfo>;
    type Answer = ();
    const NAME: &'static str = "strategy";

    fn input_bytes(routes: &Self::Data) -> usize {
        let backend = |b: &wit::BackendInfo| {
            64 + b.provider.len() + b.model.len() + b.tags.iter().map(|t| 16 + t.len()).sum::<usize>()
        };
        routes.iter().map(|r| 32 + r.name.len() + r.backends.iter().map(backend).sum::<usize>()).sum()
    }

    fn base_linker(pe: &PluginEngine) -> &wasmtime::component::Linker<HostState> {
        &pe.strategy_linker
    }
    fn pre(instance_pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        StrategyPluginPre::new(instance_pre)
    }
    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Bindings> {
        pre.instantiate(store)
    }
    fn configure(
        b: &Bindings,
        store: &mut Store<HostState>,
        config: &str,
        routes: &Self::Data,
    ) -> wasmtime::Result<Result<(), String>> {
        b.berry_gateway_strategy().call_configure(store, config, routes)
    }
}

pub struct StrategyPlugin(Loaded<StrategyKind>);

impl StrategyPlugin {
    /// Load the plugin for `routes` and put it through its trial (`trial`): a
    /// version that fails it is refused here, before any request sees it.
    pub fn prepare(
        compiled: CompiledPlugin,
        limits: Limits,
        config_json: String,
        routes: Vec<wit::RouteInfo>,
    ) -> Result<Self, PluginError> {
        let plugin = Self::untried(compiled, limits, config_json, routes)?;
        super::tried(plugin.compiled(), &plugin.trial(false))?;
        Ok(plugin)
    }

    /// Load the plugin without trying it (`berry plugin test` tries it itself).
    pub fn untried(
        compiled: CompiledPlugin,
        limits: Limits,
        config_json: String,
        routes: Vec<wit::RouteInfo>,
    ) -> Result<Self, PluginError> {
        Loaded::prepare(compiled, limits, config_json, routes).map(StrategyPlugin)
    }

    /// Put the plugin through its trial; `verbose` keeps the situations it passed.
    pub fn trial(&self, verbose: bool) -> super::trial::Report {
        super::trial::strategy(&self.0, verbose)
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

    pub fn select(&self, request: &wit::Request, states: &[wit::BackendState]) -> Result<Vec<u32>, PluginError> {
        // Neutral input: the same route and backends, nothing from the caller (built
        // only if the call fails).
        let recheck = |store: &mut Store<HostState>, b: &Bindings| {
            let neutral = wit::Request { random: 0, stream: false, user_tags: Vec::new(), ..request.clone() };
            b.berry_gateway_strategy().call_select(store, &neutral, states).map(drop)
        };
        self.0.call(|store, b| b.berry_gateway_strategy().call_select(store, request, states), Some(&recheck))
    }

    pub fn observe(
        &self,
        request: &wit::Request,
        backend: u32,
        outcome: wit::Outcome,
        latency_ms: f64,
        state: &wit::BackendState,
    ) -> Result<Option<f64>, PluginError> {
        // A strategy that learns nothing from outcomes (it says so in its build) is
        // not called for each of them.
        if !self.0.compiled.observes {
            return Ok(None);
        }
        self.0.call(
            |store, b| b.berry_gateway_strategy().call_observe(store, request, backend, outcome, latency_ms, *state),
            None,
        )
    }

    pub fn explain(
        &self,
        request: &wit::Request,
        states: &[wit::BackendState],
    ) -> Result<Vec<wit::Explanation>, PluginError> {
        self.0.call(|store, b| b.berry_gateway_strategy().call_explain(store, request, states), None)
    }

    /// Pick probabilities of a strategy that does not explain itself: the share of
    /// `draws` calls of its real `select` (with varied random and sequence numbers,
    /// outside the call counters) that put each backend first.
    pub fn estimate(
        &self,
        request: &wit::Request,
        states: &[wit::BackendState],
        draws: u32,
    ) -> Result<Vec<wit::Explanation>, PluginError> {
        let enabled: Vec<bool> = self
            .0
            .data()
            .get(request.route as usize)
            .map(|r| r.backends.iter().map(|b| b.enabled).collect())
            .unwrap_or_default();
        let mut firsts = vec![0u32; states.len()];
        let mut trial = self.0.trial();
        let mut random = request.random ^ 0x9E37_79B9_7F4A_7C15;
        for k in 0..u64::from(draws) {
            random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let draw = wit::Request { sequence: request.sequence.wrapping_add(k), random, ..request.clone() };
            let order = trial
                .call(|store, b| b.berry_gateway_strategy().call_select(store, &draw, states))
                .map_err(|message| PluginError::Trap { plugin: self.name().to_string(), message })?;
            let first = order.iter().find(|&&i| enabled.get(i as usize).copied().unwrap_or(false));
            if let Some(&i) = first {
                firsts[i as usize] += 1;
            }
        }
        Ok(firsts
            .iter()
            .map(|&n| {
                let share = f64::from(n) / f64::from(draws.max(1));
                wit::Explanation { weight: share, probability: share, factors: vec![("estimated_share".into(), share)] }
            })
            .collect())
    }

    /// Count an answer of `select` the host had to correct (indices out of range,
    /// disabled or repeated were dropped, or nothing usable was left), and log it,
    /// at most every ten seconds per plugin version.
    pub fn invalid_answer(&self, route: &str, kept: &[u32], dropped: usize, backends: usize) {
        let stats = self.stats();
        let count = stats.invalid_answers.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let route = crate::telemetry::clean::clip(route);
        let what =
            format!("for model {route:?} ({backends} backends) dropped {dropped} of its indices, leaving {kept:?}");
        *stats.last_invalid_answer.lock().unwrap_or_else(|p| p.into_inner()) = Some(what.clone());
        if stats.invalid_log.allow() {
            tracing::warn!(
                plugin = &**self.name(),
                invalid_answers = count,
                "{what}: indices out of range, disabled or repeated are ignored; an answer with none left is \
                 served in the host's fallback order"
            );
        }
    }
}
