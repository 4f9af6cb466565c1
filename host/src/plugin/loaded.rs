//! A plugin loaded for one config snapshot, whatever its kind: linked, its
//! configuration (and the routes or users it serves) kept for every instance made,
//! and a warm pool to call through.

use wasmtime::component::InstancePre;

use super::engine::{CompiledPlugin, PluginEngine, engine, linker_for};
use super::pool::{Pool, Recheck, Warm, describe};
use super::sandbox::{HostState, arm, arm_with, new_store};
use super::version::WIT_VERSION;
use super::{Limits, PluginError};

/// Instances made when a plugin is loaded: one per core (calls are synchronous, so
/// no more than that run at once), at most four. More are made on demand.
static WARM_AT_LOAD: std::sync::LazyLock<usize> =
    std::sync::LazyLock::new(|| std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4));

/// What differs between the two plugin kinds (worlds).
pub trait Kind {
    /// The generated bindings of one instance.
    type Bindings: Send;
    /// The generated pre-instantiated world.
    type Pre: Sync;
    /// What `configure` receives besides the plugin's JSON config (routes, users).
    type Data: Sync;
    /// What a successful `configure` answers (the headers an auth policy reads).
    type Answer: Send;
    /// "strategy" or "auth", for messages.
    const NAME: &'static str;

    /// About how many bytes `data` takes in the plugin's memory once handed over
    /// (its strings and records): what `configure`'s budget and the memory cap grow by.
    fn input_bytes(data: &Self::Data) -> usize;

    fn base_linker(pe: &PluginEngine) -> &wasmtime::component::Linker<HostState>;
    /// The typed world of a linked component: the current contract's, else the
    /// frozen 0.1's (called through its adapter).
    fn pre(instance_pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre>;
    /// The contract version `pre` speaks.
    fn contract(pre: &Self::Pre) -> &'static str;
    fn instantiate(pre: &Self::Pre, store: &mut wasmtime::Store<HostState>) -> wasmtime::Result<Self::Bindings>;
    fn configure(
        bindings: &Self::Bindings,
        store: &mut wasmtime::Store<HostState>,
        config: &str,
        data: &Self::Data,
    ) -> wasmtime::Result<Result<Self::Answer, String>>;
}

pub struct Loaded<K: Kind> {
    pub compiled: CompiledPlugin,
    pre: K::Pre,
    limits: Limits,
    config_json: String,
    data: K::Data,
    /// What the smoke instance's `configure` answered.
    pub answer: K::Answer,
    pub pool: Pool<K::Bindings>,
}

impl<K: Kind> Loaded<K> {
    /// Link, instantiate and configure one instance (the smoke test): a plugin that
    /// cannot do that is rejected here, before any request sees it.
    pub fn prepare(
        compiled: CompiledPlugin,
        limits: Limits,
        config_json: String,
        data: K::Data,
    ) -> Result<Self, PluginError> {
        let pe = engine()?;
        let limits = limits.sized_for(K::input_bytes(&data));
        let name = compiled.name.to_string();
        let load_err = |message: String| PluginError::Load { plugin: name.clone(), message };
        let linker =
            linker_for(K::base_linker(pe), &compiled.component).map_err(|e| load_err(format!("cannot link: {e:#}")))?;
        let instance_pre = linker.instantiate_pre(&compiled.component).map_err(|e| {
            load_err(format!(
                "not a Berry {} plugin for this gateway (berry:gateway@{WIT_VERSION} or @0.1.0): {e:#}",
                K::NAME
            ))
        })?;
        let pre = K::pre(instance_pre).map_err(|e| {
            load_err(format!(
                "does not export the {} interface of berry:gateway@{WIT_VERSION} (or @0.1.0): {e:#}",
                K::NAME
            ))
        })?;
        let pool = Pool::new(compiled.name.clone(), limits, compiled.stats.clone());
        let (warm, answer) = make::<K>(&pre, &compiled, &limits, &config_json, &data)?;
        pool.put(warm);
        // One warm instance per thread that may call at once, made now, in parallel:
        // a large configuration takes a while to `configure`, and that wait belongs
        // to the load, not to a request.
        let more = WARM_AT_LOAD.saturating_sub(1);
        let made: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> =
                (0..more).map(|_| scope.spawn(|| make::<K>(&pre, &compiled, &limits, &config_json, &data))).collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        for result in made {
            pool.put(result?.0);
        }
        Ok(Loaded { compiled, pre, limits, config_json, data, answer, pool })
    }

    /// The contract version the plugin was built for.
    pub fn contract(&self) -> &'static str {
        K::contract(&self.pre)
    }

    /// What `configure` was given besides the plugin's JSON config (routes, users).
    pub fn data(&self) -> &K::Data {
        &self.data
    }

    /// Instances to try the plugin on (see `trial`), outside the pool's counters
    /// and quarantine.
    pub fn trial(&self) -> Trial<'_, K> {
        Trial { loaded: self, current: None, set_aside: Vec::new() }
    }

    /// Call into a warm instance (made and configured on demand); see `Pool::call`
    /// for `recheck`.
    pub fn call<R>(
        &self,
        call: impl FnOnce(&mut wasmtime::Store<HostState>, &K::Bindings) -> wasmtime::Result<R>,
        recheck: Option<Recheck<'_, K::Bindings>>,
    ) -> Result<R, PluginError> {
        self.pool.call(|| self.instance(), call, recheck)
    }

    /// A new instance, instantiated and configured.
    fn instance(&self) -> Result<Warm<K::Bindings>, PluginError> {
        make::<K>(&self.pre, &self.compiled, &self.limits, &self.config_json, &self.data).map(|(warm, _)| warm)
    }
}

/// Instantiate and configure one instance.
fn make<K: Kind>(
    pre: &K::Pre,
    compiled: &CompiledPlugin,
    limits: &Limits,
    config_json: &str,
    data: &K::Data,
) -> Result<(Warm<K::Bindings>, K::Answer), PluginError> {
    let pe = engine()?;
    let name = || compiled.name.to_string();
    let mut store = new_store(pe, compiled.name.clone(), limits, &compiled.stats.output);
    let bindings = K::instantiate(pre, &mut store)
        .map_err(|e| PluginError::Instantiate { plugin: name(), message: describe(&e, store.data()) })?;
    let (fuel, deadline) = limits.configure_budget(K::input_bytes(data));
    arm_with(&mut store, fuel, deadline);
    let answer = K::configure(&bindings, &mut store, config_json, data)
        .map_err(|e| PluginError::Instantiate { plugin: name(), message: describe(&e, store.data()) })?
        .map_err(|message| PluginError::Configure { plugin: name(), message })?;
    Ok((Warm { store, bindings }, answer))
}

/// Instances a trial calls: taken from the pool (or made), replaced after a failed
/// call, given back when the trial ends.
pub struct Trial<'a, K: Kind> {
    loaded: &'a Loaded<K>,
    current: Option<Warm<K::Bindings>>,
    /// Instances used before the current one ([`Trial::another`]).
    set_aside: Vec<Warm<K::Bindings>>,
}

impl<K: Kind> Trial<'_, K> {
    /// One call under the plugin's per-call budget; a failure is described (trap,
    /// panic, backtrace) and the instance replaced.
    pub fn call<R>(
        &mut self,
        call: impl FnOnce(&mut wasmtime::Store<HostState>, &K::Bindings) -> wasmtime::Result<R>,
    ) -> Result<R, String> {
        let mut warm = match self.current.take() {
            Some(warm) => warm,
            None => self.instance()?,
        };
        arm(&mut warm.store, &self.loaded.limits);
        match call(&mut warm.store, &warm.bindings) {
            Ok(value) => {
                self.current = Some(warm);
                Ok(value)
            }
            Err(e) => Err(describe(&e, warm.store.data())),
        }
    }

    /// Go on with an instance other than the one used so far (to see whether it
    /// answers the same).
    pub fn another(&mut self) -> Result<(), String> {
        if let Some(used) = self.current.take() {
            self.set_aside.push(used);
        }
        self.current = Some(self.instance()?);
        Ok(())
    }

    fn instance(&self) -> Result<Warm<K::Bindings>, String> {
        match self.loaded.pool.take() {
            Some(warm) => Ok(warm),
            None => self.loaded.instance().map_err(|e| e.to_string()),
        }
    }
}

impl<K: Kind> Drop for Trial<'_, K> {
    fn drop(&mut self) {
        for warm in self.current.take().into_iter().chain(self.set_aside.drain(..)) {
            self.loaded.pool.put(warm);
        }
    }
}
