//! `smart_ai`: weighted random over *effective* weights that learn from outcomes.
//!
//! ```text
//! effective = weight × confidence_factor × stability_bonus × recovery_factor
//! confidence_factor = min(sqrt(c)·0.7 + 0.3, 1)
//! ```
//!
//! The confidence `c` of each backend is a score the host keeps for this strategy:
//! `observe` moves it up on success and down by a per-error-class penalty, clamped to
//! `[min_confidence, 1]`; with time decay it drifts back toward `initial_confidence`
//! while a backend is idle. `exploration_ratio` of requests pick uniformly among the
//! candidates so low-confidence backends keep being measured. Unhealthy `per_request`
//! backends stay candidates at 10% weight: they are never probed, so real traffic is
//! the only way to see them recover.
//!
//! `select` and `explain` (what `/smart-ai/weights` shows) share `candidates` and `weigh`.

use berry_plugin_sdk::strategy::{
    BackendState, BillingMode, Context, Explanation, Observation, Outcome, Strategy, explain_weighted, next_random,
    unit_float, weighted_order,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    initial_confidence: f64,
    min_confidence: f64,
    enable_time_decay: bool,
    /// Idle time after which a score has moved half-way back to `initial_confidence`.
    decay_half_life_seconds: f64,
    exploration_ratio: f64,
    non_premium_stability_bonus: f64,
    confidence_adjustments: Adjustments,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Adjustments {
    success_boost: f64,
    network_error_penalty: f64,
    auth_error_penalty: f64,
    rate_limit_penalty: f64,
    server_error_penalty: f64,
    model_error_penalty: f64,
    timeout_penalty: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            initial_confidence: 0.8,
            min_confidence: 0.05,
            enable_time_decay: true,
            decay_half_life_seconds: 300.0,
            exploration_ratio: 0.2,
            non_premium_stability_bonus: 1.1,
            confidence_adjustments: Adjustments::default(),
        }
    }
}

impl Default for Adjustments {
    fn default() -> Self {
        Adjustments {
            success_boost: 0.1,
            network_error_penalty: 0.3,
            auth_error_penalty: 0.8,
            rate_limit_penalty: 0.1,
            server_error_penalty: 0.2,
            model_error_penalty: 0.3,
            timeout_penalty: 0.2,
        }
    }
}

/// Weight share kept by an unhealthy `per_request` backend.
const UNHEALTHY_PER_REQUEST_FACTOR: f64 = 0.1;

struct SmartAi {
    settings: Settings,
}

impl SmartAi {
    /// The backend's confidence now: its kept score (or the initial confidence),
    /// decayed toward the initial confidence for the time it has been idle.
    fn confidence(&self, state: &BackendState, now_ms: u64) -> f64 {
        let s = &self.settings;
        let Some(score) = state.score else {
            return s.initial_confidence;
        };
        if !s.enable_time_decay || state.score_updated_ms == 0 || s.decay_half_life_seconds <= 0.0 {
            return score;
        }
        let idle_s = now_ms.saturating_sub(state.score_updated_ms) as f64 / 1000.0;
        // 0.5^x as 2^-x: the same value by a cheaper libm routine (wasm has no
        // native pow; pow is a log, a multiply and an exp), run per backend per request.
        let keep = (-idle_s / s.decay_half_life_seconds).exp2();
        s.initial_confidence + (score - s.initial_confidence) * keep
    }

    /// The backends that may be picked: enabled and healthy ones (plus unhealthy
    /// `per_request` ones, which are never probed), or the least recently failed
    /// order when nothing is healthy.
    fn candidates(&self, ctx: &Context) -> Vec<u32> {
        if !ctx.any_healthy() {
            return ctx.usable();
        }
        (0..ctx.len())
            .filter(|&i| {
                let (b, st) = (ctx.backend(i), ctx.state(i));
                b.enabled && (st.healthy || b.billing == BillingMode::PerRequest)
            })
            .collect()
    }

    /// A candidate's effective weight and the factors it is the product of.
    fn weigh(&self, ctx: &Context, i: u32) -> Weighing {
        let (backend, state) = (ctx.backend(i), ctx.state(i));
        let confidence = self.confidence(state, ctx.request.now_ms);
        let confidence_factor = (confidence.sqrt() * 0.7 + 0.3).min(1.0);
        let premium = backend.tags.iter().any(|t| t == "premium");
        let stability = if !premium && confidence > 0.9 { self.settings.non_premium_stability_bonus } else { 1.0 };
        let recovery = if state.healthy { state.recovery_factor } else { UNHEALTHY_PER_REQUEST_FACTOR };
        Weighing {
            weight: backend.weight * confidence_factor * stability * recovery,
            base: backend.weight,
            confidence,
            confidence_factor,
            stability,
            recovery,
        }
    }

    /// Effective weight per backend (0 for non-candidates), indexed by backend.
    fn weights(&self, ctx: &Context, candidates: &[u32]) -> Vec<f64> {
        let mut weights = vec![0.0; ctx.len() as usize];
        for &i in candidates {
            weights[i as usize] = self.weigh(ctx, i).weight;
        }
        weights
    }
}

/// One backend's effective weight, with its factors (what `explain` shows).
#[derive(Clone, Copy)]
struct Weighing {
    weight: f64,
    base: f64,
    confidence: f64,
    confidence_factor: f64,
    stability: f64,
    recovery: f64,
}

impl Weighing {
    fn factors(&self) -> Vec<(String, f64)> {
        vec![
            ("weight".to_string(), self.base),
            ("confidence".to_string(), self.confidence),
            ("confidence_factor".to_string(), self.confidence_factor),
            ("stability_bonus".to_string(), self.stability),
            ("recovery_factor".to_string(), self.recovery),
        ]
    }
}

impl Strategy for SmartAi {
    fn new(config: &str) -> Result<Self, String> {
        let settings: Settings = serde_json::from_str(config).map_err(|e| format!("smart_ai settings: {e}"))?;
        if !(0.0..=1.0).contains(&settings.exploration_ratio) {
            return Err("smart_ai settings: exploration_ratio must be within [0, 1]".into());
        }
        if !(settings.min_confidence > 0.0
            && settings.min_confidence <= settings.initial_confidence
            && settings.initial_confidence <= 1.0)
        {
            return Err("smart_ai settings: need 0 < min_confidence <= initial_confidence <= 1".into());
        }
        Ok(SmartAi { settings })
    }

    fn select(&self, ctx: &Context) -> Vec<u32> {
        // Per request: numbers only; the factor names are built by `explain` alone.
        let candidates = self.candidates(ctx);
        if !ctx.any_healthy() {
            return candidates;
        }
        let weights = self.weights(ctx, &candidates);
        let explore = next_random(ctx.request.random);
        if candidates.len() > 1 && unit_float(explore) < self.settings.exploration_ratio {
            // Exploration: a uniform primary, then the rest by effective weight.
            let primary = candidates[(next_random(explore) % candidates.len() as u64) as usize];
            let mut order: Vec<u32> = candidates.iter().copied().filter(|&i| i != primary).collect();
            order.sort_by(|&a, &b| weights[b as usize].total_cmp(&weights[a as usize]));
            order.insert(0, primary);
            return order;
        }
        weighted_order(&candidates, &weights, ctx.request.random)
    }

    fn observe(&self, o: &Observation) -> Option<f64> {
        let a = &self.settings.confidence_adjustments;
        let delta = match o.outcome {
            Outcome::Success => a.success_boost,
            Outcome::Network => -a.network_error_penalty,
            Outcome::Timeout => -a.timeout_penalty,
            Outcome::Auth => -a.auth_error_penalty,
            Outcome::RateLimit => -a.rate_limit_penalty,
            Outcome::Server => -a.server_error_penalty,
            Outcome::Model => -a.model_error_penalty,
            // The caller's own bad request says nothing about the backend.
            Outcome::Client => return None,
        };
        let current = self.confidence(o.state, o.request.now_ms);
        Some((current + delta).clamp(self.settings.min_confidence, 1.0))
    }

    fn explain(&self, ctx: &Context) -> Vec<Explanation> {
        let candidates = self.candidates(ctx);
        let rows = (0..ctx.len())
            .map(|i| {
                if candidates.contains(&i) {
                    let w = self.weigh(ctx, i);
                    (w.weight, w.factors())
                } else {
                    (0.0, Vec::new())
                }
            })
            .collect::<Vec<_>>();
        if !ctx.any_healthy() {
            // `select` returns the least-recently-failed order as is: the first wins.
            return rows
                .into_iter()
                .enumerate()
                .map(|(i, (weight, factors))| {
                    let probability = if candidates.first() == Some(&(i as u32)) { 1.0 } else { 0.0 };
                    Explanation { weight, probability, factors }
                })
                .collect();
        }
        let exploration = if candidates.len() > 1 { self.settings.exploration_ratio } else { 0.0 };
        explain_weighted(rows, exploration)
    }
}

berry_plugin_sdk::export_strategy!(SmartAi);
