//! The trial of a strategy: `select` (and `observe`, `explain`) on every route, in
//! the situations a gateway meets.

use super::{DRAWS, REPLAYED, ROUTES_IN_FULL, Report, Sample, Verdict, brief, replay};
use crate::plugin::loaded::{Loaded, Trial};
use crate::plugin::strategy::{StrategyKind, wit};

pub fn run(loaded: &Loaded<StrategyKind>, verbose: bool) -> Report {
    let mut report = Report::new(verbose);
    let mut trial = loaded.trial();
    let now = crate::health::now_ms();
    let mut samples = Vec::new();
    'routes: for (r, route) in loaded.data().iter().enumerate() {
        let full = r < ROUTES_IN_FULL;
        let draws = if full { &DRAWS[..] } else { &DRAWS[..2] };
        for (name, states) in situations(route.backends.len(), now, full) {
            for (d, &(sequence, random)) in draws.iter().enumerate() {
                let request = wit::Request {
                    route: r as u32,
                    sequence,
                    random,
                    now_ms: now,
                    stream: d % 2 == 1,
                    user_tags: if d % 3 == 2 { vec!["premium".into(), "admin".into()] } else { Vec::new() },
                };
                let situation =
                    format!("route {:?}, {name}, sequence {sequence}, random {random:#x}", brief(&route.name));
                match trial.call(|store, b| b.berry_gateway_strategy().call_select(store, &request, &states)) {
                    Err(e) => report.push(&situation, "failed", Verdict::Fail(e)),
                    Ok(order) => {
                        report.push(&situation, format!("{order:?}"), judge(route, &order));
                        if samples.len() < REPLAYED && (d == 0 || samples.len() % 3 == 0) {
                            let input = (request.clone(), states.clone());
                            samples.push(Sample { situation, input, answer: format!("{order:?}") });
                        }
                    }
                }
                if report.given_up() {
                    break 'routes;
                }
            }
            if full && loaded.compiled.observes {
                observe(&mut trial, &mut report, route, r, name, &states, now);
            }
            if full && name == HEALTHY {
                explain(&mut trial, &mut report, route, r, &states, now);
            }
        }
    }
    let ask = |trial: &mut Trial<'_, StrategyKind>, (request, states): &(wit::Request, Vec<wit::BackendState>)| {
        trial.call(|store, b| b.berry_gateway_strategy().call_select(store, request, states)).map(|o| format!("{o:?}"))
    };
    replay(&mut trial, &mut report, &samples, ask, "keep no state between calls; use request.random for chance");
    report
}

const HEALTHY: &str = "every backend healthy";

/// The situations a route of `n` backends is tried in: the first two only for
/// routes beyond [`ROUTES_IN_FULL`].
fn situations(n: usize, now: u64, full: bool) -> Vec<(&'static str, Vec<wit::BackendState>)> {
    let healthy = |i: usize| wit::BackendState {
        healthy: true,
        circuit: wit::Circuit::Closed,
        recovery_factor: 1.0,
        latency_ms: i.is_multiple_of(2).then_some(80.0 + 40.0 * i as f64),
        in_flight: i as u32,
        consecutive_failures: 0,
        last_failure_ms: 0,
        errors: wit::ErrorCounts { network: 0, timeout: 0, auth: 0, rate_limit: 0, server: 0, model: 0 },
        score: (i % 3 != 2).then_some(0.5 + 0.1 * (i % 5) as f64),
        score_updated_ms: now.saturating_sub(1_000),
    };
    let down = |i: usize| wit::BackendState {
        healthy: false,
        circuit: wit::Circuit::Open,
        recovery_factor: 0.0,
        consecutive_failures: 5,
        last_failure_ms: now.saturating_sub(1_000 * (i as u64 + 1)),
        errors: wit::ErrorCounts { network: 3, timeout: 1, auth: 0, rate_limit: 0, server: 2, model: 0 },
        ..healthy(i)
    };
    let recovering = |i: usize| wit::BackendState {
        circuit: wit::Circuit::HalfOpen,
        recovery_factor: 0.3,
        consecutive_failures: 0,
        last_failure_ms: now.saturating_sub(40_000),
        ..healthy(i)
    };
    let mut out = vec![(HEALTHY, (0..n).map(healthy).collect()), ("every backend down", (0..n).map(down).collect())];
    if full && n >= 2 {
        out.push((
            "the first backend's circuit open",
            (0..n).map(|i| if i == 0 { down(i) } else { healthy(i) }).collect(),
        ));
    }
    if full && n >= 1 {
        out.push((
            "the first backend recovering",
            (0..n).map(|i| if i == 0 { recovering(i) } else { healthy(i) }).collect(),
        ));
    }
    out
}

/// Whether `order` is a usable answer for `route`.
fn judge(route: &wit::RouteInfo, order: &[u32]) -> Verdict {
    let enabled = |i: u32| route.backends.get(i as usize).is_some_and(|b| b.enabled);
    let mut seen = Vec::with_capacity(order.len());
    let mut ignored = Vec::new();
    for &i in order {
        if enabled(i) && !seen.contains(&i) {
            seen.push(i);
        } else {
            ignored.push(i);
        }
    }
    let any_enabled = route.backends.iter().any(|b| b.enabled);
    if any_enabled && seen.is_empty() {
        return Verdict::Fail(format!(
            "answered nothing usable: no enabled backend of the route's {} (answer the indices of enabled backends, best first)",
            route.backends.len()
        ));
    }
    if !ignored.is_empty() {
        return Verdict::Warn(format!(
            "indices out of range, disabled or repeated are ignored: {ignored:?} (the route has {} backends)",
            route.backends.len()
        ));
    }
    Verdict::Pass
}

fn observe(
    trial: &mut Trial<'_, StrategyKind>,
    report: &mut Report,
    route: &wit::RouteInfo,
    r: usize,
    name: &str,
    states: &[wit::BackendState],
    now: u64,
) {
    let Some(state) = states.first() else { return };
    for outcome in [wit::Outcome::Success, wit::Outcome::Server] {
        let request =
            wit::Request { route: r as u32, sequence: 0, random: 0, now_ms: now, stream: false, user_tags: vec![] };
        let situation = format!("route {:?}, {name}, observe {outcome:?} on backend 0", brief(&route.name));
        let result =
            trial.call(|store, b| b.berry_gateway_strategy().call_observe(store, &request, 0, outcome, 120.0, *state));
        match result {
            Err(e) => report.push(situation, "failed", Verdict::Fail(e)),
            Ok(Some(score)) if !score.is_finite() => report.push(
                situation,
                format!("{score}"),
                Verdict::Warn("a score that is not a finite number is kept as it is".into()),
            ),
            Ok(score) => report.push(situation, format!("{score:?}"), Verdict::Pass),
        }
    }
}

fn explain(
    trial: &mut Trial<'_, StrategyKind>,
    report: &mut Report,
    route: &wit::RouteInfo,
    r: usize,
    states: &[wit::BackendState],
    now: u64,
) {
    let request =
        wit::Request { route: r as u32, sequence: 0, random: 0, now_ms: now, stream: false, user_tags: vec![] };
    let situation = format!("route {:?}, {HEALTHY}, explain", brief(&route.name));
    match trial.call(|store, b| b.berry_gateway_strategy().call_explain(store, &request, states)) {
        Err(e) => report.push(situation, "failed", Verdict::Fail(e)),
        // Empty: "not explained": the host estimates the figures by sampling `select`.
        Ok(rows) if rows.is_empty() || rows.len() == states.len() => {
            let answer = if rows.is_empty() {
                "not explained (estimated by sampling)".to_string()
            } else {
                format!("{} rows", rows.len())
            };
            report.push(situation, answer, Verdict::Pass);
        }
        Ok(rows) => report.push(
            situation,
            format!("{} rows", rows.len()),
            Verdict::Warn(format!("explained {} backends of {}: the figures are not shown", rows.len(), states.len())),
        ),
    }
}
