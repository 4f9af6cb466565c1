//! A strategy whose `select` never returns: the deadline must stop it.

use berry_plugin_sdk::strategy::{Context, Strategy};

struct Looping;

impl Strategy for Looping {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(Looping)
    }

    fn select(&self, ctx: &Context) -> Vec<u32> {
        let mut n = ctx.request.random;
        loop {
            n = std::hint::black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
            if n == 0 && std::hint::black_box(false) {
                return vec![];
            }
        }
    }
}

berry_plugin_sdk::export_strategy!(Looping);
