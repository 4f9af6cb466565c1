//! A strategy that allocates without bound in `select`: the memory cap must stop it.

use berry_plugin_sdk::strategy::{Context, Strategy};

struct Hungry;

impl Strategy for Hungry {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(Hungry)
    }

    fn select(&self, _ctx: &Context) -> Vec<u32> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

berry_plugin_sdk::export_strategy!(Hungry);
