//! `random`: a uniformly random order of the healthy backends.

use berry_plugin_sdk::strategy::{Context, Explanation, Strategy, explain_primary, next_random};

struct Random;

impl Strategy for Random {
    // Ranks from the live state alone: nothing to learn from outcomes.
    const OBSERVES: bool = false;

    fn new(_config: &str) -> Result<Self, String> {
        Ok(Random)
    }

    fn select(&self, ctx: &Context) -> Vec<u32> {
        let (mut order, later) = ctx.admitted();
        if !ctx.any_healthy() {
            return order;
        }
        // Fisher–Yates, fed by a splitmix stream seeded with the host's random number
        // (offset, so it is independent of the draws `admitted` made).
        let mut random = ctx.request.random ^ 0x5DEE_CE66_D1CE_4E5B;
        for i in (1..order.len()).rev() {
            random = next_random(random);
            let j = (random % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        order.extend(later);
        order
    }

    fn explain(&self, ctx: &Context) -> Vec<Explanation> {
        let (uniform, _) = ctx.admitted();
        explain_primary(ctx, &uniform)
    }
}

berry_plugin_sdk::export_strategy!(Random);
