//! `random`: a uniformly random order of the healthy backends.

use berry_plugin_sdk::strategy::{Context, Strategy, next_random};

struct Random;

impl Strategy for Random {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(Random)
    }

    fn select(&self, ctx: &Context) -> Vec<u32> {
        let mut usable = ctx.usable();
        if !ctx.any_healthy() {
            return usable;
        }
        // Fisher–Yates, fed by a splitmix stream seeded with the host's random number.
        let mut random = ctx.request.random;
        for i in (1..usable.len()).rev() {
            random = next_random(random);
            let j = (random % (i as u64 + 1)) as usize;
            usable.swap(i, j);
        }
        usable
    }
}

berry_plugin_sdk::export_strategy!(Random);
