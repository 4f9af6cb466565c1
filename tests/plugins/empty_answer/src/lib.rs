//! A strategy that ranks nothing: every request would fall back to the host's order.

use berry_plugin_sdk::strategy::{Context, Strategy};

struct EmptyAnswer;

impl Strategy for EmptyAnswer {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(EmptyAnswer)
    }

    const OBSERVES: bool = false;

    fn select(&self, _ctx: &Context) -> Vec<u32> {
        Vec::new()
    }
}

berry_plugin_sdk::export_strategy!(EmptyAnswer);
