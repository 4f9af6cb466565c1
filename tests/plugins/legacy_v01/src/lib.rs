//! A strategy built against the frozen 0.1 SDK, as a plugin written before 0.2:
//! the gateway must still load it and route with it. It uses every 0.1 call the
//! adapter serves: backends ranked by the score it keeps (+1 per success, -10 per
//! failure; ties: the last backend first), `observe` for the scores, `explain` to
//! show them, and the caller's tags from the request (a caller tagged "first" gets
//! the first backend).

use berry_plugin_sdk::strategy::{Context, Explanation, Observation, Outcome, Strategy};

struct Legacy;

impl Strategy for Legacy {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(Legacy)
    }

    fn select(&self, ctx: &Context) -> Vec<u32> {
        let mut order: Vec<u32> = (0..ctx.len()).rev().collect();
        if ctx.request.user_tags.iter().any(|t| t == "first") {
            order.reverse();
            return order;
        }
        order.sort_by(|&a, &b| score(ctx, b).total_cmp(&score(ctx, a)));
        order
    }

    fn observe(&self, o: &Observation) -> Option<f64> {
        let now = o.state.score.unwrap_or(0.0);
        match o.outcome {
            Outcome::Success => Some(now + 1.0),
            Outcome::Client => None,
            _ => Some(now - 10.0),
        }
    }

    fn explain(&self, ctx: &Context) -> Vec<Explanation> {
        (0..ctx.len())
            .map(|i| Explanation {
                weight: 1.0,
                probability: if i + 1 == ctx.len() { 1.0 } else { 0.0 },
                factors: vec![("score".to_string(), score(ctx, i))],
            })
            .collect()
    }
}

fn score(ctx: &Context, i: u32) -> f64 {
    ctx.state(i).score.unwrap_or(0.0)
}

berry_plugin_sdk::export_strategy!(Legacy);
