//! Backend-selection strategies: implement [`Strategy`], then call
//! [`export_strategy!`](crate::export_strategy).

use std::cell::RefCell;

use crate::bindings::strategy::exports::berry::gateway::strategy as wit;

pub use crate::bindings::strategy::berry::gateway::types::{BillingMode, Circuit, Outcome};
pub use wit::{BackendInfo, Explanation, Request, RouteInfo};

/// The error counters the host keeps per backend, since the gateway started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ErrorCounts {
    pub network: u32,
    pub timeout: u32,
    pub auth: u32,
    pub rate_limit: u32,
    pub server: u32,
    pub model: u32,
}

/// The live state of one backend, as the host knows it now.
///
/// The host sends it as 16 numbers per backend (the contract's flat layout, cheap to
/// cross the sandbox); the SDK reads them back into this.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackendState {
    /// False while the circuit is open, or before a backend has recovered.
    pub healthy: bool,
    pub circuit: Circuit,
    /// Share of its weight the backend should get while recovering: 0.1, 0.3, 0.5,
    /// then 1.0 once fully recovered (1.0 when never failed).
    pub recovery_factor: f64,
    /// Moving average of successful attempt latency, in ms; `None` until the first success.
    pub latency_ms: Option<f64>,
    /// Requests currently in flight on this backend.
    pub in_flight: u32,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Wall-clock time of the last failure in ms since the epoch; 0 if never.
    pub last_failure_ms: u64,
    /// Failure counts by class.
    pub errors: ErrorCounts,
    /// The score this strategy asked the host to keep for the backend (see
    /// [`Strategy::observe`]); `None` until the first.
    pub score: Option<f64>,
    /// Wall-clock time the score was last written, ms since the epoch; 0 if never.
    pub score_updated_ms: u64,
}

/// The contract's flat layouts (`wit/berry.wit`): 16 numbers per backend state,
/// 21 per outcome.
mod flat {
    use super::{BackendState, Circuit, ErrorCounts, Outcome};

    pub const STATE: usize = 16;
    pub const OUTCOME: usize = 5 + STATE;

    pub fn state(n: &[f64]) -> BackendState {
        let at = |i: usize| n.get(i).copied().unwrap_or(f64::NAN);
        let some = |x: f64| x.is_finite().then_some(x);
        let whole = |x: f64| if x.is_finite() && x > 0.0 { x as u64 } else { 0 };
        let count = |i: usize| whole(at(i)) as u32;
        BackendState {
            healthy: at(0) == 1.0,
            circuit: match at(1) as u8 {
                1 => Circuit::Open,
                2 => Circuit::HalfOpen,
                _ => Circuit::Closed,
            },
            recovery_factor: at(2),
            latency_ms: some(at(3)),
            in_flight: count(4),
            consecutive_failures: count(5),
            last_failure_ms: whole(at(6)),
            score: some(at(7)),
            score_updated_ms: whole(at(8)),
            errors: ErrorCounts {
                network: count(9),
                timeout: count(10),
                auth: count(11),
                rate_limit: count(12),
                server: count(13),
                model: count(14),
            },
        }
    }

    pub fn states(numbers: &[f64]) -> Vec<BackendState> {
        numbers.chunks_exact(STATE).map(state).collect()
    }

    pub fn outcome(code: f64) -> Outcome {
        match code as u8 {
            0 => Outcome::Success,
            1 => Outcome::Network,
            2 => Outcome::Timeout,
            3 => Outcome::Auth,
            4 => Outcome::RateLimit,
            5 => Outcome::Server,
            6 => Outcome::Model,
            _ => Outcome::Client,
        }
    }
}

/// A backend-selection strategy.
///
/// The host calls [`Strategy::new`] with the plugin's own configuration (a JSON
/// object as text, `"{}"` when none) once per instance it makes of the plugin — one
/// per core when a configuration is loaded, more only when more calls run at once —
/// then [`Strategy::select`] once per request, on any instance. Keep no per-request
/// state in `self`: the host passes everything (health, latency, counters, a
/// sequence number, a random number, the score kept for you) in the [`Context`].
pub trait Strategy: Sized + 'static {
    /// Parse the plugin configuration. An error rejects the configuration.
    fn new(config: &str) -> Result<Self, String>;

    /// Rank the backends for one request: primary first, then fallbacks.
    /// Return indices into the route's backends. See [`Context::usable`] for the
    /// order every stock strategy starts from.
    fn select(&self, ctx: &Context) -> Vec<u32>;

    /// Whether [`Strategy::observe`] learns anything. A strategy that does not look
    /// at outcomes sets this to `false`, and the host skips the `observe` call of every
    /// attempt (one sandbox call fewer per request). Left `true`, `observe` is always
    /// called, whatever it does.
    const OBSERVES: bool = true;

    /// Learn from the outcome of one attempt. Return a new score to keep for the
    /// backend (it comes back as [`BackendState::score`]), or `None` to keep none.
    fn observe(&self, _observation: &Observation) -> Option<f64> {
        None
    }

    /// How `select` treats each backend now (weight, probability of being ranked
    /// first, and the factors of the weight); shown on the gateway's weights endpoint
    /// and status page. The default explains nothing: the gateway then estimates the
    /// probabilities by sampling this strategy's real `select` (and marks them as
    /// estimated). Override it to show exact figures, computed by the code `select`
    /// uses: [`explain_by_weight`] fits weighted choice, [`explain_primary`] a
    /// decided primary, [`explain_weighted`] any weights.
    fn explain(&self, _ctx: &Context) -> Vec<Explanation> {
        Vec::new()
    }
}

/// Explanations for weighted choice among the usable backends: each one's weight is
/// its configured weight scaled by its recovery stage, 0 for backends `select` would
/// not consider, and its probability is proportional to its weight.
pub fn explain_by_weight(ctx: &Context) -> Vec<Explanation> {
    let usable = ctx.usable();
    let rows: Vec<(f64, Vec<(String, f64)>)> = (0..ctx.len())
        .map(|i| {
            let factors = vec![
                ("weight".to_string(), ctx.backend(i).weight),
                ("recovery".to_string(), ctx.state(i).recovery_factor),
            ];
            let w = if usable.contains(&i) { ctx.recovering_weight(i) } else { 0.0 };
            (w, factors)
        })
        .collect();
    explain_weighted(rows, 0.0)
}

/// Build explanations for a strategy whose primary is decided, not drawn: the
/// backends in `first` share the pick probability evenly (one backend: it is
/// always primary; a rotation: each in turn). Weights are the configured weights
/// scaled by recovery, as `select` sees them.
pub fn explain_primary(ctx: &Context, first: &[u32]) -> Vec<Explanation> {
    (0..ctx.len())
        .map(|i| Explanation {
            weight: ctx.recovering_weight(i),
            probability: if first.contains(&i) { 1.0 / first.len() as f64 } else { 0.0 },
            factors: vec![
                ("weight".to_string(), ctx.backend(i).weight),
                ("recovery".to_string(), ctx.state(i).recovery_factor),
            ],
        })
        .collect()
}

/// Build explanations for weighted choice with `exploration` (a share of requests
/// spread evenly over the backends with weight > 0): probability of backend i is
/// `(1 − exploration)·wᵢ/Σw + exploration/n`.
pub fn explain_weighted(rows: Vec<(f64, Vec<(String, f64)>)>, exploration: f64) -> Vec<Explanation> {
    let total: f64 = rows.iter().map(|(w, _)| w.max(0.0)).sum();
    let n = rows.iter().filter(|(w, _)| *w > 0.0).count() as f64;
    rows.into_iter()
        .map(|(weight, factors)| {
            let probability =
                if weight > 0.0 && total > 0.0 { (1.0 - exploration) * weight / total + exploration / n } else { 0.0 };
            Explanation { weight, probability, factors }
        })
        .collect()
}

/// Everything a strategy may look at for one request.
pub struct Context<'a> {
    pub route: &'a RouteInfo,
    pub request: &'a Request,
    /// Parallel to `route.backends`.
    pub states: &'a [BackendState],
}

impl Context<'_> {
    /// The tags of the authenticated caller (from the auth policy). Asked of the
    /// host on each call (strategies that never look never pay for the strings):
    /// keep the answer if you look more than once. Empty outside `select`.
    pub fn user_tags(&self) -> Vec<String> {
        crate::bindings::strategy::berry::gateway::host::caller_tags()
    }

    /// Number of backends of the route (enabled or not).
    pub fn len(&self) -> u32 {
        self.states.len().min(self.route.backends.len()) as u32
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn backend(&self, index: u32) -> &BackendInfo {
        &self.route.backends[index as usize]
    }

    pub fn state(&self, index: u32) -> &BackendState {
        &self.states[index as usize]
    }

    /// The configured weight scaled by the backend's recovery stage (0.1 → 1.0).
    pub fn recovering_weight(&self, index: u32) -> f64 {
        self.backend(index).weight * self.state(index).recovery_factor
    }

    /// The backends a stock strategy chooses from, per the gateway's rules:
    /// disabled backends never; while any enabled backend is healthy, the healthy
    /// ones in configuration order; when none is healthy, every enabled backend,
    /// least recently failed first, so a request can still try.
    pub fn usable(&self) -> Vec<u32> {
        let enabled = (0..self.len()).filter(|&i| self.backend(i).enabled);
        let healthy: Vec<u32> = enabled.clone().filter(|&i| self.state(i).healthy).collect();
        if !healthy.is_empty() {
            return healthy;
        }
        let mut all: Vec<u32> = enabled.collect();
        all.sort_by_key(|&i| self.state(i).last_failure_ms);
        all
    }

    /// [`Context::usable`] split so that recovering backends get their stage's share:
    /// fully healthy backends are always admitted (first list); a recovering one
    /// (half-open) is admitted with probability equal to its recovery factor
    /// (0.1 → 0.3 → 0.5), otherwise it goes to the second list, which a strategy
    /// appends as the last fallbacks. The draws come from the host's random number,
    /// so the split is reproducible for a given request.
    pub fn admitted(&self) -> (Vec<u32>, Vec<u32>) {
        let usable = self.usable();
        if !self.any_healthy() {
            return (usable, Vec::new());
        }
        let mut random = self.request.random;
        let (mut front, mut back) = (Vec::new(), Vec::new());
        for i in usable {
            let factor = self.state(i).recovery_factor;
            if factor >= 1.0 {
                front.push(i);
                continue;
            }
            random = next_random(random);
            if unit_float(random) < factor { front.push(i) } else { back.push(i) }
        }
        (front, back)
    }

    /// Whether any enabled backend is healthy.
    pub fn any_healthy(&self) -> bool {
        (0..self.len()).any(|i| self.backend(i).enabled && self.state(i).healthy)
    }
}

/// The outcome of one upstream attempt, for [`Strategy::observe`].
pub struct Observation<'a> {
    pub route: &'a RouteInfo,
    pub request: &'a Request,
    pub backend: u32,
    pub info: &'a BackendInfo,
    /// The backend's state before this outcome.
    pub state: &'a BackendState,
    pub outcome: Outcome,
    pub latency_ms: f64,
}

/// Order `candidates` for weighted random choice: the primary is drawn with
/// probability proportional to its weight (using the host's random number), the rest
/// follow by descending weight. Candidates with weight ≤ 0 are only used when every
/// weight is 0, in the order given.
pub fn weighted_order(candidates: &[u32], weights: &[f64], random: u64) -> Vec<u32> {
    let weight = |i: u32| weights.get(i as usize).copied().filter(|w| w.is_finite() && *w > 0.0).unwrap_or(0.0);
    let total: f64 = candidates.iter().map(|&i| weight(i)).sum();
    let mut order: Vec<u32> = candidates.to_vec();
    if total <= 0.0 {
        return order;
    }
    // 53 random bits give a uniform float in [0, 1).
    let mut point = unit_float(random) * total;
    let mut primary = None;
    for (pos, &i) in candidates.iter().enumerate() {
        let w = weight(i);
        if w <= 0.0 {
            continue;
        }
        if point < w {
            primary = Some(pos);
            break;
        }
        point -= w;
    }
    // Floating-point rounding can leave `point` just above the last weight.
    let primary = primary.unwrap_or_else(|| candidates.iter().rposition(|&i| weight(i) > 0.0).unwrap_or(0));
    let first = order.remove(primary);
    order.sort_by(|&a, &b| weight(b).total_cmp(&weight(a)));
    order.insert(0, first);
    order
}

/// A uniform float in [0, 1) from the top 53 bits of `random`.
pub fn unit_float(random: u64) -> f64 {
    (random >> 11) as f64 / (1u64 << 53) as f64
}

/// Mix `random` into a second independent-looking number (splitmix64 step), for
/// strategies that need more than one random draw per request.
pub fn next_random(random: u64) -> u64 {
    let mut z = random.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// === glue called by `export_strategy!` ===

struct Loaded<T> {
    plugin: T,
    routes: Vec<RouteInfo>,
}

thread_local! {
    // A component instance is single-threaded; this is its one piece of state,
    // replaced wholesale on every `configure`.
    static LOADED: RefCell<Option<Box<dyn std::any::Any>>> = const { RefCell::new(None) };
}

fn with_loaded<T: Strategy, R>(default: R, f: impl FnOnce(&Loaded<T>) -> R) -> R {
    LOADED.with(|cell| {
        let borrowed = cell.borrow();
        match borrowed.as_ref().and_then(|b| b.downcast_ref::<Loaded<T>>()) {
            Some(loaded) => f(loaded),
            None => default,
        }
    })
}

/// The scores a batch of outcomes gave, per (route, backend): what later outcomes
/// of the batch and the ranking that follows see.
type Learnt = Vec<((u32, u32), (f64, u64))>;

/// `observe` each outcome of a batch (21 numbers each), oldest first, each seeing
/// the scores the earlier ones gave. One score per outcome; NaN for none.
fn observe_batch<T: Strategy>(loaded: &Loaded<T>, outcomes: &[f64]) -> (Vec<f64>, Learnt) {
    let mut scores = Vec::with_capacity(outcomes.len() / flat::OUTCOME);
    let mut learnt: Learnt = Vec::new();
    for n in outcomes.chunks_exact(flat::OUTCOME) {
        let (route, backend, at) = (n[0] as u32, n[1] as u32, n[4] as u64);
        let mut state = flat::state(&n[5..]);
        if let Some((_, (score, when))) = learnt.iter().find(|(key, _)| *key == (route, backend)) {
            (state.score, state.score_updated_ms) = (Some(*score), *when);
        }
        let score = loaded.routes.get(route as usize).and_then(|r| {
            let info = r.backends.get(backend as usize)?;
            let request = Request { route, sequence: 0, random: 0, now_ms: at, stream: false };
            let observation = Observation {
                route: r,
                request: &request,
                backend,
                info,
                state: &state,
                outcome: flat::outcome(n[2]),
                latency_ms: n[3],
            };
            loaded.plugin.observe(&observation)
        });
        scores.push(score.unwrap_or(f64::NAN));
        if let Some(score) = score.filter(|s| s.is_finite()) {
            learnt.retain(|(key, _)| *key != (route, backend));
            learnt.push(((route, backend), (score, at)));
        }
    }
    (scores, learnt)
}

#[doc(hidden)]
pub fn __configure<T: Strategy>(config: String, routes: Vec<RouteInfo>) -> Result<(), String> {
    crate::install_panic_hook();
    let plugin = T::new(&config)?;
    LOADED.with(|cell| *cell.borrow_mut() = Some(Box::new(Loaded { plugin, routes })));
    Ok(())
}

#[doc(hidden)]
pub fn __select<T: Strategy>(request: Request, states: Vec<f64>, outcomes: Vec<f64>) -> wit::Selection {
    let unanswered = || wit::Selection { order: Vec::new(), scores: vec![f64::NAN; outcomes.len() / flat::OUTCOME] };
    with_loaded::<T, _>(unanswered(), |loaded| {
        let (scores, learnt) = observe_batch(loaded, &outcomes);
        let Some(route) = loaded.routes.get(request.route as usize) else {
            return wit::Selection { order: Vec::new(), scores };
        };
        let mut states = flat::states(&states);
        for ((r, backend), (score, at)) in learnt {
            if r == request.route
                && let Some(state) = states.get_mut(backend as usize)
            {
                (state.score, state.score_updated_ms) = (Some(score), at);
            }
        }
        let ctx = Context { route, request: &request, states: &states };
        wit::Selection { order: loaded.plugin.select(&ctx), scores }
    })
}

#[doc(hidden)]
pub fn __observe<T: Strategy>(outcomes: Vec<f64>) -> Vec<f64> {
    with_loaded::<T, _>(vec![f64::NAN; outcomes.len() / flat::OUTCOME], |loaded| observe_batch(loaded, &outcomes).0)
}

#[doc(hidden)]
pub fn __explain<T: Strategy>(request: Request, states: Vec<f64>) -> Vec<Explanation> {
    with_loaded::<T, _>(Vec::new(), |loaded| {
        let Some(route) = loaded.routes.get(request.route as usize) else { return Vec::new() };
        let states = flat::states(&states);
        loaded.plugin.explain(&Context { route, request: &request, states: &states })
    })
}

/// Export a [`Strategy`] implementation as the plugin's strategy.
///
/// ```no_run
/// use berry_plugin_sdk::strategy::{Context, Strategy};
///
/// struct FirstHealthy;
///
/// impl Strategy for FirstHealthy {
///     fn new(_config: &str) -> Result<Self, String> {
///         Ok(FirstHealthy)
///     }
///     fn select(&self, ctx: &Context) -> Vec<u32> {
///         ctx.usable()
///     }
/// }
///
/// berry_plugin_sdk::export_strategy!(FirstHealthy);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_strategy {
    ($ty:ty) => {
        #[doc(hidden)]
        pub struct __BerryStrategyExport;

        // Read by the host before it compiles the plugin: `0` when `observe` may be skipped.
        #[unsafe(link_section = "berry:observes")]
        #[used]
        #[doc(hidden)]
        static __BERRY_OBSERVES: [u8; 1] = [if <$ty as $crate::strategy::Strategy>::OBSERVES { b'1' } else { b'0' }];

        impl $crate::bindings::strategy::exports::berry::gateway::strategy::Guest for __BerryStrategyExport {
            fn configure(
                config: ::std::string::String,
                routes: ::std::vec::Vec<$crate::strategy::RouteInfo>,
            ) -> ::std::result::Result<(), ::std::string::String> {
                $crate::strategy::__configure::<$ty>(config, routes)
            }
            fn select(
                request: $crate::strategy::Request,
                states: ::std::vec::Vec<f64>,
                outcomes: ::std::vec::Vec<f64>,
            ) -> $crate::bindings::strategy::exports::berry::gateway::strategy::Selection {
                $crate::strategy::__select::<$ty>(request, states, outcomes)
            }
            fn observe(outcomes: ::std::vec::Vec<f64>) -> ::std::vec::Vec<f64> {
                $crate::strategy::__observe::<$ty>(outcomes)
            }
            fn explain(
                request: $crate::strategy::Request,
                states: ::std::vec::Vec<f64>,
            ) -> ::std::vec::Vec<$crate::strategy::Explanation> {
                $crate::strategy::__explain::<$ty>(request, states)
            }
        }

        $crate::bindings::strategy::__export_strategy_world!(__BerryStrategyExport);
        $crate::__stamp_version!();
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_order_draws_the_primary_by_weight_and_sorts_the_rest() {
        let weights = [1.0, 3.0, 0.0, 6.0];
        let candidates = [0, 1, 2, 3];
        // The unit interval splits as [0, .1) → 0, [.1, .4) → 1, [.4, 1) → 3.
        let at = |x: f64| ((x * (1u64 << 53) as f64) as u64) << 11;
        assert_eq!(weighted_order(&candidates, &weights, at(0.05)), [0, 3, 1, 2]);
        assert_eq!(weighted_order(&candidates, &weights, at(0.2)), [1, 3, 0, 2]);
        assert_eq!(weighted_order(&candidates, &weights, at(0.99)), [3, 1, 0, 2]);
        assert_eq!(weighted_order(&candidates, &weights, u64::MAX), [3, 1, 0, 2]);
    }

    #[test]
    fn weighted_order_keeps_the_given_order_when_every_weight_is_zero() {
        assert_eq!(weighted_order(&[2, 0, 1], &[0.0, 0.0, 0.0], 12345), [2, 0, 1]);
    }

    #[test]
    fn weighted_order_frequencies_match_the_weights() {
        let weights = [1.0, 2.0, 7.0];
        let mut counts = [0u32; 3];
        let mut random = 42;
        for _ in 0..100_000 {
            random = next_random(random);
            counts[weighted_order(&[0, 1, 2], &weights, random)[0] as usize] += 1;
        }
        for (i, expected) in [10_000.0, 20_000.0, 70_000.0].iter().enumerate() {
            assert!((counts[i] as f64 - expected).abs() < 1_000.0, "{counts:?}");
        }
    }
}
