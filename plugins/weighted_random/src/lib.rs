//! `weighted_random`: the primary is drawn among healthy backends with probability
//! proportional to its weight (scaled by its recovery stage); the rest follow by weight.

use berry_plugin_sdk::strategy::{Context, Explanation, Strategy, explain_by_weight, weighted_order};

struct WeightedRandom;

impl Strategy for WeightedRandom {
    // Ranks from the live state alone: nothing to learn from outcomes.
    const OBSERVES: bool = false;

    fn new(_config: &str) -> Result<Self, String> {
        Ok(WeightedRandom)
    }

    fn select(&self, ctx: &Context) -> Vec<u32> {
        let usable = ctx.usable();
        if !ctx.any_healthy() {
            return usable;
        }
        let weights: Vec<f64> = (0..ctx.len()).map(|i| ctx.recovering_weight(i)).collect();
        weighted_order(&usable, &weights, ctx.request.random)
    }

    fn explain(&self, ctx: &Context) -> Vec<Explanation> {
        explain_by_weight(ctx)
    }
}

berry_plugin_sdk::export_strategy!(WeightedRandom);
