//! `failover`: by `priority` ascending (ties broken by higher weight, then
//! configuration order); the first healthy backend is the primary.

use berry_plugin_sdk::strategy::{Context, Explanation, Strategy, explain_primary};

struct Failover;

impl Strategy for Failover {
    // Ranks from the live state alone: nothing to learn from outcomes.
    const OBSERVES: bool = false;

    fn new(_config: &str) -> Result<Self, String> {
        Ok(Failover)
    }

    fn select(&self, ctx: &Context) -> Vec<u32> {
        let (mut order, mut later) = ctx.admitted();
        if !ctx.any_healthy() {
            return order;
        }
        // `sort_by` is stable: equal priority and weight keep configuration order.
        let by_priority = |&a: &u32, &b: &u32| {
            let (x, y) = (ctx.backend(a), ctx.backend(b));
            x.priority.cmp(&y.priority).then(y.weight.total_cmp(&x.weight))
        };
        order.sort_by(by_priority);
        later.sort_by(by_priority);
        order.extend(later);
        order
    }

    fn explain(&self, ctx: &Context) -> Vec<Explanation> {
        let primary: Vec<u32> = self.select(ctx).into_iter().take(1).collect();
        explain_primary(ctx, &primary)
    }
}

berry_plugin_sdk::export_strategy!(Failover);
