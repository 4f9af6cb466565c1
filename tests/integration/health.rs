//! Health that tells the truth: circuit breaking, progressive recovery, active
//! probes, and the weights endpoint, over loopback with fault-injecting mocks.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use berry::health::CircuitView;
use berry::mock::{FailMode, MockServer, MockUpdate};

use crate::harness::*;

fn fail(mock: &MockServer, mode: FailMode) {
    set(mock, MockUpdate { fail: Some(mode), ..Default::default() });
}

/// The circuit of backend `index` of model `m`, as the gateway sees it now.
fn circuit(gw: &TestGateway, index: usize) -> CircuitView {
    let snapshot = gw.gateway.snapshot();
    let route = snapshot.routes.get("m").expect("route m");
    route.backends[index].health.view(berry::health::now_ms(), &snapshot.policy).circuit
}

#[tokio::test]
async fn the_circuit_opens_after_exactly_the_threshold() {
    let (bad, good) = (mock("bad").await, mock("good").await);
    fail(&bad, FailMode::Status(500));
    let toml = config(
        "failover",
        &[("bad", &bad), ("good", &good)],
        &["priority = 1", "priority = 2"],
        "circuit_breaker_threshold = 3",
    );
    let gw = TestGateway::start(&toml).await;
    for i in 1..=3 {
        assert_eq!(circuit(&gw, 0), CircuitView::Closed, "closed before failure {i}");
        assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.answered_by(), "good");
    }
    assert_eq!(circuit(&gw, 0), CircuitView::Open);
    for _ in 0..5 {
        assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200);
    }
    // Exactly three attempts reached the bad backend: none once its circuit opened.
    assert_eq!(bad.state.chat.load(Ordering::Relaxed), 3);
    let health = gw.get("/health", None).await.json();
    assert_eq!(health["models"][0]["backends"][0]["errors"]["server"], 3);
    assert_eq!(health["models"][0]["backends"][0]["circuit"], "open");
    assert_eq!(health["status"], "ok", "one healthy backend: the gateway can serve");
}

#[tokio::test]
async fn no_request_fails_under_load_while_one_backend_is_healthy() {
    let names = ["good", "dead", "errors", "hung"];
    let mocks: Vec<MockServer> = futures_util::future::join_all(names.map(mock)).await;
    let named: Vec<(&str, &MockServer)> = names.into_iter().zip(mocks.iter()).collect();
    let toml = config(
        "weighted_random",
        &named,
        &[],
        "max_retries = 3\nrequest_timeout_seconds = 5\nattempt_timeout_seconds = 0.3\nfirst_byte_timeout_seconds = 0.3\ncircuit_breaker_threshold = 3",
    );
    let gw = Arc::new(TestGateway::start(&toml).await);
    let mut mocks = mocks.into_iter();
    let good = mocks.next().expect("good");
    drop(mocks.next()); // dead: connection refused from now on
    let errors = mocks.next().expect("errors");
    let hung = mocks.next().expect("hung");
    fail(&errors, FailMode::Status(500));
    fail(&hung, FailMode::Hang);

    let workers = (0..8).map(|w| {
        let gw = gw.clone();
        tokio::spawn(async move {
            let mut failures = Vec::new();
            for i in 0..25 {
                let mut body = chat_body("m");
                // A quarter of the load is streamed.
                if (w + i) % 4 == 0 {
                    body["stream"] = serde_json::json!(true);
                    let reply = stream(&gw.url("/v1/chat/completions"), TOKEN, &body).await;
                    if reply.status != 200 || !reply.text().ends_with("data: [DONE]\n\n") {
                        failures.push(format!("stream {w}/{i}: {} {}", reply.status, reply.text()));
                    }
                } else {
                    let reply = gw.chat(TOKEN, &body).await;
                    if reply.status != 200 {
                        failures.push(format!("{w}/{i}: {} {}", reply.status, String::from_utf8_lossy(&reply.body)));
                    }
                }
            }
            failures
        })
    });
    let failures: Vec<String> =
        futures_util::future::join_all(workers).await.into_iter().flat_map(|r| r.expect("worker")).collect();
    assert!(failures.is_empty(), "{} failed requests: {failures:?}", failures.len());
    for (i, name) in [(1, "dead"), (2, "errors"), (3, "hung")] {
        assert_eq!(circuit(&gw, i), CircuitView::Open, "{name} should be open");
    }
    assert!(good.state.chat.load(Ordering::Relaxed) >= 200);
}

#[tokio::test]
async fn recovering_traffic_follows_the_stages() {
    let (steady, flaky) = (mock("steady").await, mock("flaky").await);
    let toml = config(
        "weighted_random",
        &[("steady", &steady), ("flaky", &flaky)],
        &["weight = 1", "weight = 1"],
        "circuit_breaker_threshold = 2\ncircuit_breaker_cooldown_seconds = 0.3\nrecovery_successes_per_stage = 60",
    );
    let gw = TestGateway::start(&toml).await;
    fail(&flaky, FailMode::Status(503));
    while circuit(&gw, 1) != CircuitView::Open {
        assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200);
    }
    fail(&flaky, FailMode::None);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(circuit(&gw, 1), CircuitView::HalfOpen { stage: 0 });

    // Tally, per stage the flaky backend was in when each request started, how many
    // requests it answered.
    let mut tally: HashMap<u8, (u32, u32)> = HashMap::new();
    for _ in 0..5000 {
        let stage = match circuit(&gw, 1) {
            CircuitView::HalfOpen { stage } => stage,
            CircuitView::Closed => break,
            CircuitView::Open => panic!("re-opened without failures"),
        };
        let reply = gw.chat(TOKEN, &chat_body("m")).await;
        assert_eq!(reply.status, 200);
        let entry = tally.entry(stage).or_default();
        entry.0 += 1;
        entry.1 += u32::from(reply.answered_by() == "flaky");
    }
    assert_eq!(circuit(&gw, 1), CircuitView::Closed, "recovered fully: {tally:?}");
    // Weight share f/(1+f) for stage factors 0.1, 0.3, 0.5; 60 successes per stage
    // leave a relative error of ~12%, so allow 50% (4 sd).
    for (stage, factor) in [(0u8, 0.1f64), (1, 0.3), (2, 0.5)] {
        let (requests, flaky_answers) = tally.get(&stage).copied().unwrap_or_default();
        let share = f64::from(flaky_answers) / f64::from(requests.max(1));
        let expected = factor / (1.0 + factor);
        assert!(
            (share - expected).abs() <= expected * 0.5,
            "stage {stage}: share {share:.3}, expected {expected:.3} ({tally:?})"
        );
    }
}

#[tokio::test]
async fn probes_recover_idle_per_token_backends_and_never_touch_per_request_ones() {
    let (tokens, requests, good) = (mock("tokens").await, mock("requests").await, mock("good").await);
    let toml = config(
        "failover",
        &[("tokens", &tokens), ("requests", &requests), ("good", &good)],
        &[
            "priority = 1",
            "priority = 2\nbilling_mode = \"per_request\"",
            "priority = 3\nbilling_mode = \"per_request\"",
        ],
        "health_check_interval_seconds = 0.1\nrecovery_check_interval_seconds = 0.1\ncircuit_breaker_threshold = 2\n\
         circuit_breaker_cooldown_seconds = 0.2\nrecovery_successes_per_stage = 1",
    );
    let gw = TestGateway::start(&toml).await;
    fail(&tokens, FailMode::Status(500));
    fail(&requests, FailMode::Status(500));
    for _ in 0..2 {
        assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.answered_by(), "good");
    }
    assert_eq!(circuit(&gw, 0), CircuitView::Open);
    assert_eq!(circuit(&gw, 1), CircuitView::Open);

    // Both recover, but no traffic flows: only the probe can notice.
    fail(&tokens, FailMode::None);
    fail(&requests, FailMode::None);
    let mut waited = Duration::ZERO;
    while circuit(&gw, 0) != CircuitView::Closed && waited < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    assert_eq!(circuit(&gw, 0), CircuitView::Closed, "the probe should have walked it back to closed");
    assert!(tokens.state.models.load(Ordering::Relaxed) > 0);
    assert_eq!(requests.state.models.load(Ordering::Relaxed), 0, "per_request backends are never probed");
    assert_eq!(good.state.models.load(Ordering::Relaxed), 0, "per_request backends are never probed");
    assert_ne!(circuit(&gw, 1), CircuitView::Closed, "without traffic a per_request backend stays recovering");
    assert_eq!(requests.state.chat.load(Ordering::Relaxed), 2, "and it got no probe chats either");
}

#[tokio::test]
async fn the_weights_endpoint_needs_the_admin_token() {
    let up = mock("up").await;
    let gw = TestGateway::start(&config("smart_ai", &[("up", &up)], &[], "admin_token = \"berry-admin-secret\"")).await;
    gw.get("/smart-ai/weights", None).await.assert_error(401, "missing_api_key");
    gw.get("/smart-ai/weights", Some(TOKEN)).await.assert_error(401, "invalid_admin_token");
    let ok = gw.get("/smart-ai/weights", Some("berry-admin-secret")).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["models"][0]["model"], "m");
    gw.get("/smart-ai/models/nope/weights", Some("berry-admin-secret")).await.assert_error(404, "model_not_found");
    let one = gw.get("/smart-ai/models/m/weights", Some("berry-admin-secret")).await;
    assert_eq!(one.json()["models"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn the_weights_shown_are_the_weights_used() {
    let mocks: Vec<MockServer> = futures_util::future::join_all(["a", "b", "c"].map(mock)).await;
    let named: Vec<(&str, &MockServer)> = ["a", "b", "c"].into_iter().zip(mocks.iter()).collect();
    let toml = config(
        "smart_ai",
        &named,
        &["weight = 1\ntags = [\"premium\"]", "weight = 2", "weight = 5"],
        "admin_token = \"adm\"",
    );
    let gw = TestGateway::start(&toml).await;
    // Warm up until every confidence has saturated, so the weights hold still.
    for _ in 0..150 {
        assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200);
    }
    let shown = gw.get("/smart-ai/models/m/weights", Some("adm")).await.json();
    let backends = shown["models"][0]["backends"].as_array().expect("backends").clone();
    let p: Vec<f64> = backends.iter().map(|b| b["probability"].as_f64().expect("probability")).collect();
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{shown}");
    // a is premium: no stability bonus; b and c get 1.1.
    assert_eq!(backends[0]["factors"]["stability_bonus"], 1.0);
    assert_eq!(backends[1]["factors"]["stability_bonus"], 1.1);

    let n = 1500;
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..n {
        *counts.entry(gw.chat(TOKEN, &chat_body("m")).await.answered_by()).or_default() += 1;
    }
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        let observed = f64::from(*counts.get(*name).unwrap_or(&0)) / f64::from(n);
        let sd = (p[i] * (1.0 - p[i]) / f64::from(n)).sqrt();
        assert!(
            (observed - p[i]).abs() <= 4.5 * sd + 0.005,
            "{name}: observed {observed:.3}, shown {:.3} ({counts:?})",
            p[i]
        );
    }
}

#[tokio::test]
async fn smart_ai_shifts_traffic_away_from_a_flaky_backend() {
    let (steady, flaky) = (mock("steady").await, mock("flaky").await);
    set(&flaky, MockUpdate { fail: Some(FailMode::Status(500)), fail_rate: Some(0.3), ..Default::default() });
    let toml = config(
        "smart_ai",
        &[("steady", &steady), ("flaky", &flaky)],
        &["weight = 1", "weight = 1"],
        // A threshold the flaky backend never reaches: this is about confidence, not circuits.
        "circuit_breaker_threshold = 1000\n[settings.smart_ai]\nexploration_ratio = 0.1\n\
         [settings.smart_ai.confidence_adjustments]\nserver_error_penalty = 0.5",
    );
    let gw = TestGateway::start(&toml).await;
    for _ in 0..200 {
        assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200);
    }
    let before = flaky.state.chat.load(Ordering::Relaxed);
    let n = 1000;
    for _ in 0..n {
        assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200);
    }
    let share = (flaky.state.chat.load(Ordering::Relaxed) - before) as f64 / f64::from(n);
    eprintln!("flaky share {share:.3}");
    // Its weight alone gives 0.5. Each failure costs 0.5 confidence, each success
    // earns 0.1, so its confidence sinks toward the floor and its share to ~0.35.
    assert!(share < 0.45, "flaky share {share:.3}");
    assert!(share > 0.05, "exploration keeps measuring it: {share:.3}");
}

#[tokio::test]
async fn with_nothing_healthy_requests_still_try_and_503_only_when_all_fail() {
    let (a, b) = (mock("a").await, mock("b").await);
    let toml = config(
        "round_robin",
        &[("a", &a), ("b", &b)],
        &[],
        "circuit_breaker_threshold = 1\ncircuit_breaker_cooldown_seconds = 600",
    );
    let gw = TestGateway::start(&toml).await;
    fail(&a, FailMode::Status(500));
    fail(&b, FailMode::Status(500));
    // Healthy backends that fail: an upstream failure.
    gw.chat(TOKEN, &chat_body("m")).await.assert_error(502, "upstream_error");
    assert_eq!((circuit(&gw, 0), circuit(&gw, 1)), (CircuitView::Open, CircuitView::Open));
    // Every backend already down, and every attempt failing again: unavailable.
    gw.chat(TOKEN, &chat_body("m")).await.assert_error(503, "no_backend_available");
    assert_eq!(a.state.chat.load(Ordering::Relaxed), 2, "still tried while down");
    assert_eq!(gw.get("/health", None).await.status, 503, "no model can be served");
    assert_eq!(gw.get("/v1/health", None).await.status, 503);

    // Both recovered, circuits still open: requests try them anyway (least recently
    // failed first) instead of refusing.
    fail(&a, FailMode::None);
    fail(&b, FailMode::None);
    let reply = gw.chat(TOKEN, &chat_body("m")).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.answered_by(), "a", "a failed first, so it is the least recently failed");
}
