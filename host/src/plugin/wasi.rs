//! The only WASI a plugin gets: randomness and clocks, answered by the host,
//! synchronously, so ordinary Rust works inside a plugin (a `HashMap` asks for random
//! keys; `Instant`, `SystemTime` read the clocks; `serde_json` and `regex` need
//! nothing more). Files, network, environment, stdio stay closed: those imports trap.
//!
//! The randomness is deterministic — every instance of a plugin is seeded alike — so
//! any instance keeps giving the same answer for the same input, as the contract
//! promises. A plugin that needs a fresh random number per request has one in
//! `request.random`.
//!
//! Imports are matched by interface, whatever 0.2.x version the plugin was built
//! against.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasmtime::StoreContextMut;
use wasmtime::component::{Component, ComponentType, Linker, Lower};

use super::sandbox::HostState;

/// Largest random buffer one call may ask for.
const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// `wasi:clocks/wall-clock.datetime`.
#[derive(ComponentType, Lower, Clone, Copy)]
#[component(record)]
struct Datetime {
    seconds: u64,
    nanoseconds: u32,
}

/// What the monotonic clock counts from.
fn process_start() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Define the random and clock functions `component` imports.
pub fn define(linker: &mut Linker<HostState>, component: &Component) -> wasmtime::Result<()> {
    let engine = component.engine().clone();
    let names: Vec<String> = component.component_type().imports(&engine).map(|(name, _)| name.to_string()).collect();
    for name in names {
        let interface = name.split_once('@').map_or(name.as_str(), |(interface, _)| interface);
        let mut instance = match interface {
            "wasi:random/random"
            | "wasi:random/insecure"
            | "wasi:random/insecure-seed"
            | "wasi:clocks/wall-clock"
            | "wasi:clocks/monotonic-clock" => linker.instance(&name)?,
            _ => continue,
        };
        match interface {
            "wasi:random/random" | "wasi:random/insecure" => {
                let prefix = if interface == "wasi:random/random" { "get-random" } else { "get-insecure-random" };
                instance.func_wrap(
                    &format!("{prefix}-bytes"),
                    |mut store: StoreContextMut<'_, HostState>, (len,): (u64,)| {
                        if len > MAX_RANDOM_BYTES {
                            wasmtime::bail!("asked for {len} random bytes (at most {MAX_RANDOM_BYTES})");
                        }
                        let rng = store.data_mut().rng();
                        Ok(((0..len).map(|_| rng.u8(..)).collect::<Vec<u8>>(),))
                    },
                )?;
                instance.func_wrap(&format!("{prefix}-u64"), |mut store: StoreContextMut<'_, HostState>, (): ()| {
                    Ok((store.data_mut().rng().u64(..),))
                })?;
            }
            "wasi:random/insecure-seed" => {
                instance.func_wrap("insecure-seed", |mut store: StoreContextMut<'_, HostState>, (): ()| {
                    let rng = store.data_mut().rng();
                    Ok(((rng.u64(..), rng.u64(..)),))
                })?;
            }
            "wasi:clocks/wall-clock" => {
                instance.func_wrap("now", |_: StoreContextMut<'_, HostState>, (): ()| {
                    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                    Ok((Datetime { seconds: now.as_secs(), nanoseconds: now.subsec_nanos() },))
                })?;
                instance.func_wrap("resolution", |_: StoreContextMut<'_, HostState>, (): ()| {
                    Ok((Datetime { seconds: 0, nanoseconds: 1 },))
                })?;
            }
            _ => {
                // Monotonic: `now` and `resolution`; its pollables (sleeping) trap.
                instance.func_wrap("now", |_: StoreContextMut<'_, HostState>, (): ()| {
                    Ok((process_start().elapsed().as_nanos() as u64,))
                })?;
                instance.func_wrap("resolution", |_: StoreContextMut<'_, HostState>, (): ()| Ok((1u64,)))?;
            }
        }
    }
    Ok(())
}
