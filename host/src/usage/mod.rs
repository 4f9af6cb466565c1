//! Who used what: the usage ledger (one SQLite row per relayed request), prices,
//! and budgets and token limits enforced by reserve → settle.
//!
//! - `ledger.rs`: the database and its one writer thread, off the request path.
//! - `budget.rs`: per-user spend in the current day, month and minute.
//! - `query.rs`: the summaries `/admin/usage` and `berry usage` print.

pub mod budget;
pub mod ledger;
pub mod query;

use std::sync::Arc;

pub use budget::{Amount, Budgets, Refusal, Reservation};
pub use ledger::Ledger;

use crate::config::{BackendType, BillingMode, Prices};
use crate::relay::usage::Usage;

/// One relayed request, as the ledger keeps it. Its names are shared, not copied:
/// the writer thread reads them off the request path.
#[derive(Clone)]
pub struct Record {
    pub time_ms: u64,
    pub request_id: http::HeaderValue,
    pub principal: Arc<crate::plugin::auth::wit::Principal>,
    /// The configured model, or what the client asked for when none matched.
    pub route: Option<Arc<crate::gateway::Route>>,
    pub asked_model: Option<Arc<str>>,
    /// Index of the answering backend in `route`.
    pub backend: Option<u32>,
    /// "chat/completions", "messages", …
    pub endpoint: &'static str,
    pub status: u16,
    pub usage: Usage,
    pub cost: f64,
    pub latency_ms: f64,
    pub first_byte_ms: Option<f64>,
    pub attempts: u32,
    pub stream: bool,
}

/// The gateway's usage accounting: the ledger (if one is configured) and the budgets.
impl Record {
    pub fn model(&self) -> &str {
        self.route.as_ref().map(|r| r.name.as_str()).or(self.asked_model.as_deref()).unwrap_or("-")
    }

    /// The answering backend's provider and upstream model ("" when none answered).
    pub fn backend(&self) -> (&str, &str) {
        match self.route.as_ref().zip(self.backend).and_then(|(r, i)| r.backends.get(i as usize)) {
            Some(b) => (&b.config.provider, &b.config.model),
            None => ("", ""),
        }
    }
}

pub struct Accounting {
    pub ledger: Option<Arc<Ledger>>,
    pub budgets: Arc<Budgets>,
}

impl Accounting {
    /// Open the ledger at `path` (if any) and rebuild this month's spend from it.
    pub fn open(path: Option<&std::path::Path>, retention: std::time::Duration) -> Result<Accounting, String> {
        let budgets = Arc::new(Budgets::default());
        let ledger = match path {
            None => None,
            Some(path) => {
                let ledger = Ledger::open(path, retention)?;
                let now = crate::health::now_ms();
                let since = budget::month_start_ms(budget::month_of(now / budget::DAY_MS));
                let rows = query::spend_since(path, since).map_err(|e| format!("reading {}: {e}", path.display()))?;
                for (user, at_ms, used) in rows {
                    budgets.restore(&user, used, at_ms, now);
                }
                tracing::info!(path = %path.display(), "usage ledger open");
                Some(ledger)
            }
        };
        Ok(Accounting { ledger, budgets })
    }
}

/// What a request cost at `prices`. OpenAI-style input counts include cached input
/// (billed at the cached price); Anthropic's do not (its cache reads are separate).
pub fn cost(usage: &Usage, prices: &Prices, billing: BillingMode, wire: BackendType) -> f64 {
    if billing == BillingMode::PerRequest {
        return prices.per_request;
    }
    let uncached = match wire {
        BackendType::Anthropic => usage.prompt_tokens,
        _ => usage.prompt_tokens.saturating_sub(usage.cached_tokens),
    };
    (uncached as f64 * prices.input_per_mtok
        + usage.cached_tokens as f64 * prices.cached_input_per_mtok
        + usage.completion_tokens as f64 * prices.output_per_mtok)
        / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_follows_each_wire_formats_counting() {
        let prices =
            Prices { input_per_mtok: 2.0, output_per_mtok: 8.0, cached_input_per_mtok: 0.5, per_request: 0.01 };
        let u =
            Usage { prompt_tokens: 1_000_000, completion_tokens: 500_000, cached_tokens: 400_000, reasoning_tokens: 0 };
        // OpenAI: 600k uncached × 2 + 400k cached × 0.5 + 500k × 8.
        assert!((cost(&u, &prices, BillingMode::PerToken, BackendType::OpenAi) - 5.4).abs() < 1e-9);
        // Anthropic: 1M input × 2 + 400k cache reads × 0.5 + 500k × 8.
        assert!((cost(&u, &prices, BillingMode::PerToken, BackendType::Anthropic) - 6.2).abs() < 1e-9);
        assert_eq!(cost(&u, &prices, BillingMode::PerRequest, BackendType::OpenAi), 0.01);
    }
}
