//! A strategy that answers indices the route does not have (an off-by-one gone far).

use berry_plugin_sdk::strategy::{Context, Strategy};

struct BadIndices;

impl Strategy for BadIndices {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(BadIndices)
    }

    const OBSERVES: bool = false;

    fn select(&self, ctx: &Context) -> Vec<u32> {
        (0..ctx.len()).map(|i| i + ctx.len()).collect()
    }
}

berry_plugin_sdk::export_strategy!(BadIndices);
