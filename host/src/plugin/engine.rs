//! The process-wide wasmtime engine and the compiled-component cache.
//!
//! One engine serves every plugin: compiled code can be shared across config
//! snapshots and swaps, and one epoch ticker thread drives every call's deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use super::bindings::{auth as auth_world, strategy as strategy_world, v0_1};
use super::pool::CallStats;
use super::sandbox::HostState;
use super::{PluginError, cache, version};

/// How often the epoch advances. Deadlines are whole ticks, so this is their resolution.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

pub struct PluginEngine {
    pub engine: Engine,
    pub strategy_linker: Linker<HostState>,
    pub auth_linker: Linker<HostState>,
    /// Compiled components by SHA-256 of their bytes, so a config reload of the same
    /// plugin never compiles twice in one process.
    compiled: Mutex<CompiledCache>,
}

/// Compiled components kept for reuse, at most [`CompiledCache::CAPACITY`]: every
/// swap brings a new version, and the ones no longer used must not stay in memory
/// forever. The least recently used goes first; a snapshot still serving it keeps
/// its own reference until its last request ends, and the disk cache (if any) has it.
#[derive(Default)]
struct CompiledCache {
    entries: HashMap<[u8; 32], (Component, u64)>,
    clock: u64,
}

impl CompiledCache {
    /// Enough for every stock plugin and a few dozen custom versions.
    const CAPACITY: usize = 32;

    fn get(&mut self, digest: &[u8; 32]) -> Option<Component> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(digest).map(|(c, used)| {
            *used = clock;
            c.clone()
        })
    }

    fn insert(&mut self, digest: [u8; 32], component: Component) {
        self.clock += 1;
        self.entries.insert(digest, (component, self.clock));
        while self.entries.len() > Self::CAPACITY {
            let Some(oldest) = self.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| *k) else { break };
            self.entries.remove(&oldest);
        }
    }
}

/// How many compiled components the process keeps for reuse (at most 32).
pub fn cached_components() -> usize {
    ENGINE.get().and_then(|e| e.as_ref().ok()).map_or(0, |pe| lock(&pe.compiled).entries.len())
}

/// Call counters and first-load time per plugin version (name, hash), kept by a
/// gateway across its snapshots, so a reload does not reset them.
#[derive(Default)]
pub struct Versions {
    versions: Mutex<HashMap<VersionKey, (Arc<CallStats>, SystemTime)>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Versions {
    pub fn new(metrics: Arc<crate::metrics::Metrics>) -> Self {
        Versions { versions: Mutex::new(HashMap::new()), metrics }
    }

    /// Forget the versions no longer in service (after a swap), so swapping does
    /// not grow this table without end.
    pub fn retain<'a>(&self, in_service: impl Iterator<Item = &'a CompiledPlugin>) {
        let keep: Vec<(&str, &str)> = in_service.map(|c| (&*c.name, &*c.hash)).collect();
        lock(&self.versions).retain(|(name, digest), _| keep.iter().any(|(n, h)| n == name && *h == hex(digest)));
    }

    /// How many plugin versions are tracked.
    pub fn len(&self) -> usize {
        lock(&self.versions).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of `bytes`, lowercase hex: how plugin versions are named and pinned.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes).into())
}

/// Which kind of plugin a component is, by the interface it exports.
pub fn kind_of(compiled: &CompiledPlugin) -> Option<crate::config::PluginKind> {
    let engine = compiled.component.engine();
    compiled.component.component_type().exports(engine).find_map(|(name, _)| {
        if name.starts_with("berry:gateway/strategy@") {
            Some(crate::config::PluginKind::Strategy)
        } else if name.starts_with("berry:gateway/auth@") {
            Some(crate::config::PluginKind::Auth)
        } else {
            None
        }
    })
}

/// A plugin version: its name and the SHA-256 of its bytes.
type VersionKey = (String, [u8; 32]);

static ENGINE: OnceLock<Result<PluginEngine, String>> = OnceLock::new();

/// The engine, created on first use.
pub fn engine() -> Result<&'static PluginEngine, PluginError> {
    ENGINE
        .get_or_init(PluginEngine::new)
        .as_ref()
        .map_err(|message| PluginError::Load { plugin: "(engine)".into(), message: message.clone() })
}

impl PluginEngine {
    fn new() -> Result<PluginEngine, String> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        // Deadlines: wall-clock interruption, checked at loop headers and calls.
        config.epoch_interruption(true);
        // Fuel bounds the work of one call deterministically, independent of load.
        config.consume_fuel(true);
        config.cranelift_opt_level(OptLevel::Speed);
        let mut pool = PoolingAllocationConfig::default();
        // A Rust wasip2 component is a handful of core instances around one memory.
        // These totals cover ~100 live plugin instances (warm pools of every plugin of
        // two snapshots during a swap); memory is reserved lazily, so they cost
        // address space, not RSS.
        pool.total_component_instances(256);
        pool.total_core_instances(2048);
        pool.total_memories(512);
        pool.total_tables(1024);
        pool.max_memory_size(super::Limits::MAX_MEMORY_BYTES);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| format!("cannot create the wasm engine: {e:#}"))?;

        let mut strategy_linker = Linker::new(&engine);
        let mut auth_linker = Linker::new(&engine);
        strategy_world::StrategyPlugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut strategy_linker,
            |s| s,
        )
        .map_err(|e| format!("linking the strategy world: {e:#}"))?;
        auth_world::AuthPlugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut auth_linker, |s| s)
            .map_err(|e| format!("linking the auth world: {e:#}"))?;
        // The frozen 0.1 contract's imports, for plugins built against it.
        v0_1::strategy::StrategyPlugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut strategy_linker,
            |s| s,
        )
        .map_err(|e| format!("linking the 0.1 strategy world: {e:#}"))?;
        v0_1::auth::AuthPlugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut auth_linker, |s| s)
            .map_err(|e| format!("linking the 0.1 auth world: {e:#}"))?;
        for linker in [&mut strategy_linker, &mut auth_linker] {
            super::wasi::add_to_linker(linker).map_err(|e| format!("linking WASI: {e:#}"))?;
        }

        spawn_epoch_ticker(engine.weak());
        Ok(PluginEngine { engine, strategy_linker, auth_linker, compiled: Mutex::new(CompiledCache::default()) })
    }
}

/// Advance the engine's epoch every tick, for as long as the engine lives.
fn spawn_epoch_ticker(engine: wasmtime::EngineWeak) {
    let spawned = std::thread::Builder::new().name("berry-epoch".into()).spawn(move || {
        while let Some(engine) = engine.upgrade() {
            engine.increment_epoch();
            drop(engine);
            std::thread::sleep(EPOCH_TICK);
        }
    });
    if let Err(e) = spawned {
        tracing::error!("cannot start the plugin epoch thread, deadlines will not fire: {e}");
    }
}

/// The linker for one component: the world's own imports and the WASI a plugin
/// gets (`wasi.rs`: clocks, randomness, environment, stdout and stderr into the
/// log), and every other import (the WASI interfaces Rust's std links in: files,
/// sockets…) defined as a function that traps.
///
/// Plugins get no other capability: what they need comes from the host interface
/// (log, clock) and the per-call inputs (a random number).
pub fn linker_for(base: &Linker<HostState>, component: &Component) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = base.clone();
    stub_unknown_imports(&mut linker, component)?;
    Ok(linker)
}

/// Define every import of `component` the base linker does not, as a function that
/// traps (and a resource nothing can make). Wasmtime's `define_unknown_imports_as_traps`
/// would do it, but it stubs a whole instance under the exact version the component
/// names (`wasi:clocks/monotonic-clock@0.2.6`), which then hides the base linker's
/// semver-compatible definition (`@0.2.12`): interfaces the base linker has are left
/// alone here, whatever 0.2.x version the plugin was built against.
fn stub_unknown_imports(linker: &mut Linker<HostState>, component: &Component) -> wasmtime::Result<()> {
    use wasmtime::component::ResourceType;
    use wasmtime::component::types::ComponentItem;
    let engine = component.engine().clone();
    let stub = |linker: &mut wasmtime::component::LinkerInstance<'_, HostState>,
                qualified: String,
                name: &str,
                item: &ComponentItem|
     -> wasmtime::Result<()> {
        match item {
            ComponentItem::ComponentFunc(_) => linker.func_new(name, move |_, _, _, _| {
                wasmtime::bail!(
                    "the plugin called `{qualified}`, which plugins do not get (no files, network or environment)"
                )
            }),
            ComponentItem::Resource(_) => linker.resource(name, ResourceType::host::<()>(), |_, _| Ok(())),
            _ => Ok(()),
        }
    };
    for (import, item) in component.component_type().imports(&engine) {
        let interface = import.split_once('@').map_or(import, |(interface, _)| interface);
        if super::wasi::LINKED.contains(&interface) || interface.starts_with("berry:gateway/") {
            continue;
        }
        match &item.ty {
            ComponentItem::ComponentInstance(instance) => {
                let mut scope = linker.instance(import)?;
                for (name, export) in instance.exports(&engine) {
                    stub(&mut scope, format!("{import}#{name}"), name, &export.ty)?;
                }
            }
            other => stub(&mut linker.root(), import.to_string(), import, other)?,
        }
    }
    Ok(())
}

/// A compiled plugin: what every config snapshot that uses it shares.
#[derive(Clone)]
pub struct CompiledPlugin {
    pub name: Arc<str>,
    pub component: Component,
    /// SHA-256 of the component bytes, lowercase hex.
    pub hash: Arc<str>,
    /// Where it came from: "stock", "upload", or a file path.
    pub source: Arc<str>,
    /// The WIT version stamped by the SDK, if any.
    pub sdk_version: Option<Arc<str>>,
    /// Whether the host must call the strategy's `observe` (the SDK's `OBSERVES`).
    pub observes: bool,
    /// When this version (name + hash) was first loaded by this process.
    pub loaded_at: SystemTime,
    pub stats: Arc<CallStats>,
}

/// Check the version stamp, then compile (or take from the memory or disk cache).
pub fn compile(name: &str, source: &str, bytes: &[u8], versions: &Versions) -> Result<CompiledPlugin, PluginError> {
    let pe = engine()?;
    let stamps = version::check(name, bytes)?;
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    let hash = hex(&digest);
    let cached = lock(&pe.compiled).get(&digest);
    let component = match cached {
        Some(c) => c,
        None => {
            // Compiling happens outside the lock: a slow compile must not stall others.
            let c = match cache::load(&pe.engine, &hash) {
                Some(c) => c,
                None => {
                    let c = Component::new(&pe.engine, bytes)
                        .map_err(|e| load_err(name, format!("not a valid component: {e:#}")))?;
                    cache::store(&pe.engine, &hash, &c);
                    c
                }
            };
            lock(&pe.compiled).insert(digest, c.clone());
            c
        }
    };
    let (stats, loaded_at) = lock(&versions.versions)
        .entry((name.to_string(), digest))
        .or_insert_with(|| {
            let labels = crate::metrics::PluginLabels { plugin: name.to_string() };
            let m = &versions.metrics;
            let metrics = super::pool::PluginMetrics {
                calls: m.plugin_calls.get_or_create(&labels).clone(),
                failures: m.plugin_failures.get_or_create(&labels).clone(),
                input_failures: m.plugin_input_failures.get_or_create(&labels).clone(),
                seconds: m.plugin_call_seconds.get_or_create(&labels).clone(),
            };
            (Arc::new(CallStats { metrics: Some(metrics), ..CallStats::default() }), SystemTime::now())
        })
        .clone();
    Ok(CompiledPlugin {
        name: name.into(),
        component,
        hash: hash.into(),
        source: source.into(),
        sdk_version: stamps.sdk_version.map(Into::into),
        observes: stamps.observes,
        loaded_at,
        stats,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn load_err(plugin: &str, message: impl Into<String>) -> PluginError {
    PluginError::Load { plugin: plugin.to_string(), message: message.into() }
}
