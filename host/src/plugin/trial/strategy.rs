//! The trial of a strategy: `select` (and `observe`, `explain`) on every route, in
//! the situations a gateway meets.

use super::{DRAWS, REPLAYED, ROUTES_IN_FULL, Report, Sample, Verdict, brief, replay};
use crate::plugin::loaded::{Loaded, Trial};
use crate::plugin::strategy::{BackendState, StrategyKind, flat, wit};

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
                let request = wit::Request { route: r as u32, sequence, random, now_ms: now, stream: d % 2 == 1 };
                let tags = if d % 3 == 2 { &CALLER_TAGS[..] } else { &[] };
                let situation =
                    format!("route {:?}, {name}, sequence {sequence}, random {random:#x}", brief(&route.name));
                match trial.call(|store, b| select(store, b, &request, &states, tags)) {
                    Err(e) => report.push(&situation, "failed", Verdict::Fail(e)),
                    Ok(order) => {
                        report.push(&situation, format!("{order:?}"), judge(route, &order));
                        if samples.len() < REPLAYED && (d == 0 || samples.len() % 3 == 0) {
                            let input = (request, states.clone(), tags);
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
    let ask = |trial: &mut Trial<'_, StrategyKind>, (request, states, tags): &(wit::Request, Vec<f64>, &[String])| {
        trial.call(|store, b| select(store, b, request, states, tags)).map(|o| format!("{o:?}"))
    };
    replay(&mut trial, &mut report, &samples, ask, "keep no state between calls; use request.random for chance");
    report
}

const HEALTHY: &str = "every backend healthy";

/// The caller's tags in a third of the situations.
static CALLER_TAGS: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| ["premium".into(), "admin".into()]);

/// One `select` with no outcomes, for a caller with `tags`: its ranking.
fn select(
    store: &mut wasmtime::Store<crate::plugin::sandbox::HostState>,
    b: &crate::plugin::strategy::Bindings,
    request: &wit::Request,
    states: &[f64],
    tags: &[String],
) -> wasmtime::Result<Vec<u32>> {
    crate::plugin::sandbox::HostState::with_caller(store, tags, |store| b.select(store, request, states, &[]))
        .map(|selection| selection.order)
}

/// The situations a route of `n` backends is tried in: the first two only for
/// routes beyond [`ROUTES_IN_FULL`]. States as the plugin gets them, 16 numbers each.
fn situations(n: usize, now: u64, full: bool) -> Vec<(&'static str, Vec<f64>)> {
    let situations = states(n, now, full);
    situations
        .into_iter()
        .map(|(name, states)| {
            let mut numbers = Vec::with_capacity(states.len() * flat::STATE);
            states.iter().for_each(|s| s.write(&mut numbers));
            (name, numbers)
        })
        .collect()
}

fn states(n: usize, now: u64, full: bool) -> Vec<(&'static str, Vec<BackendState>)> {
    let healthy = |i: usize| BackendState {
        healthy: true,
        circuit: wit::Circuit::Closed,
        recovery_factor: 1.0,
        latency_ms: i.is_multiple_of(2).then_some(80.0 + 40.0 * i as f64),
        in_flight: i as u32,
        consecutive_failures: 0,
        last_failure_ms: 0,
        errors: [0; 6],
        score: (i % 3 != 2).then_some(0.5 + 0.1 * (i % 5) as f64),
        score_updated_ms: now.saturating_sub(1_000),
    };
    let down = |i: usize| BackendState {
        healthy: false,
        circuit: wit::Circuit::Open,
        recovery_factor: 0.0,
        consecutive_failures: 5,
        last_failure_ms: now.saturating_sub(1_000 * (i as u64 + 1)),
        errors: [3, 1, 0, 0, 2, 0],
        ..healthy(i)
    };
    let recovering = |i: usize| BackendState {
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
    states: &[f64],
    now: u64,
) {
    if states.len() < flat::STATE {
        return;
    }
    let state = BackendState::read(states);
    for outcome in [wit::Outcome::Success, wit::Outcome::Server] {
        let situation = format!("route {:?}, {name}, observe {outcome:?} on backend 0", brief(&route.name));
        let mut outcomes = Vec::with_capacity(flat::OUTCOME);
        flat::outcome(&mut outcomes, r as u32, 0, outcome, 120.0, now, &state);
        match trial.call(|store, b| b.observe(store, &outcomes)) {
            Err(e) => report.push(situation, "failed", Verdict::Fail(e)),
            Ok(scores) if scores.len() != 1 => report.push(
                situation,
                format!("{scores:?}"),
                Verdict::Warn(format!("answered {} scores for 1 outcome: the host keeps none", scores.len())),
            ),
            Ok(scores) if scores[0].is_infinite() => report.push(
                situation,
                format!("{}", scores[0]),
                Verdict::Warn("a score that is not a finite number is not kept".into()),
            ),
            Ok(scores) => report.push(situation, format!("{:?}", scores[0]), Verdict::Pass),
        }
    }
}

fn explain(
    trial: &mut Trial<'_, StrategyKind>,
    report: &mut Report,
    route: &wit::RouteInfo,
    r: usize,
    states: &[f64],
    now: u64,
) {
    let request = wit::Request { route: r as u32, sequence: 0, random: 0, now_ms: now, stream: false };
    let backends = states.len() / flat::STATE;
    let situation = format!("route {:?}, {HEALTHY}, explain", brief(&route.name));
    match trial.call(|store, b| b.explain(store, &request, states)) {
        Err(e) => report.push(situation, "failed", Verdict::Fail(e)),
        // Empty: "not explained": the host estimates the figures by sampling `select`.
        Ok(rows) if rows.is_empty() || rows.len() == backends => {
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
            Verdict::Warn(format!("explained {} backends of {backends}: the figures are not shown", rows.len())),
        ),
    }
}
