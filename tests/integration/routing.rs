//! Stock strategies over real loopback sockets with several mock providers.

use std::collections::HashMap;

use berry::mock::{FailMode, MockUpdate};

use crate::harness::*;

async fn tally(gw: &TestGateway, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let reply = gw.chat(TOKEN, &chat_body("m")).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        *counts.entry(reply.answered_by()).or_insert(0) += 1;
    }
    counts
}

#[tokio::test]
async fn weighted_random_follows_the_weights() {
    let (a, b, c) = (mock("a").await, mock("b").await, mock("c").await);
    let toml =
        config("weighted_random", &[("a", &a), ("b", &b), ("c", &c)], &["weight = 6", "weight = 3", "weight = 1"], "");
    let gw = TestGateway::start(&toml).await;
    let n = 1000;
    let counts = tally(&gw, n).await;
    // Expected 600 / 300 / 100; binomial sd ≈ 15.5 / 14.5 / 9.5. Allow ~4.5 sd.
    for (name, expected, tolerance) in [("a", 600.0, 70.0), ("b", 300.0, 65.0), ("c", 100.0, 43.0)] {
        let got = *counts.get(name).unwrap_or(&0) as f64;
        assert!(
            (got - expected).abs() <= tolerance,
            "{name}: got {got}, expected {expected} ± {tolerance} ({counts:?})"
        );
    }
}

#[tokio::test]
async fn round_robin_rotates_exactly() {
    let (a, b, c) = (mock("a").await, mock("b").await, mock("c").await);
    let toml = config("round_robin", &[("a", &a), ("b", &b), ("c", &c)], &[], "");
    let gw = TestGateway::start(&toml).await;
    let mut order = Vec::new();
    for _ in 0..9 {
        order.push(gw.chat(TOKEN, &chat_body("m")).await.answered_by());
    }
    assert_eq!(order, ["a", "b", "c", "a", "b", "c", "a", "b", "c"]);
}

#[tokio::test]
async fn failover_honours_priority_and_falls_through() {
    let (low, high) = (mock("backup").await, mock("primary").await);
    // Config order lists the backup first: only `priority` may make "primary" win.
    let toml = config("failover", &[("backup", &low), ("primary", &high)], &["priority = 2", "priority = 1"], "");
    let gw = TestGateway::start(&toml).await;
    for _ in 0..5 {
        assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.answered_by(), "primary");
    }
    set(&high, MockUpdate { fail: Some(FailMode::Status(500)), ..Default::default() });
    for _ in 0..5 {
        let reply = gw.chat(TOKEN, &chat_body("m")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.answered_by(), "backup");
    }
}

#[tokio::test]
async fn least_latency_prefers_the_fast_backend() {
    let slow = mock_with(berry::mock::MockSettings { name: "slow".into(), latency_ms: 80, ..Default::default() }).await;
    let fast = mock_with(berry::mock::MockSettings { name: "fast".into(), latency_ms: 2, ..Default::default() }).await;
    let toml = config("least_latency", &[("slow", &slow), ("fast", &fast)], &[], "");
    let gw = TestGateway::start(&toml).await;
    let mut order = Vec::new();
    for _ in 0..12 {
        order.push(gw.chat(TOKEN, &chat_body("m")).await.answered_by());
    }
    // Both are measured first (no data yet), then the fast one wins every time.
    assert!(order[..2].contains(&"slow".to_string()), "{order:?}");
    assert!(order[2..].iter().all(|b| b == "fast"), "{order:?}");
}

#[tokio::test]
async fn random_uses_every_healthy_backend() {
    let (a, b) = (mock("a").await, mock("b").await);
    let toml = config("random", &[("a", &a), ("b", &b)], &[], "");
    let gw = TestGateway::start(&toml).await;
    let counts = tally(&gw, 200).await;
    // Uniform: 100 ± 35 (5 sd) each.
    for name in ["a", "b"] {
        let got = *counts.get(name).unwrap_or(&0);
        assert!((65..=135).contains(&got), "{counts:?}");
    }
}

#[tokio::test]
async fn smart_ai_routes_to_its_backends() {
    let (a, b) = (mock("a").await, mock("b").await);
    let toml = config("smart_ai", &[("a", &a), ("b", &b)], &["weight = 1", "weight = 1"], "");
    let gw = TestGateway::start(&toml).await;
    let counts = tally(&gw, 100).await;
    assert_eq!(counts.values().sum::<usize>(), 100);
    assert!(counts.len() == 2, "both backends should get traffic: {counts:?}");
}

#[tokio::test]
async fn dead_backend_is_skipped_without_client_errors() {
    let live = mock("live").await;
    let dead = mock("dead").await;
    let toml = config(
        "weighted_random",
        &[("live", &live), ("dead", &dead)],
        &["weight = 1", "weight = 1"],
        "circuit_breaker_threshold = 3",
    );
    let gw = TestGateway::start(&toml).await;
    drop(dead); // the port now refuses connections
    for i in 0..40 {
        let reply = gw.chat(TOKEN, &chat_body("m")).await;
        assert_eq!(reply.status, 200, "request {i}: {}", String::from_utf8_lossy(&reply.body));
        assert_eq!(reply.answered_by(), "live");
    }
    let health = gw.get("/health", None).await.json();
    let dead_backend = &health["models"][0]["backends"][1];
    assert_eq!(dead_backend["provider"], "dead");
    assert_eq!(dead_backend["circuit"], "open", "{health}");
    assert!(dead_backend["errors"]["network"].as_u64().unwrap_or(0) >= 3, "{health}");
    // Once open, the dead backend is no longer tried at all.
    let attempts_before = dead_backend["errors"]["network"].as_u64();
    for _ in 0..10 {
        assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200);
    }
    let health = gw.get("/health", None).await.json();
    assert_eq!(health["models"][0]["backends"][1]["errors"]["network"].as_u64(), attempts_before);
}

#[tokio::test]
async fn disabled_backend_is_never_selected() {
    let (a, b) = (mock("a").await, mock("b").await);
    let toml = config("round_robin", &[("a", &a), ("b", &b)], &["", "enabled = false"], "");
    let gw = TestGateway::start(&toml).await;
    set(&a, MockUpdate { fail: Some(FailMode::Status(503)), ..Default::default() });
    for _ in 0..5 {
        // Even when the only enabled backend fails, the disabled one is not tried.
        let reply = gw.chat(TOKEN, &chat_body("m")).await;
        assert_ne!(reply.status, 200);
    }
    assert_eq!(b.state.chat.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[tokio::test]
async fn retries_are_bounded_by_max_retries() {
    let mocks: Vec<_> = futures_util::future::join_all(["a", "b", "c", "d"].map(mock)).await;
    for m in &mocks {
        set(m, MockUpdate { fail: Some(FailMode::Status(502)), ..Default::default() });
    }
    let named: Vec<(&str, &berry::mock::MockServer)> = ["a", "b", "c", "d"].into_iter().zip(mocks.iter()).collect();
    let toml = config("round_robin", &named, &[], "max_retries = 1\ncircuit_breaker_threshold = 100");
    let gw = TestGateway::start(&toml).await;
    let reply = gw.chat(TOKEN, &chat_body("m")).await;
    reply.assert_error(502, "upstream_error");
    let hits: u64 = mocks.iter().map(|m| m.state.chat.load(std::sync::atomic::Ordering::Relaxed)).sum();
    assert_eq!(hits, 2, "1 attempt + max_retries = 1");
}

#[tokio::test]
async fn decided_strategies_explain_their_primary() {
    let (a, b, c) = (mock("a").await, mock("b").await, mock("c").await);
    let named = [("a", &a), ("b", &b), ("c", &c)];
    let failover = TestGateway::start(&config(
        "failover",
        &named,
        &["priority = 2", "priority = 1", "priority = 3"],
        "admin_token = \"adm\"",
    ))
    .await;
    let shown = failover.get("/smart-ai/models/m/weights", Some("adm")).await.json();
    let p: Vec<f64> = shown["models"][0]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b["probability"].as_f64().unwrap_or(-1.0))
        .collect();
    assert_eq!(p, [0.0, 1.0, 0.0], "{shown}");
    let rr = TestGateway::start(&config("round_robin", &named, &[], "admin_token = \"adm\"")).await;
    let shown = rr.get("/smart-ai/models/m/weights", Some("adm")).await.json();
    for b in shown["models"][0]["backends"].as_array().expect("backends") {
        assert!((b["probability"].as_f64().unwrap_or(0.0) - 1.0 / 3.0).abs() < 1e-9, "{shown}");
    }
}
