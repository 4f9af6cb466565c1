//! Operating Berry: metrics, secrets, the status page, rate limits, admin security,
//! graceful shutdown of the real binary.

use std::io::Read;
use std::time::Duration;

use berry::mock::{FailMode, MockUpdate};
use http::Method;
use serde_json::json;

use crate::harness::*;

fn scrape(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus exposition")
}

/// The sum of a metric's samples whose labels include all of `labels`.
fn total(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn metrics_count_exactly_what_happened() {
    let (bad, good) = (mock("bad").await, mock("good").await);
    let gw = TestGateway::start(&config(
        "failover",
        &[("bad", &bad), ("good", &good)],
        &["priority = 1", "priority = 2"],
        "circuit_breaker_threshold = 100",
    ))
    .await;
    // 3 plain successes on the primary.
    for _ in 0..3 {
        assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200);
    }
    // 2 streams with usage.
    for _ in 0..2 {
        let mut body = chat_body("m");
        body["stream"] = json!(true);
        body["stream_options"] = json!({ "include_usage": true });
        assert_eq!(stream(&gw.url("/v1/chat/completions"), TOKEN, &body).await.status, 200);
    }
    // 1 failover: the primary answers 500, the secondary serves.
    set(&bad, MockUpdate { fail: Some(FailMode::Status(500)), ..Default::default() });
    assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.answered_by(), "good");
    // 4xx: a wrong token, an unknown model, a forbidden model.
    gw.chat("berry-nope", &chat_body("m")).await.assert_error(401, "invalid_api_key");
    gw.chat(TOKEN, &chat_body("no-such-model")).await.assert_error(404, "model_not_found");
    gw.chat("berry-restricted-token", &chat_body("m")).await.assert_error(403, "model_not_allowed");

    let reply = gw.get("/metrics", None).await;
    assert_eq!(reply.status, 200);
    let text = String::from_utf8_lossy(&reply.body).to_string();
    let s = scrape(&text);
    assert_eq!(total(&s, "berry_requests_total", &[]), 9.0, "{text}");
    assert_eq!(
        total(&s, "berry_requests_total", &[("model", "m"), ("backend", "bad/up-model"), ("status", "2xx")]),
        5.0
    );
    assert_eq!(
        total(&s, "berry_requests_total", &[("model", "m"), ("backend", "good/up-model"), ("status", "2xx")]),
        1.0
    );
    assert_eq!(total(&s, "berry_requests_total", &[("status", "4xx")]), 3.0);
    assert_eq!(total(&s, "berry_requests_total", &[("model", "-")]), 2.0, "unknown or unauthenticated: no model label");
    assert_eq!(total(&s, "berry_upstream_attempts_total", &[]), 7.0);
    assert_eq!(total(&s, "berry_upstream_attempts_total", &[("backend", "bad/up-model"), ("outcome", "server")]), 1.0);
    assert_eq!(total(&s, "berry_upstream_retries_total", &[("model", "m")]), 1.0);
    assert_eq!(total(&s, "berry_request_duration_seconds_count", &[("model", "m")]), 7.0);
    assert_eq!(total(&s, "berry_time_to_first_byte_seconds_count", &[("model", "m")]), 2.0);
    assert!(total(&s, "berry_tokens_total", &[("user", "tester"), ("kind", "completion")]) > 0.0);
    // Streams report their usage too: every one of the 6 answers had some.
    let streamed_and_plain = total(&s, "berry_tokens_total", &[("user", "tester"), ("kind", "prompt")]);
    assert!(streamed_and_plain >= 6.0, "{streamed_and_plain}");
    assert_eq!(total(&s, "berry_backend_healthy", &[("provider", "good")]), 1.0);
    assert!(total(&s, "berry_plugin_calls_total", &[("plugin", "failover")]) >= 6.0);
    // Three callers: an admitted caller is remembered (the principal cache), so the
    // policy judged each token once, the refused one every time it came.
    assert_eq!(total(&s, "berry_plugin_calls_total", &[("plugin", "token_auth")]), 3.0);
    assert!(text.contains("berry_effective_weight{"), "{text}");
    assert!(!text.contains("sk-"), "no secrets in metrics");
}

#[tokio::test]
async fn rate_limits_allow_exactly_the_limit_per_user() {
    let up = mock("up").await;
    let mut toml = config("weighted_random", &[("up", &up)], &[], "");
    toml = toml.replace(
        "[users.tester]\ntoken = \"berry-test-token\"",
        "[users.tester]\ntoken = \"berry-test-token\"\n[users.tester.rate_limit]\nrequests_per_minute = 5",
    );
    let gw = TestGateway::start(&toml).await;
    let body = chat_body("m");
    let replies = futures_util::future::join_all((0..8).map(|_| gw.chat(TOKEN, &body))).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 5, "exactly the limit passes");
    for r in replies.iter().filter(|r| r.status != 200) {
        r.assert_error(429, "rate_limit_exceeded");
        let retry: u64 = r.headers.get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok()).expect("Retry-After");
        assert!((1..=12).contains(&retry), "{retry}");
        assert_eq!(r.headers.get("x-ratelimit-remaining-requests").map(|v| v.as_bytes()), Some(&b"0"[..]));
    }
    let passed = replies.iter().find(|r| r.status == 200).expect("one passed");
    assert_eq!(passed.headers.get("x-ratelimit-limit-requests").map(|v| v.as_bytes()), Some(&b"5"[..]));
    // Another user is not affected.
    for _ in 0..6 {
        assert_eq!(gw.chat(ADMIN_TOKEN, &chat_body("m")).await.status, 200);
    }
    let s = scrape(&String::from_utf8_lossy(&gw.get("/metrics", None).await.body));
    assert_eq!(total(&s, "berry_rate_limit_rejections_total", &[("user", "tester")]), 3.0);
}

#[tokio::test]
async fn admin_routes_need_the_admin_token() {
    let up = mock("up").await;
    let gw = TestGateway::start(&config(
        "weighted_random",
        &[("up", &up)],
        &[],
        "admin_token = \"berry-admin-x\"\nprotect_metrics = true\nprotect_status = true",
    ))
    .await;
    for (method, path) in [
        (Method::GET, "/admin/plugins"),
        (Method::PUT, "/admin/plugins/weighted_random"),
        (Method::DELETE, "/admin/plugins/weighted_random"),
        (Method::POST, "/admin/reload"),
        (Method::GET, "/smart-ai/weights"),
        (Method::GET, "/smart-ai/models/m/weights"),
        (Method::GET, "/metrics"),
        (Method::GET, "/status.json"),
    ] {
        let none = send(method.clone(), &gw.url(path), None, None).await;
        assert_eq!(none.status, 401, "{method} {path} without a token");
        let user = send(method.clone(), &gw.url(path), Some(TOKEN), None).await;
        assert_eq!(user.status, 401, "{method} {path} with a user token");
    }
    assert_eq!(gw.get("/metrics", Some("berry-admin-x")).await.status, 200);
    assert_eq!(gw.get("/status.json", Some("berry-admin-x")).await.status, 200);
    // Without an admin token configured, the admin API is off altogether.
    let open = TestGateway::start(&config("weighted_random", &[("up", &up)], &[], "")).await;
    open.get("/admin/plugins", Some("anything")).await.assert_error(403, "admin_disabled");
}

#[tokio::test]
async fn sigterm_lets_twenty_open_streams_finish() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("berry.toml");
    std::fs::write(
        &config,
        format!(
            "[settings]\ndrain_timeout_seconds = 20\n[providers.slow]\nbase_url = \"mock://slow?chunks=10&chunk_delay_ms=150\"\nmodels = [\"s\"]\n\
             [models.m]\nname = \"m\"\n[[models.m.backends]]\nprovider = \"slow\"\nmodel = \"s\"\n[models.other]\nname = \"other\"\n\
             [[models.other.backends]]\nprovider = \"slow\"\nmodel = \"s\"\n{}",
            users_toml()
        ),
    )
    .expect("write");
    let (child, base, _log) = spawn_berry(&config, &[]);
    let mut body = chat_body("m");
    body["stream"] = json!(true);
    // Open 20 streams and wait until each has its first chunk.
    let mut opened = Vec::new();
    for _ in 0..20 {
        let (status, mut incoming) = open_stream(&format!("{base}/v1/chat/completions"), TOKEN, &body).await;
        assert_eq!(status, 200);
        let first = http_body_util::BodyExt::frame(&mut incoming).await.expect("first chunk").expect("frame");
        opened.push((first.into_data().expect("data"), incoming));
    }
    sigterm(&child);
    let finished = futures_util::future::join_all(opened.into_iter().map(|(first, incoming)| async move {
        let rest = http_body_util::BodyExt::collect(incoming).await.map(|c| c.to_bytes());
        (first, rest)
    }))
    .await;
    for (i, (first, rest)) in finished.into_iter().enumerate() {
        let rest = rest.unwrap_or_else(|e| panic!("stream {i} was cut: {e}"));
        let text = String::from_utf8_lossy(&first).to_string() + &String::from_utf8_lossy(&rest);
        assert!(text.ends_with("data: [DONE]\n\n"), "stream {i} incomplete: {text}");
    }
    let started = std::time::Instant::now();
    let status = exit_of(child).await;
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(20), "exited within the drain timeout");
}

#[tokio::test]
async fn no_secret_ever_reaches_logs_metrics_or_admin_output() {
    let secrets = [
        "sk-provider-secret-alpha",
        "sk-provider-secret-beta",
        "berry-user-secret-1",
        "berry-user-secret-2",
        "berry-admin-secret-3",
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("berry.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[settings]
admin_token = "{}"
circuit_breaker_threshold = 2
[providers.alpha]
base_url = "mock://alpha"
api_key = "{}"
models = ["a"]
[providers.alpha.headers]
"X-Extra" = "{}"
[providers.beta]
base_url = "mock://beta?fail=500"
api_key = "{}"
models = ["a"]
[models.m]
name = "m"
strategy = "failover"
[[models.m.backends]]
provider = "beta"
model = "a"
priority = 1
[[models.m.backends]]
provider = "alpha"
model = "a"
priority = 2
[users.one]
token = "{}"
tags = ["admin"]
[users.two]
token = "{}"
enabled = false
"#,
            secrets[4], secrets[0], secrets[0], secrets[1], secrets[2], secrets[3]
        ),
    )
    .expect("write");
    let (child, base, log) = spawn_berry(&config, &[("RUST_LOG", "info,berry=trace"), ("BERRY_LOG_FORMAT", "json")]);
    let mut outputs = Vec::new();
    let mut body = chat_body("m");
    for token in [secrets[2], secrets[3], "berry-wrong-token"] {
        let reply =
            send(Method::POST, &format!("{base}/v1/chat/completions"), Some(token), Some(body.to_string())).await;
        outputs.push(format!("{:?} {}", reply.headers, String::from_utf8_lossy(&reply.body)));
    }
    body["stream"] = json!(true);
    outputs.push(stream(&format!("{base}/v1/chat/completions"), secrets[2], &body).await.text());
    body["backend"] = json!("alpha");
    outputs.push(stream(&format!("{base}/v1/chat/completions"), secrets[2], &body).await.text());
    for (path, token) in [
        ("/v1/models", secrets[2]),
        ("/health", secrets[4]),
        ("/v1/health", secrets[4]),
        ("/metrics", secrets[4]),
        ("/status.json", secrets[4]),
        ("/admin/plugins", secrets[4]),
        ("/smart-ai/weights", secrets[4]),
    ] {
        let reply = send(Method::GET, &format!("{base}{path}"), Some(token), None).await;
        assert_eq!(reply.status, 200, "{path}");
        outputs.push(format!("{path}: {:?} {}", reply.headers, String::from_utf8_lossy(&reply.body)));
    }
    let reload = send(Method::POST, &format!("{base}/admin/reload"), Some(secrets[4]), None).await;
    outputs.push(String::from_utf8_lossy(&reload.body).to_string());
    sigterm(&child);
    let status = exit_of(child).await;
    assert_eq!(status.code(), Some(0));
    let lines: Vec<String> = log.try_iter().collect();
    assert!(lines.len() > 10, "expected a trace log: {lines:?}");
    assert!(lines.iter().any(|l| l.contains("\"user\":\"one\"")), "request lines name the user id");
    for secret in secrets {
        for line in &lines {
            assert!(!line.contains(secret), "secret in the log: {line}");
        }
        for output in &outputs {
            assert!(!output.contains(secret), "secret in a response: {output}");
        }
    }
}

#[tokio::test]
async fn the_status_page_renders_live_data_in_a_browser() {
    let (a, b) = (mock("a").await, mock("b").await);
    let ledger = tempfile::tempdir().expect("ledger dir");
    let gw = TestGateway::start(&config(
        "weighted_random",
        &[("a", &a), ("b", &b)],
        &[],
        &format!(
            "circuit_breaker_threshold = 2\ncircuit_breaker_cooldown_seconds = 600\nusage_db = {:?}",
            ledger.path().join("usage.db").display().to_string()
        ),
    ))
    .await;
    for _ in 0..10 {
        assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200);
    }
    assert!(gw.gateway.accounting.ledger.as_ref().expect("ledger").flush(Duration::from_secs(10)));
    let shots = repo_root().join("target").join("screenshots");
    std::fs::create_dir_all(&shots).expect("screenshots dir");
    let profile = tempfile::tempdir().expect("profile");
    let profile_dir = profile.path().to_path_buf();
    let url = gw.url("/status");
    let browse = |args: Vec<String>| browse(&profile_dir, &url, args);
    let dom = |out: std::process::Output| String::from_utf8_lossy(&out.stdout).to_string();

    let before = dom(browse(vec!["--dump-dom".into()]).await);
    let rows = |html: &str, circuit: &str| html.matches(&format!("data-circuit=\"{circuit}\"")).count();
    assert!(
        before.contains("data-provider=\"a\"") && before.contains("data-provider=\"b\""),
        "backends table rendered: {before}"
    );
    assert_eq!(rows(&before, "closed"), 3, "m has two backends, other has one: {before}");
    // Today's usage (issue 20): one bar for the tester on m, with its 10 requests.
    assert!(before.contains("Today's usage"), "{before}");
    assert_eq!(before.matches("class=\"usage-bar\" style=\"width:100.0%\"").count(), 1, "one full bar: {before}");
    assert!(before.contains("<td>tester</td><td>m</td><td class=\"num\">10</td>"), "{before}");

    // Fail backend b at the mock; traffic opens its circuit; the page shows it.
    set(&b, MockUpdate { fail: Some(FailMode::Status(500)), ..Default::default() });
    let mut waited = 0;
    while gw.get("/health", None).await.json()["models"][0]["backends"][1]["circuit"] != "open" && waited < 200 {
        assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200);
        waited += 1;
    }
    let after = dom(browse(vec!["--dump-dom".into()]).await);
    assert_eq!(rows(&after, "open"), 1, "{after}");
    assert!(after.contains("server 2"), "recent errors shown: {after}");

    let shot = shots.join("status-page.png");
    let out = browse(vec![format!("--screenshot={}", shot.display())]).await;
    assert!(shot.exists(), "screenshot: {}", String::from_utf8_lossy(&out.stderr));
    let mut png = Vec::new();
    std::fs::File::open(&shot).expect("png").read_to_end(&mut png).expect("read");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real picture");
}
