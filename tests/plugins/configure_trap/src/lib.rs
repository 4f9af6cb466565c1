//! A strategy that panics while configuring: the smoke call at load must reject it.

use berry_plugin_sdk::strategy::{Context, Strategy};

struct ConfigureTrap;

impl Strategy for ConfigureTrap {
    fn new(config: &str) -> Result<Self, String> {
        panic!("configure_trap: cannot make sense of {} bytes of config", config.len())
    }

    fn select(&self, ctx: &Context) -> Vec<u32> {
        ctx.usable()
    }
}

berry_plugin_sdk::export_strategy!(ConfigureTrap);
