//! Misbehaving plugins, built from source: the gateway contains them.

use std::time::{Duration, Instant};

use crate::harness::*;

async fn gateway_misbehaving(how: &str) -> (TestGateway, berry::mock::MockServer) {
    let up = mock("up").await;
    let mut toml = config("misbehave", &[("up", &up)], &[], "");
    let (entry, from_ms) = misbehave_later("misbehave", how, Duration::from_secs(3), "memory_mb = 8\ntimeout_ms = 50");
    toml.push_str(&entry);
    let gw = TestGateway::start(&toml).await;
    until_epoch_ms(from_ms).await;
    (gw, up)
}

/// The plugin fails every call, yet every request is answered (through the host's
/// fallback order) promptly, and the gateway keeps serving. (A plugin that fails
/// from the start is refused at load: see `broken_plugins`.)
async fn contained(how: &str) {
    let (gw, _up) = gateway_misbehaving(how).await;
    for i in 0..5 {
        let started = Instant::now();
        let reply = gw.chat(TOKEN, &chat_body("m")).await;
        assert_eq!(reply.status, 200, "{how}, request {i}: {}", String::from_utf8_lossy(&reply.body));
        assert!(started.elapsed() < Duration::from_secs(5), "{how}: answer took {:?}", started.elapsed());
    }
    // Other routes and endpoints are unaffected.
    assert_eq!(gw.chat(TOKEN, &chat_body("other")).await.status, 200);
    assert_eq!(gw.get("/v1/health", None).await.status, 200);
    let stats = gw.gateway.snapshot();
    let strategy = stats.strategies.get("misbehave").expect("plugin loaded");
    assert!(
        strategy.stats().failures.load(std::sync::atomic::Ordering::Relaxed) >= 5,
        "{how}: failures must be counted"
    );
}

#[tokio::test]
async fn a_looping_strategy_is_cut_by_its_deadline() {
    contained("loop").await;
}

#[tokio::test]
async fn a_trapping_strategy_is_contained() {
    contained("trap").await;
}

#[tokio::test]
async fn a_strategy_exhausting_memory_is_contained() {
    contained("hungry").await;
}

#[tokio::test]
async fn a_failing_auth_policy_denies() {
    let up = mock("up").await;
    let mut toml = config("weighted_random", &[("up", &up)], &[], "");
    let from_ms = epoch_ms() + 3_000;
    toml.push_str(&format!(
        "\n[plugins.auth_misbehave_later]\npath = {:?}\nkind = \"auth\"\nconfig = {{ from_ms = {from_ms} }}\n\
         [auth]\npolicy = \"auth_misbehave_later\"\ncache_seconds = 0\n",
        test_plugin("auth_misbehave_later").display().to_string()
    ));
    let gw = TestGateway::start(&toml).await;
    assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200, "it works until it breaks");
    until_epoch_ms(from_ms).await;
    let served = up.state.chat.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..3 {
        gw.chat(TOKEN, &chat_body("m")).await.assert_error(503, "auth_policy_unavailable");
    }
    assert_eq!(up.state.chat.load(std::sync::atomic::Ordering::Relaxed), served, "nothing more may reach a provider");
    assert_eq!(gw.get("/v1/health", None).await.status, 200);
}

#[tokio::test]
async fn a_file_that_is_not_a_component_is_rejected_at_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("junk.wasm");
    std::fs::write(&path, b"definitely not wasm").expect("write");
    let up = mock("up").await;
    let mut toml = config("junk", &[("up", &up)], &[], "");
    toml.push_str(&format!("\n[plugins.junk]\npath = {:?}\nkind = \"strategy\"\n", path.display().to_string()));
    let config = berry::config::parse(&toml, &|_| None).expect("config parses");
    let err = berry::gateway::Gateway::start(config).await.err().expect("must be rejected");
    assert!(err.contains("junk") && err.contains("not a WebAssembly component"), "{err}");
}
