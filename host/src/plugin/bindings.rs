//! Host-side bindings generated from `wit/`, one module per world. The `host`
//! interface is generated once (in `strategy`) and shared by `auth`.

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
