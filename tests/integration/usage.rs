//! Who used what (issue 20): the usage ledger on SQLite, prices, budgets and token
//! limits by reserve → settle, `/admin/usage` and `berry usage`.

use std::time::{Duration, Instant};

use http::Method;
use serde_json::{Value, json};

use crate::harness::*;

const ADMIN: &str = "berry-usage-admin";

/// One OpenAI-compatible and one Anthropic provider on the same mock, a model on
/// each (`m`, `claude`), prices, and `users` appended; the ledger in `db`.
fn priced(mock: &berry::mock::MockServer, db: &Path, users: &str) -> String {
    let mut toml = config(
        "weighted_random",
        &[("a", mock)],
        &["input_cost_per_mtok = 2.0\noutput_cost_per_mtok = 8.0"],
        &format!("admin_token = \"{ADMIN}\"\nusage_db = {:?}", db.display().to_string()),
    );
    toml.push_str(&format!(
        "\n[providers.anth]\nbase_url = \"{}\"\napi_key = \"sk-anth-secret\"\nmodels = [\"up-model\"]\nbackend_type = \"anthropic\"\n\
         [models.claude]\nname = \"claude\"\n[[models.claude.backends]]\nprovider = \"anth\"\nmodel = \"up-model\"\n\
         input_cost_per_mtok = 3.0\noutput_cost_per_mtok = 15.0\n\n{users}",
        mock.base_url()
    ));
    toml
}

fn user(name: &str, extra: &str) -> String {
    format!("[users.{name}]\ntoken = \"berry-{name}-token\"\n{extra}\n")
}

async fn chat(gw: &TestGateway, token: &str, body: &Value) -> Reply {
    send(Method::POST, &gw.url("/v1/chat/completions"), Some(token), Some(body.to_string())).await
}

async fn messages(gw: &TestGateway, key: &str, body: &Value) -> Reply {
    post_anthropic(&gw.url("/v1/messages"), key, body).await
}

fn flush(gw: &TestGateway) {
    let ledger = gw.gateway.accounting.ledger.as_ref().expect("a ledger");
    assert!(ledger.flush(Duration::from_secs(10)), "the ledger flushes");
}

async fn usage_rows(gw: &TestGateway, query: &str) -> Vec<Value> {
    let reply = gw.get(&format!("/admin/usage?{query}"), Some(ADMIN)).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    reply.json()["rows"].as_array().cloned().unwrap_or_default()
}

fn row<'a>(rows: &'a [Value], key: &str, value: &str) -> &'a Value {
    rows.iter().find(|r| r[key] == value).unwrap_or_else(|| panic!("no row with {key} = {value}: {rows:?}"))
}

/// The usage a client saw in an OpenAI stream with `include_usage`.
fn streamed_usage(text: &str) -> Value {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v["usage"].is_object())
        .map(|v| v["usage"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn every_relayed_request_is_in_the_ledger_with_the_tokens_the_client_saw() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mock = mock("a").await;
    let toml = priced(&mock, &dir.path().join("usage.db"), &user("limited", ""));
    let gw = TestGateway::start(&toml).await;
    let token = "berry-limited-token";

    // OpenAI: two plain, two streamed with include_usage; Anthropic: one native.
    let (mut input, mut output) = (0, 0);
    for i in 0..4 {
        let mut body = chat_body("m");
        if i % 2 == 1 {
            body["stream"] = json!(true);
            body["stream_options"] = json!({ "include_usage": true });
            let reply = stream(&gw.url("/v1/chat/completions"), token, &body).await;
            let u = streamed_usage(&reply.text());
            input += u["prompt_tokens"].as_u64().expect("streamed usage");
            output += u["completion_tokens"].as_u64().expect("streamed usage");
        } else {
            let reply = chat(&gw, token, &body).await;
            input += reply.json()["usage"]["prompt_tokens"].as_u64().expect("usage");
            output += reply.json()["usage"]["completion_tokens"].as_u64().expect("usage");
        }
    }
    let native = messages(
        &gw,
        token,
        &json!({ "model": "claude", "max_tokens": 50,
        "messages": [{ "role": "user", "content": "hello claude" }] }),
    )
    .await;
    assert_eq!(native.status, 200, "{}", String::from_utf8_lossy(&native.body));
    let (claude_in, claude_out) = (
        native.json()["usage"]["input_tokens"].as_u64().expect("in"),
        native.json()["usage"]["output_tokens"].as_u64().expect("out"),
    );
    // A refused request (unknown model) is a record too.
    assert_eq!(chat(&gw, token, &chat_body("nope")).await.status, 404);
    flush(&gw);

    let by_user = usage_rows(&gw, "group_by=user").await;
    let limited = row(&by_user, "user", "limited");
    assert_eq!(limited["requests"], 6, "{by_user:?}");
    let by_model = usage_rows(&gw, "group_by=model").await;
    let m = row(&by_model, "model", "m");
    assert_eq!(
        (m["requests"].as_u64(), m["input_tokens"].as_u64(), m["output_tokens"].as_u64()),
        (Some(4), Some(input), Some(output))
    );
    let claude = row(&by_model, "model", "claude");
    assert_eq!(
        (claude["input_tokens"].as_u64(), claude["output_tokens"].as_u64()),
        (Some(claude_in), Some(claude_out))
    );
    // Priced at each backend's prices.
    let expected = (input as f64 * 2.0 + output as f64 * 8.0) / 1e6;
    assert!((m["cost"].as_f64().expect("cost") - expected).abs() < 1e-12, "{m}");
    let expected = (claude_in as f64 * 3.0 + claude_out as f64 * 15.0) / 1e6;
    assert!((claude["cost"].as_f64().expect("cost") - expected).abs() < 1e-12, "{claude}");
    let by_backend = usage_rows(&gw, "group_by=backend,day").await;
    assert!(
        by_backend.iter().any(|r| r["backend"] == "anth/up-model" && r["day"].as_str().is_some_and(|d| d.len() == 10))
    );
    // The status page's data has today's spend by user and model.
    let status = gw.get("/status.json", Some(ADMIN)).await.json();
    let today = status["usage_today"].as_array().cloned().unwrap_or_default();
    assert!(today.iter().any(|r| r["user"] == "limited" && r["model"] == "m" && r["requests"] == 4), "{today:?}");
    // Prometheus carries the cost too; bad queries are clear errors.
    let metrics = String::from_utf8_lossy(&gw.get("/metrics", Some(ADMIN)).await.body).into_owned();
    assert!(metrics.contains("berry_cost_total{user=\"limited\",model=\"m\"}"), "{metrics}");
    gw.get("/admin/usage?group_by=colour", Some(ADMIN)).await.assert_error(400, "invalid_usage_query");
    gw.get("/admin/usage", Some(TOKEN)).await.assert_error(401, "invalid_admin_token");
}

#[tokio::test]
async fn a_token_budget_stops_its_user_and_concurrent_requests_cannot_overshoot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mock = mock("a").await;
    let users = format!(
        "{}{}",
        user("capped", "budget = { max_tokens_per_day = 40 }"),
        user("crowd", "budget = { max_tokens_per_day = 300 }")
    );
    let gw = TestGateway::start(&priced(&mock, &dir.path().join("usage.db"), &users)).await;

    // ~9-token requests against 40 a day: a few pass, then 429 insufficient_quota.
    let mut admitted = 0;
    let refused = loop {
        let reply = chat(&gw, "berry-capped-token", &chat_body("m")).await;
        if reply.status != 200 {
            break reply;
        }
        admitted += 1;
        assert!(admitted < 10, "the budget never stopped the user");
    };
    refused.assert_error(429, "insufficient_quota");
    assert!(refused.headers.contains_key("retry-after"));
    assert!((2..=4).contains(&admitted), "{admitted} requests of ~9 tokens within 40");
    // The same budget on /v1/messages answers in Anthropic's shape.
    let anthropic = messages(
        &gw,
        "berry-capped-token",
        &json!({ "model": "claude", "max_tokens": 5,
        "messages": [{ "role": "user", "content": "hi" }] }),
    )
    .await;
    assert_eq!(anthropic.status, 429);
    assert_eq!(anthropic.json()["type"], "error", "{}", anthropic.json());

    // 50 at once, each reserving its input and max_tokens: what they used together
    // stays within the budget (the reservations cover what each can use).
    let gw = std::sync::Arc::new(gw);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move {
                let mut body = chat_body("m");
                body["max_tokens"] = json!(16);
                chat(&gw, "berry-crowd-token", &body).await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("request").status.as_u16());
    }
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    let (today, _, reserved) = gw.gateway.accounting.budgets.used("crowd", berry::health::now_ms());
    assert_eq!(reserved.tokens, 0, "every reservation settled");
    assert!(today.tokens <= 300, "50 concurrent requests used {} tokens of 300", today.tokens);
    assert!(statuses.contains(&200) && statuses.contains(&429), "{statuses:?}");
}

/// A real process killed with SIGKILL under load: the ledger misses at most the
/// batch being gathered, and a restart rebuilds the budgets from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_at_most_the_last_batch_and_budgets_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("usage.db");
    let mock = mock("a").await;
    let users = format!("{}{}", user("load", ""), user("capped", "budget = { max_tokens_per_day = 40 }"));
    let config = dir.path().join("berry.toml");
    std::fs::write(&config, priced(&mock, &db, &users)).expect("config");

    let (child, base, _log) = spawn_berry(&config, &[]);
    let url = format!("{base}/v1/chat/completions");
    let mut capped = 0;
    while send(Method::POST, &url, Some("berry-capped-token"), Some(chat_body("m").to_string())).await.status == 200 {
        capped += 1;
    }
    // Load, then SIGKILL while it flows.
    let started = Instant::now();
    let mut answered = Vec::new();
    while started.elapsed() < Duration::from_millis(1_500) {
        let reply = send(Method::POST, &url, Some("berry-load-token"), Some(chat_body("m").to_string())).await;
        assert_eq!(reply.status, 200);
        answered.push(Instant::now());
    }
    let killed = Instant::now();
    let mut child = child;
    child.kill().expect("kill -9");
    let _ = child.wait();
    let now = berry::health::now_ms();
    let rows =
        berry::usage::query::summary(&db, 0, now + 1, &[berry::usage::query::Key::User]).expect("read the ledger");
    let count = |user: &str| rows.iter().find(|r| r.keys[0] == user).map_or(0, |r| r.requests);
    // Everything answered before the last batch window (plus slack for this machine).
    let settled = answered.iter().filter(|t| killed.duration_since(**t) > Duration::from_millis(750)).count() as u64;
    let load = count("load");
    eprintln!("answered {}, in the ledger {load}, answered before the last 750 ms {settled}", answered.len());
    assert!(load >= settled && load <= answered.len() as u64, "{load} of {} ({settled} certain)", answered.len());
    assert_eq!(count("capped"), capped as u64 + 1, "the refused request is a record too");

    // Restarted on the same ledger: the capped user's day is still spent.
    let (child, base, _log) = spawn_berry(&config, &[]);
    let reply = send(
        Method::POST,
        &format!("{base}/v1/chat/completions"),
        Some("berry-capped-token"),
        Some(chat_body("m").to_string()),
    )
    .await;
    reply.assert_error(429, "insufficient_quota");
    let mut child = child;
    child.kill().expect("kill");
    let _ = child.wait();

    // `berry usage` reads the file with no gateway running.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berry"))
        .args(["usage", "--db"])
        .arg(&db)
        .args(["--since", "1h", "--by", "user"])
        .output()
        .expect("berry usage");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.lines().next().is_some_and(|h| h.starts_with("user") && h.contains("requests") && h.contains("cost")),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("load ") || l.starts_with("load\t")), "{text}");
}
