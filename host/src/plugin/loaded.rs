//! A plugin loaded for one config snapshot, whatever its kind: linked, its
//! configuration (and the routes or users it serves) kept for every instance made,
//! and a warm pool to call through.

use wasmtime::component::InstancePre;

use super::engine::{CompiledPlugin, PluginEngine, engine, linker_for};
use super::pool::{Pool, Warm, trap_message};
use super::sandbox::{HostState, arm, new_store};
use super::{Limits, PluginError};

/// What differs between the two plugin kinds (worlds).
pub trait Kind {
    /// The generated bindings of one instance.
    type Bindings;
    /// The generated pre-instantiated world.
    type Pre;
    /// What `configure` receives besides the plugin's JSON config (routes, users).
    type Data;
    /// "strategy" or "auth", for messages.
    const NAME: &'static str;

    fn base_linker(pe: &PluginEngine) -> &wasmtime::component::Linker<HostState>;
    fn pre(instance_pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre>;
    fn instantiate(pre: &Self::Pre, store: &mut wasmtime::Store<HostState>) -> wasmtime::Result<Self::Bindings>;
    fn configure(
        bindings: &Self::Bindings,
        store: &mut wasmtime::Store<HostState>,
        config: &str,
        data: &Self::Data,
    ) -> wasmtime::Result<Result<(), String>>;
}

pub struct Loaded<K: Kind> {
    pub compiled: CompiledPlugin,
    pre: K::Pre,
    limits: Limits,
    config_json: String,
    data: K::Data,
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
        let name = compiled.name.to_string();
        let load_err = |message: String| PluginError::Load { plugin: name.clone(), message };
        let linker =
            linker_for(K::base_linker(pe), &compiled.component).map_err(|e| load_err(format!("cannot link: {e:#}")))?;
        let instance_pre = linker.instantiate_pre(&compiled.component).map_err(|e| {
            load_err(format!("not a Berry {} plugin for this gateway (berry:gateway@0.1.0): {e:#}", K::NAME))
        })?;
        let pre = K::pre(instance_pre).map_err(|e| {
            load_err(format!("does not export the {} interface of berry:gateway@0.1.0: {e:#}", K::NAME))
        })?;
        let pool = Pool::new(compiled.name.clone(), limits, compiled.stats.clone());
        let loaded = Loaded { compiled, pre, limits, config_json, data, pool };
        let warm = loaded.make()?;
        loaded.pool.put(warm);
        Ok(loaded)
    }

    fn make(&self) -> Result<Warm<K::Bindings>, PluginError> {
        let pe = engine()?;
        let name = || self.compiled.name.to_string();
        let mut store = new_store(pe, self.compiled.name.clone(), &self.limits);
        let bindings = K::instantiate(&self.pre, &mut store)
            .map_err(|e| PluginError::Instantiate { plugin: name(), message: trap_message(&e) })?;
        arm(&mut store, &self.limits);
        K::configure(&bindings, &mut store, &self.config_json, &self.data)
            .map_err(|e| PluginError::Instantiate { plugin: name(), message: trap_message(&e) })?
            .map_err(|message| PluginError::Configure { plugin: name(), message })?;
        Ok(Warm { store, bindings })
    }

    /// Call into a warm instance (made and configured on demand); see `Pool::call`
    /// for `primary`.
    pub fn call<R>(
        &self,
        primary: bool,
        call: impl FnOnce(&mut wasmtime::Store<HostState>, &K::Bindings) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        self.pool.call(primary, || self.make(), call)
    }
}
