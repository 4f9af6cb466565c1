//! `round_robin`: healthy backends in turn, driven by the host's per-model request
//! sequence number, so every instance (and every swapped-in version) agrees.

use berry_plugin_sdk::strategy::{Context, Explanation, Strategy, explain_primary};

struct RoundRobin;

impl Strategy for RoundRobin {
    // Ranks from the live state alone: nothing to learn from outcomes.
    const OBSERVES: bool = false;

    fn new(_config: &str) -> Result<Self, String> {
        Ok(RoundRobin)
    }

    fn select(&self, ctx: &Context) -> Vec<u32> {
        let (mut order, later) = ctx.admitted();
        if ctx.any_healthy() && !order.is_empty() {
            let start = (ctx.request.sequence % order.len() as u64) as usize;
            order.rotate_left(start);
        }
        order.extend(later);
        order
    }

    fn explain(&self, ctx: &Context) -> Vec<Explanation> {
        // Every admitted backend takes its turn as primary.
        let (rotation, _) = ctx.admitted();
        explain_primary(ctx, &rotation)
    }
}

berry_plugin_sdk::export_strategy!(RoundRobin);
