//! Always ranks the last backend first (see `pick_first`).

use berry_plugin_sdk::strategy::{Context, Strategy};

struct PickLast;

impl Strategy for PickLast {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(PickLast)
    }

    fn select(&self, ctx: &Context) -> Vec<u32> {
        (0..ctx.len()).rev().collect()
    }
}

berry_plugin_sdk::export_strategy!(PickLast);
