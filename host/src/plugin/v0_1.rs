//! Plugins built for the frozen contract `berry:gateway@0.1.0` (`wit/0.1.0/`),
//! answering the calls the host makes in 0.2.
//!
//! A 0.1 strategy takes each backend's state as a record and each outcome as a call
//! of its own: the adapter turns the flat numbers back into records, and delivers a
//! batch of outcomes one `observe` at a time, oldest first, each seeing the scores
//! the earlier ones gave (as 0.2 promises). A 0.1 auth policy differs only in the
//! version of its types.

use wasmtime::Store;

use super::auth::wit as auth;
use super::bindings::v0_1::auth::AuthPlugin as OldAuth;
use super::bindings::v0_1::auth::exports::berry::gateway::auth as old_auth;
use super::bindings::v0_1::strategy::StrategyPlugin as Old;
use super::bindings::v0_1::strategy::berry::gateway::types as old_types;
use super::bindings::v0_1::strategy::exports::berry::gateway::strategy as old;
use super::sandbox::HostState;
use super::strategy::flat::{self, BackendState};
use super::strategy::wit;

pub fn configure(
    b: &Old,
    store: &mut Store<HostState>,
    config: &str,
    routes: &[wit::RouteInfo],
) -> wasmtime::Result<Result<(), String>> {
    let routes: Vec<old::RouteInfo> = routes
        .iter()
        .map(|r| old::RouteInfo {
            name: r.name.clone(),
            backends: r
                .backends
                .iter()
                .map(|b| old::BackendInfo {
                    provider: b.provider.clone(),
                    model: b.model.clone(),
                    weight: b.weight,
                    priority: b.priority,
                    enabled: b.enabled,
                    billing: match b.billing {
                        wit::BillingMode::PerToken => old_types::BillingMode::PerToken,
                        wit::BillingMode::PerRequest => old_types::BillingMode::PerRequest,
                    },
                    tags: b.tags.clone(),
                })
                .collect(),
        })
        .collect();
    b.berry_gateway_strategy().call_configure(store, config, &routes)
}

/// The scores a batch gave, per (route, backend), as (score, when): what later
/// outcomes and the ranking that follows see.
type Learnt = Vec<((u32, u32), (f64, u64))>;

pub fn observe(b: &Old, store: &mut Store<HostState>, outcomes: &[f64]) -> wasmtime::Result<(Vec<f64>, Learnt)> {
    let mut scores = Vec::with_capacity(outcomes.len() / flat::OUTCOME);
    let mut learnt: Learnt = Vec::new();
    for numbers in outcomes.chunks_exact(flat::OUTCOME) {
        let (route, backend, outcome, latency_ms, at_ms, mut state) = flat::read_outcome(numbers);
        if let Some((_, (score, at))) = learnt.iter().find(|(key, _)| *key == (route, backend)) {
            (state.score, state.score_updated_ms) = (Some(*score), *at);
        }
        let request =
            old::Request { route, sequence: 0, random: 0, now_ms: at_ms, stream: false, user_tags: Vec::new() };
        let score =
            b.berry_gateway_strategy().call_observe(&mut *store, &request, backend, outcome_of(outcome), latency_ms, record(&state))?;
        scores.push(score.unwrap_or(f64::NAN));
        if let Some(score) = score.filter(|s| s.is_finite()) {
            learnt.retain(|(key, _)| *key != (route, backend));
            learnt.push(((route, backend), (score, at_ms)));
        }
    }
    Ok((scores, learnt))
}

pub fn select(
    b: &Old,
    store: &mut Store<HostState>,
    request: &wit::Request,
    states: &[f64],
    outcomes: &[f64],
) -> wasmtime::Result<wit::Selection> {
    let (scores, learnt) = observe(b, store, outcomes)?;
    let mut states = records(states);
    for ((route, backend), (score, at)) in learnt {
        if route == request.route
            && let Some(state) = states.get_mut(backend as usize)
        {
            (state.score, state.score_updated_ms) = (Some(score), at);
        }
    }
    let request = old_request(request, store.data().caller_tags().to_vec());
    let order = b.berry_gateway_strategy().call_select(store, &request, &states)?;
    Ok(wit::Selection { order, scores })
}

pub fn explain(
    b: &Old,
    store: &mut Store<HostState>,
    request: &wit::Request,
    states: &[f64],
) -> wasmtime::Result<Vec<wit::Explanation>> {
    let rows = b.berry_gateway_strategy().call_explain(store, &old_request(request, Vec::new()), &records(states))?;
    Ok(rows
        .into_iter()
        .map(|r| wit::Explanation { weight: r.weight, probability: r.probability, factors: r.factors })
        .collect())
}

fn old_request(request: &wit::Request, user_tags: Vec<String>) -> old::Request {
    old::Request {
        route: request.route,
        sequence: request.sequence,
        random: request.random,
        now_ms: request.now_ms,
        stream: request.stream,
        user_tags,
    }
}

fn records(states: &[f64]) -> Vec<old::BackendState> {
    states.chunks_exact(flat::STATE).map(|slots| record(&BackendState::read(slots))).collect()
}

fn record(s: &BackendState) -> old::BackendState {
    let [network, timeout, auth, rate_limit, server, model] = s.errors;
    old::BackendState {
        healthy: s.healthy,
        circuit: match s.circuit {
            wit::Circuit::Closed => old_types::Circuit::Closed,
            wit::Circuit::Open => old_types::Circuit::Open,
            wit::Circuit::HalfOpen => old_types::Circuit::HalfOpen,
        },
        recovery_factor: s.recovery_factor,
        latency_ms: s.latency_ms,
        in_flight: s.in_flight,
        consecutive_failures: s.consecutive_failures,
        last_failure_ms: s.last_failure_ms,
        errors: old_types::ErrorCounts { network, timeout, auth, rate_limit, server, model },
        score: s.score,
        score_updated_ms: s.score_updated_ms,
    }
}

fn outcome_of(o: wit::Outcome) -> old_types::Outcome {
    use old_types::Outcome as O;
    match o {
        wit::Outcome::Success => O::Success,
        wit::Outcome::Network => O::Network,
        wit::Outcome::Timeout => O::Timeout,
        wit::Outcome::Auth => O::Auth,
        wit::Outcome::RateLimit => O::RateLimit,
        wit::Outcome::Server => O::Server,
        wit::Outcome::Model => O::Model,
        wit::Outcome::Client => O::Client,
    }
}

// === auth ===

pub fn configure_auth(
    b: &OldAuth,
    store: &mut Store<HostState>,
    config: &str,
    users: &[auth::UserInfo],
) -> wasmtime::Result<Result<Vec<String>, String>> {
    let users: Vec<old_auth::UserInfo> = users
        .iter()
        .map(|u| old_auth::UserInfo {
            id: u.id.clone(),
            name: u.name.clone(),
            token: u.token.clone(),
            token_sha256: u.token_sha256.clone(),
            allowed_models: u.allowed_models.clone(),
            enabled: u.enabled,
            tags: u.tags.clone(),
            limits: old_auth::RateLimits {
                per_minute: u.limits.per_minute,
                per_hour: u.limits.per_hour,
                per_day: u.limits.per_day,
            },
        })
        .collect();
    b.berry_gateway_auth().call_configure(store, config, &users)
}

pub fn authorize(
    b: &OldAuth,
    store: &mut Store<HostState>,
    request: &auth::AuthRequest,
) -> wasmtime::Result<Result<auth::Principal, auth::Denial>> {
    let request = old_auth::AuthRequest {
        token: request.token.clone(),
        model: request.model.clone(),
        headers: request.headers.clone(),
    };
    Ok(match b.berry_gateway_auth().call_authorize(store, &request)? {
        Ok(p) => Ok(auth::Principal {
            id: p.id,
            allowed_models: p.allowed_models,
            tags: p.tags,
            limits: auth::RateLimits {
                per_minute: p.limits.per_minute,
                per_hour: p.limits.per_hour,
                per_day: p.limits.per_day,
            },
            admin: p.admin,
        }),
        Err(d) => Err(auth::Denial { status: d.status, code: d.code, message: d.message }),
    })
}
