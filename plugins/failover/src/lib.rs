//! `failover`: by `priority` ascending (ties broken by higher weight, then
//! configuration order); the first healthy backend is the primary.

use berry_plugin_sdk::strategy::{Context, Strategy};

struct Failover;

impl Strategy for Failover {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(Failover)
    }

    fn select(&self, ctx: &Context) -> Vec<u32> {
        let mut usable = ctx.usable();
        if !ctx.any_healthy() {
            return usable;
        }
        // `sort_by` is stable: equal priority and weight keep configuration order.
        usable.sort_by(|&a, &b| {
            let (x, y) = (ctx.backend(a), ctx.backend(b));
            x.priority.cmp(&y.priority).then(y.weight.total_cmp(&x.weight))
        });
        usable
    }
}

berry_plugin_sdk::export_strategy!(Failover);
