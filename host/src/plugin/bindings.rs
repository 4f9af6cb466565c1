//! Host-side bindings generated from `wit/`, one module per world and contract
//! version. The `host` interface is generated once per version (in `strategy`)
//! and shared by `auth`.
//!
//! `berry:gateway@0.2.0` (`wit/berry.wit`) is the contract the gateway speaks; the
//! frozen `0.1.0` (`wit/0.1.0/`) is still loaded, through the adapters in
//! `strategy.rs` and `auth.rs`.

pub mod strategy {
    wasmtime::component::bindgen!({
        world: "strategy-plugin",
        path: "../wit",
    });
}

pub mod auth {
    wasmtime::component::bindgen!({
        world: "auth-plugin",
        path: "../wit",
        with: {
            "berry:gateway/host": super::strategy::berry::gateway::host,
        },
    });
}

/// The frozen contract 0.1.0.
pub mod v0_1 {
    pub mod strategy {
        wasmtime::component::bindgen!({
            world: "strategy-plugin",
            path: "../wit/0.1.0",
        });
    }

    pub mod auth {
        wasmtime::component::bindgen!({
            world: "auth-plugin",
            path: "../wit/0.1.0",
            with: {
                "berry:gateway/host": super::strategy::berry::gateway::host,
            },
        });
    }
}
