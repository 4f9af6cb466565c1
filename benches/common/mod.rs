//! What the criterion benches share: one config with a route per stock strategy at
//! 8 and 64 backends, and a gateway started from it (plugins compiled and warm).

#![allow(dead_code)] // each bench uses part of this
#![allow(clippy::panic)]

use std::fmt::Write;
use std::sync::Arc;

use berry::config::{self, Config};
use berry::gateway::Gateway;

pub const TOKEN: &str = "berry-bench-token";
/// Backend counts every strategy is measured at.
pub const SIZES: [usize; 2] = [8, 64];

/// The route name for `strategy` at `size` backends.
pub fn route_name(strategy: &str, size: usize) -> String {
    format!("{strategy}-{size}")
}

/// 8 providers × 8 models on one embedded mock: a route of 64 backends uses all
/// of them, a route of 8 one model on each provider. Weights and priorities vary so
/// weighted and priority strategies do real work. 100 users, as a small deployment
/// has; the bench user is the last one added.
pub fn config_toml() -> String {
    // No usage ledger: these benchmarks time the request path, not SQLite.
    let mut t = String::from("[settings]\nmax_retries = 2\nusage_db = \"\"\n");
    for p in 0..8 {
        let _ = writeln!(t, "[providers.p{p}]\nbase_url = \"mock://bench?latency_ms=0\"");
        let _ = writeln!(t, "models = [{}]", (0..8).map(|m| format!("\"m{m}\"")).collect::<Vec<_>>().join(", "));
    }
    for strategy in berry::plugin::STOCK_STRATEGIES {
        for size in SIZES {
            let name = route_name(strategy, size);
            let _ = writeln!(t, "[models.{}]\nname = \"{name}\"\nstrategy = \"{strategy}\"", name.replace('-', "_"));
            for i in 0..size {
                let (p, m) = (i % 8, i / 8);
                let _ = writeln!(
                    t,
                    "[[models.{}.backends]]\nprovider = \"p{p}\"\nmodel = \"m{m}\"\nweight = {}\npriority = {}",
                    name.replace('-', "_"),
                    1 + i % 5,
                    i % 3,
                );
            }
        }
    }
    for u in 0..99 {
        let _ = writeln!(t, "[users.u{u}]\ntoken = \"berry-user-{u:03}-token\"\ntags = [\"team-{}\"]", u % 4);
    }
    let _ = writeln!(t, "[users.bench]\ntoken = \"{TOKEN}\"\ntags = [\"team-a\", \"premium\"]");
    // The auth benches measure the policy's call; the principal cache has its own.
    let _ = writeln!(t, "[auth]\ncache_seconds = 0");
    t
}

pub fn config() -> Config {
    config::parse(&config_toml(), &|_| None).unwrap_or_else(|e| panic!("bench config invalid:\n{e}"))
}

/// A runtime for the gateway's background tasks (embedded mock, probes).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("tokio runtime")
}

pub fn gateway(rt: &tokio::runtime::Runtime) -> Arc<Gateway> {
    rt.block_on(Gateway::start(config())).unwrap_or_else(|e| panic!("gateway did not start: {e}"))
}
