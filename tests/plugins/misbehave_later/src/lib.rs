//! A strategy that works — it passes the trial a gateway gives a plugin before it
//! serves — until the request time reaches `from_ms` (its config), then misbehaves
//! on every call: `how` = "trap", "loop", "hungry" (allocates without bound),
//! "empty" (answers nothing) or "bad_indices" (answers indices the route lacks).
//! What a plugin that breaks at run time looks like, to a gateway that must contain it.

use berry_plugin_sdk::strategy::{Context, Strategy};
use serde::Deserialize;

#[derive(Deserialize)]
struct MisbehaveLater {
    from_ms: u64,
    how: String,
}

impl Strategy for MisbehaveLater {
    fn new(config: &str) -> Result<Self, String> {
        serde_json::from_str(config).map_err(|e| format!("config: {e}"))
    }

    const OBSERVES: bool = false;

    fn select(&self, ctx: &Context) -> Vec<u32> {
        if ctx.request.now_ms < self.from_ms {
            return ctx.usable();
        }
        match self.how.as_str() {
            "trap" => panic!("misbehave_later: refusing route {}", ctx.request.route),
            "loop" => {
                let mut n = ctx.request.random;
                loop {
                    n = std::hint::black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            "hungry" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "empty" => Vec::new(),
            _ => vec![ctx.len() + 7, ctx.len() + 8],
        }
    }
}

berry_plugin_sdk::export_strategy!(MisbehaveLater);
