//! `round_robin`: healthy backends in turn, driven by the host's per-model request
//! sequence number, so every instance (and every swapped-in version) agrees.

use berry_plugin_sdk::strategy::{Context, Strategy};

struct RoundRobin;

impl Strategy for RoundRobin {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(RoundRobin)
    }

    fn select(&self, ctx: &Context) -> Vec<u32> {
        let mut usable = ctx.usable();
        if !ctx.any_healthy() || usable.is_empty() {
            return usable;
        }
        let start = (ctx.request.sequence % usable.len() as u64) as usize;
        usable.rotate_left(start);
        usable
    }
}

berry_plugin_sdk::export_strategy!(RoundRobin);
