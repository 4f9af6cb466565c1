//! A strategy that traps (panics) on every `select`.

use berry_plugin_sdk::strategy::{Context, Strategy};

struct Trapping;

impl Strategy for Trapping {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(Trapping)
    }

    fn select(&self, ctx: &Context) -> Vec<u32> {
        panic!("trapping plugin: refusing route {}", ctx.request.route)
    }
}

berry_plugin_sdk::export_strategy!(Trapping);
