//! `tag_router`: send each caller to the backends meant for them.
//!
//! Config maps a caller's tag (from the auth policy, e.g. `[users.X] tags`) to a
//! backend tag:
//!
//! ```toml
//! [plugins.tag_router]
//! path = "examples/target/wasm32-wasip2/release/tag_router.wasm"
//! kind = "strategy"
//! config = { routes = { "free-tier" = "cheap", "enterprise" = "premium" } }
//! ```
//!
//! A caller tagged `free-tier` goes to backends tagged `cheap` (weighted among them);
//! the other backends follow as fallbacks. Callers with no mapped tag get plain
//! weighted routing.

use std::collections::BTreeMap;

use berry_plugin_sdk::strategy::{Context, Strategy, weighted_order};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TagRouter {
    /// Caller tag → backend tag.
    routes: BTreeMap<String, String>,
}

impl Strategy for TagRouter {
    fn new(config: &str) -> Result<Self, String> {
        serde_json::from_str(config).map_err(|e| format!("tag_router config: {e}"))
    }

    fn select(&self, ctx: &Context) -> Vec<u32> {
        let weights: Vec<f64> = (0..ctx.len()).map(|i| ctx.recovering_weight(i)).collect();
        let order = weighted_order(&ctx.usable(), &weights, ctx.request.random);
        let wanted = ctx.user_tags().iter().find_map(|t| self.routes.get(t));
        let Some(wanted) = wanted else { return order };
        // Matching backends first; `sort_by_key` is stable, so each group keeps
        // its weighted order.
        let mut order = order;
        order.sort_by_key(|&i| !ctx.backend(i).tags.contains(wanted));
        order
    }
}

berry_plugin_sdk::export_strategy!(TagRouter);
