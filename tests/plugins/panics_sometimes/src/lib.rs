//! A strategy with a bug on some requests: it panics on every fourth sequence number.

use berry_plugin_sdk::strategy::{Context, Strategy};

struct PanicsSometimes;

impl Strategy for PanicsSometimes {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(PanicsSometimes)
    }

    const OBSERVES: bool = false;

    fn select(&self, ctx: &Context) -> Vec<u32> {
        if ctx.request.sequence % 4 == 3 {
            panic!("panics_sometimes: sequence {} is one too many", ctx.request.sequence);
        }
        ctx.usable()
    }
}

berry_plugin_sdk::export_strategy!(PanicsSometimes);
