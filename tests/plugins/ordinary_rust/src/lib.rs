//! A strategy written the way ordinary Rust is: a `HashMap` (whose hasher asks WASI
//! for random keys), `serde_json` for its config, `regex` for matching, and the
//! clocks (`SystemTime`, `Instant`). It ranks backends whose provider matches the
//! configured pattern first, in configuration order.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use berry_plugin_sdk::strategy::{Context, Strategy};
use regex::Regex;
use serde::Deserialize;

#[derive(Deserialize)]
struct Config {
    prefer: String,
}

struct OrdinaryRust {
    prefer: Regex,
    /// How often each model name appears across the routes (just to use a HashMap).
    seen: HashMap<String, usize>,
}

impl Strategy for OrdinaryRust {
    fn new(config: &str) -> Result<Self, String> {
        let started = Instant::now();
        let config: Config = serde_json::from_str(config).map_err(|e| format!("config: {e}"))?;
        let prefer = Regex::new(&config.prefer).map_err(|e| format!("prefer: {e}"))?;
        let since_epoch = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_err(|e| e.to_string())?;
        if since_epoch.as_secs() < 1_600_000_000 {
            return Err("the wall clock is not working".into());
        }
        let _ = started.elapsed();
        Ok(OrdinaryRust { prefer, seen: HashMap::new() })
    }

    fn select(&self, ctx: &Context) -> Vec<u32> {
        let mut counts = self.seen.clone();
        let usable = ctx.usable();
        for &i in &usable {
            *counts.entry(ctx.backend(i).model.clone()).or_default() += 1;
        }
        let (mut first, rest): (Vec<u32>, Vec<u32>) =
            usable.into_iter().partition(|&i| self.prefer.is_match(&ctx.backend(i).provider));
        first.extend(rest);
        first
    }
}

berry_plugin_sdk::export_strategy!(OrdinaryRust);
