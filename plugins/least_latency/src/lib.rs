//! `least_latency`: lowest moving-average latency first. Backends with no latency data
//! yet (and no failures) go first, so they get measured.

use berry_plugin_sdk::strategy::{Context, Explanation, Strategy, explain_primary};

struct LeastLatency;

impl Strategy for LeastLatency {
    // Ranks from the live state alone: nothing to learn from outcomes.
    const OBSERVES: bool = false;

    fn new(_config: &str) -> Result<Self, String> {
        Ok(LeastLatency)
    }

    fn select(&self, ctx: &Context) -> Vec<u32> {
        let (mut order, mut later) = ctx.admitted();
        if !ctx.any_healthy() {
            return order;
        }
        // Unmeasured, never-failed backends sort as latency -1 (first); unmeasured
        // failing ones as +inf (last), so a dead new backend is not tried first forever.
        let key = |i: u32| {
            let state = ctx.state(i);
            match state.latency_ms {
                Some(ms) => ms,
                None if state.consecutive_failures == 0 => -1.0,
                None => f64::INFINITY,
            }
        };
        order.sort_by(|&a, &b| key(a).total_cmp(&key(b)));
        later.sort_by(|&a, &b| key(a).total_cmp(&key(b)));
        order.extend(later);
        order
    }

    fn explain(&self, ctx: &Context) -> Vec<Explanation> {
        let primary: Vec<u32> = self.select(ctx).into_iter().take(1).collect();
        explain_primary(ctx, &primary)
    }
}

berry_plugin_sdk::export_strategy!(LeastLatency);
