//! The stock smart_ai plugin, called directly through the host's plugin API: the
//! confidence arithmetic of every `[settings.smart_ai]` key, on the real component.

use berry::plugin::strategy::BackendState;
use berry::plugin::strategy::flat;
use berry::plugin::strategy::wit::{BackendInfo, BillingMode, Circuit, Outcome, Request, RouteInfo};
use berry::plugin::{Limits, StrategyPlugin, Versions, compile, stock};

const NOW: u64 = 1_800_000_000_000;

fn plugin(settings: &str, tags: &[&[&str]]) -> StrategyPlugin {
    let compiled = compile("smart_ai", "stock", stock::bytes("smart_ai").expect("embedded"), &Versions::default())
        .expect("compiles");
    let backends = tags
        .iter()
        .enumerate()
        .map(|(i, t)| BackendInfo {
            provider: format!("p{i}"),
            model: "m".into(),
            weight: 1.0,
            priority: 1,
            enabled: true,
            billing: BillingMode::PerToken,
            tags: t.iter().map(|s| s.to_string()).collect(),
        })
        .collect();
    StrategyPlugin::prepare(
        compiled,
        Limits::default(),
        settings.into(),
        vec![RouteInfo { name: "m".into(), backends }],
    )
    .expect("configures")
}

fn state(score: Option<f64>, updated: u64) -> BackendState {
    BackendState {
        healthy: true,
        circuit: Circuit::Closed,
        recovery_factor: 1.0,
        latency_ms: None,
        in_flight: 0,
        consecutive_failures: 0,
        last_failure_ms: 0,
        errors: [0; 6],
        score,
        score_updated_ms: updated,
    }
}

fn request() -> Request {
    Request { route: 0, sequence: 0, random: 7, now_ms: NOW, stream: false }
}

/// The states as the plugin gets them: 16 numbers each.
fn numbers(states: &[BackendState]) -> Vec<f64> {
    let mut out = Vec::new();
    states.iter().for_each(|s| s.write(&mut out));
    out
}

/// The score `observe` answers for one outcome on backend 0 (`None`: no change).
fn observe(p: &StrategyPlugin, outcome: Outcome, before: &BackendState) -> Option<f64> {
    let mut outcomes = Vec::new();
    flat::outcome(&mut outcomes, 0, 0, outcome, 10.0, NOW, before);
    let scores = p.observe(&outcomes).expect("observe");
    assert_eq!(scores.len(), 1, "one score per outcome");
    Some(scores[0]).filter(|s| !s.is_nan())
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn every_error_class_has_its_own_penalty() {
    let p = plugin(
        r#"{"enable_time_decay": false, "confidence_adjustments": {"success_boost": 0.05, "network_error_penalty": 0.31,
            "auth_error_penalty": 0.32, "rate_limit_penalty": 0.33, "server_error_penalty": 0.34,
            "model_error_penalty": 0.35, "timeout_penalty": 0.36}}"#,
        &[&[]],
    );
    let s = state(Some(0.8), NOW);
    let observe = |o| observe(&p, o, &s);
    assert!(close(observe(Outcome::Success).expect("score"), 0.85));
    for (outcome, penalty) in [
        (Outcome::Network, 0.31),
        (Outcome::Auth, 0.32),
        (Outcome::RateLimit, 0.33),
        (Outcome::Server, 0.34),
        (Outcome::Model, 0.35),
        (Outcome::Timeout, 0.36),
    ] {
        let got = observe(outcome).expect("score");
        assert!(close(got, 0.8 - penalty), "{outcome:?}: {got}");
    }
    assert_eq!(observe(Outcome::Client), None, "the caller's own bad request changes nothing");
}

#[test]
fn confidence_is_clamped_and_starts_at_the_initial_value() {
    let p = plugin(r#"{"initial_confidence": 0.6, "min_confidence": 0.2, "enable_time_decay": false}"#, &[&[]]);
    let fresh = observe(&p, Outcome::Success, &state(None, 0));
    assert!(close(fresh.expect("score"), 0.7), "no score yet: starts from initial_confidence");
    let floor = observe(&p, Outcome::Auth, &state(Some(0.3), NOW));
    assert!(close(floor.expect("score"), 0.2));
    let ceiling = observe(&p, Outcome::Success, &state(Some(0.98), NOW));
    assert!(close(ceiling.expect("score"), 1.0));
}

#[test]
fn idle_confidence_decays_toward_the_initial_value() {
    let p = plugin(r#"{"initial_confidence": 0.8, "decay_half_life_seconds": 100}"#, &[&[]]);
    // One half-life idle: 0.2 has come half-way back to 0.8.
    let s = state(Some(0.2), NOW - 100_000);
    let explained = p.explain(&request(), &numbers(&[s])).expect("explain");
    let confidence = explained[0].factors.iter().find(|(k, _)| k == "confidence").expect("factor").1;
    assert!(close(confidence, 0.5), "{confidence}");
    let after = observe(&p, Outcome::Success, &s).expect("score");
    assert!(close(after, 0.6), "{after}");

    let no_decay = plugin(r#"{"enable_time_decay": false}"#, &[&[]]);
    let explained = no_decay.explain(&request(), &numbers(&[s])).expect("explain");
    let confidence = explained[0].factors.iter().find(|(k, _)| k == "confidence").expect("factor").1;
    assert!(close(confidence, 0.2));
}

#[test]
fn effective_weight_is_the_product_of_its_factors() {
    let p = plugin(
        r#"{"enable_time_decay": false, "non_premium_stability_bonus": 1.25, "exploration_ratio": 0.2}"#,
        &[&["premium"], &[], &[]],
    );
    let mut recovering = state(Some(0.64), NOW);
    recovering.circuit = Circuit::HalfOpen;
    recovering.recovery_factor = 0.3;
    let states = [state(Some(0.95), NOW), state(Some(0.95), NOW), recovering];
    let e = p.explain(&request(), &numbers(&states)).expect("explain");
    let cf = |c: f64| (c.sqrt() * 0.7 + 0.3f64).min(1.0);
    // Premium: no stability bonus even when confident.
    assert!(close(e[0].weight, cf(0.95)), "{}", e[0].weight);
    // Non-premium and confident (> 0.9): the bonus applies.
    assert!(close(e[1].weight, cf(0.95) * 1.25), "{}", e[1].weight);
    // Recovering at stage 30%, confidence 0.64 → factor 0.86.
    assert!(close(e[2].weight, 0.86 * 0.3), "{}", e[2].weight);
    // Probabilities: 80% by weight, 20% exploration spread evenly.
    let total: f64 = e.iter().map(|x| x.weight).sum();
    for x in &e {
        assert!(close(x.probability, 0.8 * x.weight / total + 0.2 / 3.0), "{x:?}");
    }
}

#[test]
fn an_unhealthy_per_request_backend_keeps_a_tenth_of_its_weight() {
    let compiled = compile("smart_ai", "stock", stock::bytes("smart_ai").expect("embedded"), &Versions::default())
        .expect("compiles");
    let backend = |billing| BackendInfo {
        provider: "p".into(),
        model: "m".into(),
        weight: 2.0,
        priority: 1,
        enabled: true,
        billing,
        tags: vec!["premium".into()],
    };
    let route = RouteInfo {
        name: "m".into(),
        backends: vec![
            backend(BillingMode::PerToken),
            backend(BillingMode::PerRequest),
            backend(BillingMode::PerToken),
        ],
    };
    let p = StrategyPlugin::prepare(compiled, Limits::default(), r#"{"enable_time_decay": false}"#.into(), vec![route])
        .expect("configures");
    let mut down = state(Some(1.0), NOW);
    down.healthy = false;
    down.circuit = Circuit::Open;
    down.recovery_factor = 0.0;
    let e = p.explain(&request(), &numbers(&[state(Some(1.0), NOW), down, down])).expect("explain");
    assert!(close(e[0].weight, 2.0));
    assert!(close(e[1].weight, 0.2), "per_request, unhealthy: 10%: {}", e[1].weight);
    assert!(close(e[2].weight, 0.0), "per_token, unhealthy: skipped: {}", e[2].weight);
}
