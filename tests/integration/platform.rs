//! The plugin platform: hot swap under load, broken versions rejected, config reload,
//! quarantine, the scaffold, the example plugins, the compiled-plugin cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::Method;
use serde_json::json;

use crate::harness::*;

const ADMIN: &str = "berry-admin-secret";

/// Two backends, model `m` on plugin `router` (starting as `pick_first`).
async fn swappable(extra_settings: &str) -> (TestGateway, berry::mock::MockServer, berry::mock::MockServer) {
    let (a, b) = (mock("a").await, mock("b").await);
    let mut toml =
        config("router", &[("a", &a), ("b", &b)], &[], &format!("admin_token = \"{ADMIN}\"\n{extra_settings}"));
    toml.push_str(&format!(
        "\n[plugins.router]\npath = {:?}\nkind = \"strategy\"\n",
        test_plugin("pick_first").display().to_string()
    ));
    (TestGateway::start(&toml).await, a, b)
}

#[tokio::test]
async fn fifty_swaps_under_load_fail_no_request() {
    let (gw, _a, _b) = swappable("").await;
    let gw = Arc::new(gw);
    let first = std::fs::read(test_plugin("pick_first")).expect("pick_first");
    let last = std::fs::read(test_plugin("pick_last")).expect("pick_last");
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let (gw, stop) = (gw.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut done, mut failures) = (0u32, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    if w % 3 == 0 {
                        let mut body = chat_body("m");
                        body["stream"] = json!(true);
                        let reply = stream(&gw.url("/v1/chat/completions"), TOKEN, &body).await;
                        if reply.status != 200 || !reply.text().ends_with("data: [DONE]\n\n") {
                            failures.push(format!("stream: {} {}", reply.status, reply.text()));
                        }
                    } else {
                        let reply = gw.chat(TOKEN, &chat_body("m")).await;
                        if reply.status != 200 {
                            failures.push(format!("{} {}", reply.status, String::from_utf8_lossy(&reply.body)));
                        }
                    }
                    done += 1;
                }
                (done, failures)
            })
        })
        .collect();

    let mut slowest = Duration::ZERO;
    for swap in 0..50 {
        let (bytes, expected) = if swap % 2 == 0 { (&last, "b") } else { (&first, "a") };
        let started = Instant::now();
        let reply = gw.admin(Method::PUT, "/admin/plugins/router", ADMIN, bytes.clone()).await;
        assert_eq!(reply.status, 200, "swap {swap}: {}", String::from_utf8_lossy(&reply.body));
        // The swap is in service when the upload returns: the very next request sees it.
        let next = gw.chat(TOKEN, &chat_body("m")).await;
        assert_eq!(next.answered_by(), expected, "swap {swap}");
        slowest = slowest.max(started.elapsed());
    }
    // Reported, not asserted: how fast is a benchmark's business (BENCHMARKS.md).
    eprintln!("slowest upload → next request on the new version: {slowest:?}");
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for worker in workers {
        let (done, failures) = worker.await.expect("worker");
        assert!(failures.is_empty(), "{failures:?}");
        total += done;
    }
    assert!(total > 50, "the load kept flowing during the swaps ({total} requests)");
    let listed = gw.get("/admin/plugins", Some(ADMIN)).await.json();
    assert_eq!(listed["swaps"], 50);
    assert_eq!(listed["uploaded"], json!(["router"]));
}

#[tokio::test]
async fn broken_versions_are_rejected_and_the_old_one_keeps_serving() {
    let (gw, _a, _b) = swappable("").await;
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("corrupt", b"\0asm\x01\0\0\0 garbage".to_vec(), "not a WebAssembly component"),
        (
            "wrong version",
            std::fs::read(test_plugin("wrong_version")).expect("wasm"),
            // Issue 17, item 12: the version it claims, read apart from the SDK's own stamp.
            "for WIT berry:gateway@0.9.0, but this gateway loads berry:gateway@0.2.0 and @0.1.0: rebuild the plugin against berry-plugin-sdk",
        ),
        (
            "traps in its smoke call",
            std::fs::read(test_plugin("configure_trap")).expect("wasm"),
            "failed while loading",
        ),
    ];
    for (what, bytes, message) in cases {
        let reply = gw.admin(Method::PUT, "/admin/plugins/router", ADMIN, bytes).await;
        reply.assert_error(422, "plugin_rejected");
        let text = reply.json()["error"]["message"].as_str().unwrap_or_default().to_string();
        assert!(text.contains(message), "{what}: {text}");
        assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.answered_by(), "a", "{what}: the old version still serves");
    }
    let plugins = gw.get("/admin/plugins", Some(ADMIN)).await.json();
    let router =
        plugins["plugins"].as_array().expect("list").iter().find(|p| p["name"] == "router").cloned().expect("router");
    assert_eq!(router["sdk_version"], "0.2.0");
    assert!(router["source"].as_str().is_some_and(|s| s.ends_with("pick_first.wasm")), "{router}");
    // Issue 18: an unknown plugin is not found (404), not a rejected version.
    gw.admin(Method::PUT, "/admin/plugins/nope", ADMIN, vec![]).await.assert_error(404, "unknown_plugin");
    gw.admin(Method::PUT, "/admin/plugins/router", TOKEN, vec![]).await.assert_error(401, "invalid_admin_token");
}

/// Issue 22: a strategy built against the frozen 0.1 SDK (`tests/plugins/legacy_v01`)
/// and one built against 0.2 (`pick_first`) route side by side in one gateway. The
/// 0.1 one goes through every call of the adapter: `select` with its records and
/// the caller's tags, `observe` (batched by the host, delivered one by one), and
/// `explain`.
#[tokio::test]
async fn a_0_1_plugin_and_a_0_2_plugin_route_side_by_side() {
    let (a, b) = (mock("a").await, mock("b").await);
    let mut toml = config("legacy", &[("a", &a), ("b", &b)], &[], &format!("admin_token = \"{ADMIN}\""));
    toml.push_str(&format!(
        "\n[plugins.legacy]\npath = {:?}\nkind = \"strategy\"\n\n[plugins.router]\npath = {:?}\nkind = \"strategy\"\n\n\
         [models.n]\nname = \"n\"\nstrategy = \"router\"\n\
         [[models.n.backends]]\nprovider = \"a\"\nmodel = \"up-model\"\n\
         [[models.n.backends]]\nprovider = \"b\"\nmodel = \"up-model\"\n\n\
         [users.firsty]\ntoken = \"berry-first-token\"\ntags = [\"first\"]\n",
        test_plugin("legacy_v01").display().to_string(),
        test_plugin("pick_first").display().to_string(),
    ));
    let gw = TestGateway::start(&toml).await;
    let plugins = gw.get("/admin/plugins", Some(ADMIN)).await.json();
    let listed = |name: &str| {
        plugins["plugins"].as_array().expect("list").iter().find(|p| p["name"] == name).cloned().expect(name)
    };
    assert_eq!((listed("legacy")["contract"].clone(), listed("legacy")["sdk_version"].clone()), (json!("0.1.0"), json!("0.1.0")));
    assert_eq!((listed("router")["contract"].clone(), listed("router")["sdk_version"].clone()), (json!("0.2.0"), json!("0.2.0")));

    // No scores yet: the 0.1 plugin ranks the last backend first; the 0.2 one the first.
    for _ in 0..3 {
        assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.answered_by(), "b");
        assert_eq!(gw.chat(TOKEN, &chat_body("n")).await.answered_by(), "a");
    }
    // The caller's tags reach a 0.1 plugin in its request record.
    assert_eq!(gw.chat("berry-first-token", &chat_body("m")).await.answered_by(), "a");
    // Its `observe` kept a score per success (+1), shown by its `explain`.
    let weights = gw.get("/smart-ai/models/m/weights", Some(ADMIN)).await.json();
    let score = |i: usize| weights["models"][0]["backends"][i]["factors"]["score"].as_f64();
    assert_eq!((score(0), score(1)), (Some(1.0), Some(3.0)), "{weights}");

    // A failure on b (-10) turns its ranking around: the outcome reaches the plugin
    // with the next `select`, which then prefers a.
    set(&b, berry::mock::MockUpdate { fail: Some(berry::mock::FailMode::Status(500)), fail_next: Some(1), ..Default::default() });
    assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.answered_by(), "a", "b failed, a answered");
    assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.answered_by(), "a", "now a ranks first");
    let weights = gw.get("/smart-ai/models/m/weights", Some(ADMIN)).await.json();
    let score = |i: usize| weights["models"][0]["backends"][i]["factors"]["score"].as_f64();
    assert_eq!((score(0), score(1)), (Some(3.0), Some(-7.0)), "{weights}");
    assert_eq!(gw.chat(TOKEN, &chat_body("n")).await.answered_by(), "a");
}

#[tokio::test]
async fn a_changed_plugin_file_is_swapped_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = dir.path().join("router.wasm");
    std::fs::copy(test_plugin("pick_first"), &plugin).expect("copy");
    let (a, b) = (mock("a").await, mock("b").await);
    let mut toml = config("router", &[("a", &a), ("b", &b)], &[], "");
    toml.push_str("\n[plugins.router]\npath = \"router.wasm\"\nkind = \"strategy\"\n");
    let config_path = dir.path().join("berry.toml");
    std::fs::write(&config_path, toml).expect("write config");
    let gw = TestGateway::start_file(&config_path).await;
    assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.answered_by(), "a");
    tokio::time::sleep(Duration::from_millis(300)).await; // the watcher has seen the file

    // Replace the file the way a build does: write a new one, rename it over.
    let staged = dir.path().join("router.wasm.new");
    std::fs::copy(test_plugin("pick_last"), &staged).expect("copy");
    std::fs::rename(&staged, &plugin).expect("rename");
    let changed = Instant::now();
    let mut seen = None;
    // A bound against hanging, not a speed target (that is measured by benches/load.sh).
    while changed.elapsed() < Duration::from_secs(30) {
        if gw.chat(TOKEN, &chat_body("m")).await.answered_by() == "b" {
            seen = Some(changed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = seen.expect("the new version never served");
    eprintln!("file change → new behaviour: {seen:?}");

    // A broken file is rejected; the running version stays.
    std::fs::write(&plugin, b"not wasm").expect("write");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.answered_by(), "b");
}

#[tokio::test]
async fn a_config_reload_applies_without_dropping_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slow = berry::mock::MockSettings { name: "a".into(), chunks: 10, chunk_delay_ms: 60, ..Default::default() };
    let (a, b) = (mock_with(slow).await, mock("b").await);
    let before = config(
        "failover",
        &[("a", &a), ("b", &b)],
        &["priority = 1", "priority = 2"],
        &format!("admin_token = \"{ADMIN}\""),
    );
    let config_path = dir.path().join("berry.toml");
    std::fs::write(&config_path, &before).expect("write");
    let gw = TestGateway::start_file(&config_path).await;
    assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.answered_by(), "a");
    gw.chat("berry-new-user-token", &chat_body("m")).await.assert_error(401, "invalid_api_key");

    // A stream in flight across the reload must finish.
    let mut body = chat_body("m");
    body["stream"] = json!(true);
    let url = gw.url("/v1/chat/completions");
    let in_flight = tokio::spawn(async move { stream(&url, TOKEN, &body).await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Remove backend a, add a user, switch the model's strategy.
    let after = config("round_robin", &[("b", &b)], &[], &format!("admin_token = \"{ADMIN}\""))
        + "\n[users.newcomer]\ntoken = \"berry-new-user-token\"\n";
    std::fs::write(&config_path, after).expect("write");
    let reply = gw.admin(Method::POST, "/admin/reload", ADMIN, vec![]).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    for _ in 0..4 {
        assert_eq!(gw.chat("berry-new-user-token", &chat_body("m")).await.answered_by(), "b");
    }
    let health = gw.get("/health", Some(ADMIN)).await.json();
    assert_eq!(health["models"][0]["strategy"], "round_robin");
    let streamed = in_flight.await.expect("stream task");
    assert_eq!(streamed.status, 200);
    assert!(streamed.text().ends_with("data: [DONE]\n\n"), "the in-flight stream was cut: {}", streamed.text());

    // A broken config is rejected with the reason, and the running one keeps serving.
    std::fs::write(&config_path, "[models.m]\nstrategy = \"nope\"\n").expect("write");
    let reply = gw.admin(Method::POST, "/admin/reload", ADMIN, vec![]).await;
    reply.assert_error(422, "reload_rejected");
    assert!(reply.json()["error"]["message"].as_str().is_some_and(|m| m.contains("models.m")), "{}", reply.json());
    assert_eq!(gw.chat("berry-new-user-token", &chat_body("m")).await.answered_by(), "b");
}

#[tokio::test]
async fn a_plugin_that_keeps_failing_is_quarantined() {
    let up = mock("up").await;
    let mut toml = config("looping", &[("up", &up)], &[], &format!("admin_token = \"{ADMIN}\""));
    let (entry, from_ms) = misbehave_later(
        "looping",
        "loop",
        Duration::from_secs(3),
        "timeout_ms = 20\nquarantine_after = 3\nquarantine_seconds = 600",
    );
    toml.push_str(&entry);
    let gw = TestGateway::start(&toml).await;
    until_epoch_ms(from_ms).await;
    for _ in 0..8 {
        assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200, "the fallback answers");
    }
    let looping = || async {
        let plugins = gw.get("/admin/plugins", Some(ADMIN)).await.json();
        plugins["plugins"].as_array().expect("list").iter().find(|p| p["name"] == "looping").cloned().expect("looping")
    };
    let before = looping().await;
    assert_eq!(before["quarantined"], true, "{before}");
    assert_eq!(before["failures"], 3, "quarantined at exactly quarantine_after failures: {before}");
    assert_eq!(before["used_by"], json!(["m"]));
    for _ in 0..5 {
        assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200);
    }
    assert_eq!(looping().await["calls"], before["calls"], "no calls while quarantined");
}

/// How tenant_auth's config names a key: lowercase hex SHA-256.
fn key_hash(key: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn the_example_plugins_route_and_authenticate() {
    let (cheap, premium) = (mock("cheap").await, mock("premium").await);
    let mut toml = config(
        "tag_router",
        &[("premium", &premium), ("cheap", &cheap)],
        &["tags = [\"premium\"]", "tags = [\"cheap\"]"],
        "",
    );
    toml.push_str(&format!(
        r#"
[plugins.tag_router]
path = {:?}
kind = "strategy"
config = {{ routes = {{ "free-tier" = "cheap" }} }}

[plugins.tenant_auth]
path = {:?}
kind = "auth"
[plugins.tenant_auth.config.tenants.acme]
keys_sha256 = ["{}"]
models = ["m"]
tags = ["free-tier"]
[plugins.tenant_auth.config.tenants.globex]
keys_sha256 = ["{}"]
models = ["other"]

[auth]
policy = "tenant_auth"
"#,
        example_plugin("tag_router").display().to_string(),
        example_plugin("tenant_auth").display().to_string(),
        key_hash("acme-key-1"),
        key_hash("globex-key-1"),
    ));
    let gw = TestGateway::start(&toml).await;
    // acme is tagged free-tier: always routed to the cheap backend.
    for _ in 0..10 {
        let reply = gw.chat("acme-key-1", &chat_body("m")).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        assert_eq!(reply.answered_by(), "cheap");
    }
    // globex may use only "other".
    gw.chat("globex-key-1", &chat_body("m")).await.assert_error(403, "model_not_allowed");
    assert_eq!(gw.chat("globex-key-1", &chat_body("other")).await.status, 200);
    let models = gw.get("/v1/models", Some("globex-key-1")).await.json();
    assert_eq!(models["data"].as_array().map(Vec::len), Some(1));
    gw.chat(TOKEN, &chat_body("m")).await.assert_error(401, "invalid_api_key");
}

/// An auth policy sees exactly the headers it asked for in `configure`: tenant_auth
/// with `tenant_header` requires the tenant's name in that header.
#[tokio::test]
async fn an_auth_policy_gets_the_headers_it_asks_for() {
    use bytes::Bytes;
    use http_body_util::Full;
    let up = mock("up").await;
    let hash = key_hash("acme-key-1");
    let mut toml = config("weighted_random", &[("up", &up)], &[], "");
    toml.push_str(&format!(
        r#"
[plugins.tenant_auth]
path = {:?}
kind = "auth"
[plugins.tenant_auth.config]
tenant_header = "X-Tenant"
[plugins.tenant_auth.config.tenants.acme]
keys_sha256 = ["{hash}"]
models = ["m"]

[auth]
policy = "tenant_auth"
"#,
        example_plugin("tenant_auth").display().to_string(),
    ));
    let gw = TestGateway::start(&toml).await;
    assert_eq!(gw.gateway.snapshot().auth.headers(), ["x-tenant"]);
    let chat = |tenant: Option<&'static str>| {
        let mut request = http::Request::post(gw.url("/v1/chat/completions"))
            .header("authorization", "Bearer acme-key-1")
            .header("content-type", "application/json");
        if let Some(t) = tenant {
            request = request.header("x-tenant", t);
        }
        send_request(request.body(Full::new(Bytes::from(chat_body("m").to_string()))).expect("request"))
    };
    let ok = chat(Some("acme")).await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    // (The host maps a plugin's own denial codes to "forbidden"; the message is the plugin's.)
    for wrong in [chat(Some("globex")).await, chat(None).await] {
        wrong.assert_error(403, "forbidden");
        assert!(String::from_utf8_lossy(&wrong.body).contains("does not belong to the tenant"));
    }
}

#[tokio::test]
async fn the_scaffold_builds_and_loads() {
    let root = repo_root().join("target").join("scaffold-test");
    let _ = std::fs::remove_dir_all(&root);
    for (name, kind) in [("my_router", "strategy"), ("my_auth", "auth")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_berry"))
            .args(["plugin", "new", name, "--kind", kind, "--dir"])
            .arg(root.join(name))
            .output()
            .expect("berry plugin new");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let dir = root.join(name);
        tokio::task::spawn_blocking(move || {
            build_wasm_crate(&dir, &repo_root().join("target").join("scaffold-build"), false)
        })
        .await
        .expect("build");
    }
    let built = repo_root().join("target/scaffold-build/wasm32-wasip2/release");
    let up = mock("up").await;
    let mut toml = config("my_router", &[("up", &up)], &[], "");
    toml.push_str(&format!(
        "\n[plugins.my_router]\npath = {:?}\nkind = \"strategy\"\n[plugins.my_auth]\npath = {:?}\nkind = \"auth\"\n[auth]\npolicy = \"my_auth\"\n",
        built.join("my_router.wasm").display().to_string(),
        built.join("my_auth.wasm").display().to_string(),
    ));
    // Issue 18: the scaffolded policy admits `token_sha256` users too, and grants
    // admin (a pinned backend) to users tagged admin.
    toml.push_str(&format!("\n[users.hashed]\ntoken_sha256 = \"{}\"\n", key_hash("berry-hashed-token")));
    let gw = TestGateway::start(&toml).await;
    assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200);
    assert_eq!(gw.chat("berry-hashed-token", &chat_body("m")).await.status, 200, "a token_sha256 user");
    gw.chat("berry-wrong", &chat_body("m")).await.assert_error(401, "invalid_api_key");
    let mut pinned = chat_body("m");
    pinned["backend"] = json!("up");
    assert_eq!(gw.chat(ADMIN_TOKEN, &pinned).await.status, 200, "an admin may pin a backend");
    gw.chat(TOKEN, &pinned).await.assert_error(403, "backend_pin_forbidden");
}

#[test]
fn compiled_plugins_are_cached_on_disk() {
    let cache = tempfile::tempdir().expect("tempdir");
    let run = || {
        let started = Instant::now();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_berry"))
            .arg("check-config")
            .arg(repo_root().join("config/berry.toml"))
            .env("BERRY_CACHE_DIR", cache.path())
            .output()
            .expect("run berry");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        started.elapsed()
    };
    let cold = run();
    let entries = || {
        std::fs::read_dir(cache.path())
            .expect("cache dir")
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .count()
    };
    // The demo config uses six of the stock plugins (five strategies and token_auth).
    assert_eq!(entries(), 6);
    let warm = run();
    assert_eq!(entries(), 6, "a warm start writes nothing new");
    eprintln!("check-config with the demo config: cold {cold:?}, warm {warm:?}");
}

/// A strategy written as ordinary Rust (HashMap, serde_json, regex, the clocks) loads
/// and routes: the host answers WASI randomness and clocks.
#[tokio::test]
async fn a_plugin_in_ordinary_rust_loads_and_routes() {
    let (a, b) = (mock("a").await, mock("b").await);
    let mut toml = config("ordinary", &[("alpha", &a), ("beta", &b)], &[], "");
    toml.push_str(&format!(
        "\n[plugins.ordinary]\npath = {:?}\nkind = \"strategy\"\nconfig = {{ prefer = \"^be\" }}\n",
        test_plugin("ordinary_rust").display().to_string()
    ));
    let gw = TestGateway::start(&toml).await;
    for _ in 0..5 {
        assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.answered_by(), "b", "the regex prefers beta");
    }
    let stats = gw.gateway.snapshot();
    let plugin = stats.strategies.get("ordinary").expect("loaded");
    assert_eq!(plugin.stats().failures.load(std::sync::atomic::Ordering::Relaxed), 0);
}

/// A plugin that traps while loading says why: the trap, the plugin's own panic
/// message and the wasm backtrace, in check-config, the admin API and the log.
#[tokio::test]
async fn a_plugin_that_traps_while_loading_says_why() {
    let up = mock("up").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("berry.toml");
    let mut toml = config("broken", &[("up", &up)], &[], "");
    toml.push_str(&format!(
        "\n[plugins.broken]\npath = {:?}\nkind = \"strategy\"\n",
        test_plugin("configure_trap").display().to_string()
    ));
    std::fs::write(&path, &toml).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berry"))
        .arg("check-config")
        .arg(&path)
        .env("BERRY_CACHE_DIR", "")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for expected in [
        "plugin broken failed while loading",
        "wasm `unreachable` instruction executed",
        "plugin panicked: panicked at configure_trap/src/lib.rs",
        "configure_trap: cannot make sense of 2 bytes of config",
        "wasm backtrace:",
        "   0: ",
    ] {
        assert!(stderr.contains(expected), "check-config must say {expected:?}:\n{stderr}");
    }
    // The first frame is the one that panicked (inlining decides whether that is
    // the plugin's `new` or the SDK's `configure` glue around it).
    assert!(
        ["   0: <configure_trap::ConfigureTrap as berry_plugin_sdk::strategy::Strategy>::new", "   0: berry_plugin_sdk::strategy::__configure"]
            .iter()
            .any(|frame| stderr.contains(frame)),
        "the backtrace starts where the plugin panicked:\n{stderr}"
    );

    let gw = TestGateway::start(&config("weighted_random", &[("up", &up)], &[], &format!("admin_token = \"{ADMIN}\"")))
        .await;
    let bytes = std::fs::read(test_plugin("configure_trap")).expect("wasm");
    let reply = gw.admin(Method::PUT, "/admin/plugins/weighted_random", ADMIN, bytes).await;
    reply.assert_error(422, "plugin_rejected");
    let message = reply.json()["error"]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("configure_trap: cannot make sense") && message.contains("wasm backtrace:"), "{message}");

    // The admin list shows the stock plugins that could be used but are not.
    let list = gw.get("/admin/plugins", Some(ADMIN)).await.json();
    let available: Vec<&str> =
        list["available"].as_array().expect("available").iter().filter_map(|p| p["name"].as_str()).collect();
    for name in ["round_robin", "least_latency", "failover", "random", "smart_ai"] {
        assert!(available.contains(&name), "{name} is available: {list}");
    }
    assert!(!available.contains(&"weighted_random"), "in use, so listed under plugins: {list}");
}

/// An admitted caller is remembered for the snapshot's life (or `auth.cache_seconds`):
/// the policy is asked once, and a reload that disables the user refuses them at once.
#[tokio::test]
async fn admitted_callers_are_remembered_until_the_config_changes() {
    let up = mock("up").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("berry.toml");
    let toml = config("weighted_random", &[("up", &up)], &[], &format!("admin_token = \"{ADMIN}\""));
    std::fs::write(&path, &toml).expect("write");
    let gw = TestGateway::start_file(&path).await;
    let auth_calls = |gw: &TestGateway| {
        let snapshot = gw.gateway.snapshot();
        snapshot.auth.stats().calls.load(Ordering::Relaxed)
    };
    for _ in 0..5 {
        assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200);
    }
    assert_eq!(auth_calls(&gw), 1, "asked once, then remembered");
    std::fs::write(&path, toml.replace("[users.tester]\n", "[users.tester]\nenabled = false\n")).expect("write");
    let reply = gw.admin(Method::POST, "/admin/reload", ADMIN, vec![]).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    gw.chat(TOKEN, &chat_body("m")).await.assert_error(401, "user_disabled");

    // With the cache off, every request asks the policy.
    let off =
        TestGateway::start(&(config("weighted_random", &[("up", &up)], &[], "") + "[auth]\ncache_seconds = 0\n")).await;
    for _ in 0..3 {
        assert_eq!(off.chat(TOKEN, &chat_body("m")).await.status, 200);
    }
    assert_eq!(auth_calls(&off), 3);
}

/// Learning from outcomes costs no sandbox call of its own (contract 0.2): each
/// request's `select` carries the outcomes since the last one, so a strategy is
/// called about once per request whether it learns (smart_ai) or says it does not
/// (`OBSERVES = false`, which is then never sent outcomes). Outcomes no request
/// carries are delivered within 100 ms, and before scores are shown.
#[tokio::test]
async fn outcomes_ride_with_the_next_select() {
    let up = mock("up").await;
    for (strategy, learns) in [("weighted_random", false), ("smart_ai", true)] {
        let gw = TestGateway::start(&config(strategy, &[("up", &up)], &[], "admin_token = \"adm\"")).await;
        let started = Instant::now();
        for _ in 0..20 {
            assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200);
        }
        // At most one delivery of its own per 100 ms tick (none when the next
        // request came first); one call per attempt would make 40.
        let ticks = started.elapsed().as_millis() as u64 / 100 + 1;
        let snapshot = gw.gateway.snapshot();
        let calls = || snapshot.strategies[strategy].stats().calls.load(Ordering::Relaxed);
        let made = calls();
        if learns {
            assert!((20..=20 + ticks).contains(&made), "{strategy}: {made} calls for 20 requests in {ticks} ticks");
        } else {
            assert_eq!(made, 20, "{strategy}: one call per request, never an outcome");
        }
        // Showing the weights delivers what still waits: every success counted
        // (0.8 + 20 × 0.1, clamped to 1).
        let weights = gw.get("/smart-ai/models/m/weights", Some("adm")).await;
        assert_eq!(weights.status, 200);
        let score = snapshot.routes["m"].backends[0].health.score().map(|(s, _)| (s * 100.0).round());
        assert_eq!(score, learns.then_some(100.0), "{strategy}");
    }
}
