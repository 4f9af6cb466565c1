//! Always ranks the first backend first (for swap tests: observably different
//! from `pick_last`).

use berry_plugin_sdk::strategy::{Context, Strategy};

struct PickFirst;

impl Strategy for PickFirst {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(PickFirst)
    }

    fn select(&self, ctx: &Context) -> Vec<u32> {
        (0..ctx.len()).collect()
    }
}

berry_plugin_sdk::export_strategy!(PickFirst);
