//! A strategy plugin bound to one config snapshot: its routes are configured into
//! every instance when the instance is made.
//!
//! Per request the host hands a strategy numbers only (contract 0.2): the backends'
//! state as 16 numbers each (`flat`), and the outcomes that ended since its last
//! call, batched (`Outbox`), so that learning from an attempt costs no sandbox call
//! of its own. Plugins built for the frozen 0.1 contract are called through the
//! adapter in `v0_1.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::strategy::{StrategyPlugin as Current, StrategyPluginPre as CurrentPre};
use super::bindings::v0_1::strategy::{StrategyPlugin as Old, StrategyPluginPre as OldPre};
use super::engine::{CompiledPlugin, PluginEngine};
use super::loaded::{Kind, Loaded};
use super::pool::CallStats;
use super::sandbox::HostState;
use super::{Limits, PluginError};
use crate::health::BackendHealth;

/// The WIT types strategies exchange with the host.
pub mod wit {
    pub use crate::plugin::bindings::strategy::berry::gateway::types::{BillingMode, Circuit, Outcome};
    pub use crate::plugin::bindings::strategy::exports::berry::gateway::strategy::{
        BackendInfo, Explanation, Request, RouteInfo, Selection,
    };
}

/// The flat layouts of contract 0.2 (documented in `wit/berry.wit`).
pub mod flat {
    use super::wit::{Circuit, Outcome};

    /// Numbers per backend state.
    pub const STATE: usize = 16;
    /// Numbers per outcome: route, backend, outcome, latency, time, then the state.
    pub const OUTCOME: usize = 5 + STATE;

    const HEALTHY: usize = 0;
    const CIRCUIT: usize = 1;
    const RECOVERY: usize = 2;
    const LATENCY: usize = 3;
    const IN_FLIGHT: usize = 4;
    const CONSECUTIVE: usize = 5;
    const LAST_FAILURE: usize = 6;
    pub const SCORE: usize = 7;
    pub const SCORE_AT: usize = 8;
    const ERRORS: usize = 9;

    /// The live state of one backend, as the host knows it now: what its 16
    /// numbers say. Errors by class: network, timeout, auth, rate limit, server, model.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct BackendState {
        pub healthy: bool,
        pub circuit: Circuit,
        pub recovery_factor: f64,
        pub latency_ms: Option<f64>,
        pub in_flight: u32,
        pub consecutive_failures: u32,
        pub last_failure_ms: u64,
        pub errors: [u32; 6],
        pub score: Option<f64>,
        pub score_updated_ms: u64,
    }

    impl BackendState {
        /// Append the 16 numbers.
        pub fn write(&self, out: &mut Vec<f64>) {
            let mut slots = [0.0; STATE];
            slots[HEALTHY] = f64::from(u8::from(self.healthy));
            slots[CIRCUIT] = match self.circuit {
                Circuit::Closed => 0.0,
                Circuit::Open => 1.0,
                Circuit::HalfOpen => 2.0,
            };
            slots[RECOVERY] = self.recovery_factor;
            slots[LATENCY] = self.latency_ms.unwrap_or(f64::NAN);
            slots[IN_FLIGHT] = f64::from(self.in_flight);
            slots[CONSECUTIVE] = f64::from(self.consecutive_failures);
            slots[LAST_FAILURE] = self.last_failure_ms as f64;
            slots[SCORE] = self.score.unwrap_or(f64::NAN);
            slots[SCORE_AT] = self.score_updated_ms as f64;
            for (slot, &n) in slots[ERRORS..ERRORS + 6].iter_mut().zip(&self.errors) {
                *slot = f64::from(n);
            }
            out.extend_from_slice(&slots);
        }

        /// Read the state from its numbers (`slots` holds at least 16).
        pub fn read(slots: &[f64]) -> BackendState {
            let at = |i: usize| slots.get(i).copied().unwrap_or(f64::NAN);
            let some = |x: f64| x.is_finite().then_some(x);
            let whole = |x: f64| if x.is_finite() && x > 0.0 { x as u64 } else { 0 };
            BackendState {
                healthy: at(HEALTHY) == 1.0,
                circuit: match at(CIRCUIT) as u8 {
                    1 => Circuit::Open,
                    2 => Circuit::HalfOpen,
                    _ => Circuit::Closed,
                },
                recovery_factor: at(RECOVERY),
                latency_ms: some(at(LATENCY)),
                in_flight: whole(at(IN_FLIGHT)) as u32,
                consecutive_failures: whole(at(CONSECUTIVE)) as u32,
                last_failure_ms: whole(at(LAST_FAILURE)),
                errors: std::array::from_fn(|i| whole(at(ERRORS + i)) as u32),
                score: some(at(SCORE)),
                score_updated_ms: whole(at(SCORE_AT)),
            }
        }
    }

    /// Whether the backend whose state starts at `slots` is healthy, and when it
    /// last failed: what the host's own failover order needs.
    pub fn healthy(slots: &[f64]) -> bool {
        slots.get(HEALTHY) == Some(&1.0)
    }

    pub fn last_failure_ms(slots: &[f64]) -> u64 {
        slots.get(LAST_FAILURE).map_or(0, |&x| x as u64)
    }

    pub const OUTCOMES: [Outcome; 8] = [
        Outcome::Success,
        Outcome::Network,
        Outcome::Timeout,
        Outcome::Auth,
        Outcome::RateLimit,
        Outcome::Server,
        Outcome::Model,
        Outcome::Client,
    ];

    /// Append one outcome's 21 numbers.
    pub fn outcome(
        out: &mut Vec<f64>,
        route: u32,
        backend: u32,
        outcome: Outcome,
        latency_ms: f64,
        at_ms: u64,
        before: &BackendState,
    ) {
        let code = OUTCOMES.iter().position(|&o| o == outcome).unwrap_or(0);
        out.extend_from_slice(&[f64::from(route), f64::from(backend), code as f64, latency_ms, at_ms as f64]);
        before.write(out);
    }

    /// One outcome read back from its numbers: (route, backend, outcome, latency, time, state before).
    pub fn read_outcome(n: &[f64]) -> (u32, u32, Outcome, f64, u64, BackendState) {
        let at = |i: usize| n.get(i).copied().unwrap_or(0.0);
        let outcome = OUTCOMES.get(at(2) as usize).copied().unwrap_or(Outcome::Client);
        (at(0) as u32, at(1) as u32, outcome, at(3), at(4) as u64, BackendState::read(n.get(5..).unwrap_or(&[])))
    }
}

pub use flat::BackendState;

/// One loaded strategy, whichever contract it was built for. Every call the host
/// makes is a 0.2 call; a 0.1 plugin answers through the adapter (`v0_1.rs`).
pub enum Bindings {
    Current(Current),
    V0_1(Old),
}

pub enum Pre {
    Current(CurrentPre<HostState>),
    V0_1(OldPre<HostState>),
}

impl Bindings {
    pub fn select(
        &self,
        store: &mut Store<HostState>,
        request: &wit::Request,
        states: &[f64],
        outcomes: &[f64],
    ) -> wasmtime::Result<wit::Selection> {
        match self {
            Bindings::Current(b) => b.berry_gateway_strategy().call_select(store, *request, states, outcomes),
            Bindings::V0_1(b) => super::v0_1::select(b, store, request, states, outcomes),
        }
    }

    pub fn observe(&self, store: &mut Store<HostState>, outcomes: &[f64]) -> wasmtime::Result<Vec<f64>> {
        match self {
            Bindings::Current(b) => b.berry_gateway_strategy().call_observe(store, outcomes),
            Bindings::V0_1(b) => super::v0_1::observe(b, store, outcomes).map(|(scores, _)| scores),
        }
    }

    pub fn explain(
        &self,
        store: &mut Store<HostState>,
        request: &wit::Request,
        states: &[f64],
    ) -> wasmtime::Result<Vec<wit::Explanation>> {
        match self {
            Bindings::Current(b) => b.berry_gateway_strategy().call_explain(store, *request, states),
            Bindings::V0_1(b) => super::v0_1::explain(b, store, request, states),
        }
    }
}

pub struct StrategyKind;

impl Kind for StrategyKind {
    type Bindings = Bindings;
    type Pre = Pre;
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
        routes: &Self::Data,
    ) -> wasmtime::Result<Result<(), String>> {
        match b {
            Bindings::Current(b) => b.berry_gateway_strategy().call_configure(store, config, routes),
            Bindings::V0_1(b) => super::v0_1::configure(b, store, config, routes),
        }
    }
}

/// Outcomes waiting to be delivered to the strategy with the next `select`: their
/// numbers, and the health each answered score is kept in.
#[derive(Default)]
struct Outbox {
    numbers: Vec<f64>,
    targets: Vec<(Arc<BackendHealth>, u64)>,
}

/// Outcomes that may wait. A strategy with no requests to carry them (a quiet
/// gateway) gets them from the caller that fills the box, through `observe`.
const OUTBOX_CAPACITY: usize = 64;

pub struct StrategyPlugin {
    loaded: Loaded<StrategyKind>,
    outbox: Mutex<Outbox>,
    /// Set when an outcome is put in the outbox: a request finds an empty one
    /// without taking the lock.
    waiting: AtomicBool,
}

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
        let loaded = Loaded::prepare(compiled, limits, config_json, routes)?;
        Ok(StrategyPlugin { loaded, outbox: Mutex::new(Outbox::default()), waiting: AtomicBool::new(false) })
    }

    /// Put the plugin through its trial; `verbose` keeps the situations it passed.
    pub fn trial(&self, verbose: bool) -> super::trial::Report {
        super::trial::strategy(&self.loaded, verbose)
    }

    pub fn compiled(&self) -> &CompiledPlugin {
        &self.loaded.compiled
    }

    pub fn name(&self) -> &Arc<str> {
        &self.loaded.compiled.name
    }

    /// The contract the plugin was built for ("0.2.0", or "0.1.0" through the adapter).
    pub fn contract(&self) -> &'static str {
        self.loaded.contract()
    }

    pub fn stats(&self) -> &CallStats {
        &self.loaded.pool.stats
    }

    /// Rank the backends of `request.route` (`states`: 16 numbers per backend) for a
    /// caller with `caller_tags`. The outcomes waiting in the outbox go with the call,
    /// and the scores the strategy answers for them are kept.
    pub fn select(&self, request: &wit::Request, states: &[f64], caller_tags: &[String]) -> Result<Vec<u32>, PluginError> {
        let pending = self.take_outbox();
        // Neutral input: the same route and backends, nothing from the caller and no
        // outcomes (built only if the call fails).
        let recheck = |store: &mut Store<HostState>, b: &Bindings| {
            let neutral = wit::Request { random: 0, stream: false, ..*request };
            b.select(store, &neutral, states, &[]).map(drop)
        };
        let selection = self.loaded.call(
            |store, b| HostState::with_caller(store, caller_tags, |store| b.select(store, request, states, &pending.numbers)),
            Some(&recheck),
        )?;
        keep_scores(&pending, &selection.scores);
        Ok(selection.order)
    }

    /// Hold one attempt's outcome for the strategy (`before`: the backend's state just
    /// before it; `health`: where the score it answers is kept). A strategy that
    /// learns nothing from outcomes (it says so in its build) never gets them.
    #[allow(clippy::too_many_arguments, reason = "one outcome's fields, as the contract lays them out")]
    pub fn note(
        &self,
        route: u32,
        backend: u32,
        outcome: wit::Outcome,
        latency_ms: f64,
        at_ms: u64,
        before: &BackendState,
        health: &Arc<BackendHealth>,
    ) {
        if !self.loaded.compiled.observes {
            return;
        }
        let full = {
            let mut outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
            flat::outcome(&mut outbox.numbers, route, backend, outcome, latency_ms, at_ms, before);
            outbox.targets.push((health.clone(), at_ms));
            outbox.targets.len() >= OUTBOX_CAPACITY
        };
        self.waiting.store(true, Ordering::Release);
        if full {
            self.flush();
        }
    }

    /// Deliver the waiting outcomes now, with `observe` (a no-op when none wait).
    /// Requests carry them with their `select`; this is for when none comes: the
    /// gateway calls it every 100 ms and before it shows scores.
    pub fn flush(&self) {
        let pending = self.take_outbox();
        if pending.targets.is_empty() {
            return;
        }
        match self.loaded.call(|store, b| b.observe(store, &pending.numbers), None) {
            Ok(scores) => keep_scores(&pending, &scores),
            Err(PluginError::Quarantined { .. }) => {}
            Err(e) => tracing::warn!(plugin = &**self.name(), "observe failed: {e}"),
        }
    }

    /// The outcomes waiting, each with its backend's score as kept *now* (slots 7
    /// and 8 of its state): the strategy learns on top of the scores answered since
    /// (and of what the fleet shared), not of the one read when the attempt ended.
    fn take_outbox(&self) -> Outbox {
        // Nothing waiting (always so for a strategy that does not observe): no lock.
        if !self.waiting.swap(false, Ordering::Acquire) {
            return Outbox::default();
        }
        let mut pending = std::mem::take(&mut *self.outbox.lock().unwrap_or_else(|p| p.into_inner()));
        let Outbox { numbers, targets } = &mut pending;
        for (outcome, (health, _)) in numbers.chunks_exact_mut(flat::OUTCOME).zip(targets.iter()) {
            let (score, at) = health.score().map_or((f64::NAN, 0.0), |(s, at)| (s, at as f64));
            outcome[5 + flat::SCORE] = score;
            outcome[5 + flat::SCORE_AT] = at;
        }
        pending
    }

    /// Learn from `outcomes` (21 numbers each) now and answer the scores, without
    /// keeping them: for tools and tests that look at a strategy's arithmetic.
    pub fn observe(&self, outcomes: &[f64]) -> Result<Vec<f64>, PluginError> {
        self.loaded.call(|store, b| b.observe(store, outcomes), None)
    }

    /// The strategy's explanation of every backend (`flush` first, and read the
    /// states after it, for figures that count every outcome so far).
    pub fn explain(&self, request: &wit::Request, states: &[f64]) -> Result<Vec<wit::Explanation>, PluginError> {
        self.loaded.call(|store, b| b.explain(store, request, states), None)
    }

    /// Pick probabilities of a strategy that does not explain itself: the share of
    /// `draws` calls of its real `select` (with varied random and sequence numbers,
    /// outside the call counters) that put each backend first.
    pub fn estimate(
        &self,
        request: &wit::Request,
        states: &[f64],
        draws: u32,
    ) -> Result<Vec<wit::Explanation>, PluginError> {
        let enabled: Vec<bool> = self
            .loaded
            .data()
            .get(request.route as usize)
            .map(|r| r.backends.iter().map(|b| b.enabled).collect())
            .unwrap_or_default();
        let mut firsts = vec![0u32; states.len() / flat::STATE];
        let mut trial = self.loaded.trial();
        let mut random = request.random ^ 0x9E37_79B9_7F4A_7C15;
        for k in 0..u64::from(draws) {
            random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let draw = wit::Request { sequence: request.sequence.wrapping_add(k), random, ..*request };
            let order = trial
                .call(|store, b| b.select(store, &draw, states, &[]))
                .map_err(|message| PluginError::Trap { plugin: self.name().to_string(), message })?
                .order;
            let first = order.iter().find(|&&i| enabled.get(i as usize).copied().unwrap_or(false));
            if let Some(&i) = first
                && let Some(n) = firsts.get_mut(i as usize)
            {
                *n += 1;
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

/// A replaced configuration's last outcomes still reach its strategy.
impl Drop for StrategyPlugin {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Keep the scores answered for `pending` (NaN: leave the backend's score alone).
fn keep_scores(pending: &Outbox, scores: &[f64]) {
    for ((health, at), &score) in pending.targets.iter().zip(scores) {
        if score.is_finite() {
            health.set_score(score, *at);
        }
    }
}
