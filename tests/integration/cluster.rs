//! More than one gateway (issue 19): real Berry processes sharing a real
//! `redis-server` — exact shared rate limits, Redis faults under load, circuits and
//! plugin swaps across replicas.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{Value, json};

use crate::harness::*;

const ADMIN: &str = "berry-fleet-admin";
const LIMITED: &str = "berry-limited-token";

/// One Berry process of the fleet, killed when dropped.
struct Replica {
    child: std::process::Child,
    base: String,
    log: std::sync::Mutex<std::sync::mpsc::Receiver<String>>,
    _dir: tempfile::TempDir,
}

impl Replica {
    fn start(toml: &str) -> Replica {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("berry.toml");
        std::fs::write(&path, toml).expect("write config");
        let (child, base, log) = spawn_berry(&path, &[]);
        Replica { child, base, log: std::sync::Mutex::new(log), _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn chat(&self, token: &str, body: &Value) -> Reply {
        send(Method::POST, &self.url("/v1/chat/completions"), Some(token), Some(body.to_string())).await
    }

    async fn admin_json(&self, path: &str) -> Value {
        send(Method::GET, &self.url(path), Some(ADMIN), None).await.json()
    }

    async fn cluster(&self) -> Value {
        self.admin_json("/health").await["cluster"].clone()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        for line in self.log.lock().map(|l| l.try_iter().collect::<Vec<_>>()).unwrap_or_default() {
            if line.contains("WARN") || line.contains("ERROR") {
                eprintln!("replica {}: {line}", self.base);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The harness config over `mocks` with an admin token, `[cluster]` on `redis`, and
/// `tail` (users, plugins) appended.
fn fleet_config(redis: &RedisServer, mocks: &[(&str, &berry::mock::MockServer)], cluster: &str, tail: &str) -> String {
    let mut toml = config(
        "weighted_random",
        mocks,
        &[],
        &format!("admin_token = \"{ADMIN}\"\ncircuit_breaker_threshold = 3\ncircuit_breaker_cooldown_seconds = 120"),
    );
    toml.push_str(&format!("\n[cluster]\nredis_url = \"{}\"\n{cluster}\n\n{tail}\n", redis.url()));
    toml
}

fn limited_user(per_minute: u32) -> String {
    format!("[users.limited]\ntoken = \"{LIMITED}\"\nrate_limit = {{ requests_per_minute = {per_minute} }}\n")
}

/// Poll `check` every 25 ms until it holds; the time it took, or a panic at `limit`.
async fn within<F: AsyncFnMut() -> bool>(limit: Duration, what: &str, mut check: F) -> Duration {
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Shared limits count in windows aligned to the clock: start a burst well inside a
/// minute, so it cannot straddle two.
async fn inside_one_minute() {
    let into = epoch_ms() % 60_000;
    if into > 45_000 {
        tokio::time::sleep(Duration::from_millis(60_000 - into + 200)).await;
    }
}

async fn everyone_sees(replicas: &[&Replica], n: u64) {
    for r in replicas {
        within(Duration::from_secs(10), "the fleet forms", async || r.cluster().await["replicas_seen"] == n).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_limit_of_20_holds_exactly_across_three_replicas_and_200_concurrent_requests() {
    let redis = RedisServer::start();
    let a = mock("a").await;
    let big = "[users.big]\ntoken = \"berry-big-token\"\nrate_limit = { requests_per_minute = 320 }\n";
    // Redis is healthy here: a generous timeout_ms keeps a debug build's slow moment
    // under 200 concurrent requests on 2 cores from handing a request to the fault
    // policy (which is exercised below, in the fault test).
    let toml = fleet_config(&redis, &[("a", &a)], "timeout_ms = 2000", &format!("{}\n{big}", limited_user(20)));
    let replicas = Arc::new([Replica::start(&toml), Replica::start(&toml), Replica::start(&toml)]);
    everyone_sees(&replicas.iter().collect::<Vec<_>>(), 3).await;
    inside_one_minute().await;

    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let replicas = replicas.clone();
            tokio::spawn(async move { replicas[i % 3].chat(LIMITED, &chat_body("m")).await })
        })
        .collect();
    let (mut admitted, mut refused) = (0, 0);
    for task in tasks {
        let reply = task.await.expect("request");
        match reply.status.as_u16() {
            200 => admitted += 1,
            429 => {
                reply.assert_error(429, "rate_limit_exceeded");
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&reply.body)),
        }
    }
    assert_eq!((admitted, refused), (20, 180), "exactly the limit, across the fleet");

    // A large limit is leased in blocks (320 / (3 replicas × 16) = 6 permits): never
    // more than the limit, and at most the blocks left unused on the replicas less.
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let replicas = replicas.clone();
            tokio::spawn(async move { replicas[i % 3].chat("berry-big-token", &chat_body("m")).await.status })
        })
        .collect();
    let (mut big, mut statuses) = (0, std::collections::BTreeMap::new());
    for task in tasks {
        let status = task.await.expect("request").as_u16();
        *statuses.entry(status).or_insert(0) += 1;
        if status == 200 {
            big += 1;
        }
    }
    eprintln!("large limit: {statuses:?}");
    assert!((320 - 3 * 6..=320).contains(&big), "{big} of a limit of 320 admitted");
    // The users without a limit never wait on Redis, and are not limited.
    assert_eq!(replicas[0].chat(TOKEN, &chat_body("m")).await.status, 200);
    let metrics = send(Method::GET, &replicas[1].url("/metrics"), Some(ADMIN), None).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("berry_cluster_redis_up 1"), "{text}");
    assert!(text.contains("berry_cluster_replicas 3"), "{text}");
    assert!(text.contains("berry_cluster_redis_op_duration_seconds_count{op=\"rate_limit\"}"), "{text}");
}

/// Load on two replicas through a frozen Redis, a killed one and a restarted empty
/// one: every request is answered in time under the `local` policy, each replica
/// limits at its share while Redis is gone, and sharing resumes by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_frozen_killed_and_restarted_under_load() {
    let mut redis = RedisServer::start();
    let a = mock("a").await;
    // `busy` has a limit it never reaches: each of its requests asks Redis.
    let tail = format!(
        "{}\n[users.busy]\ntoken = \"berry-busy-token\"\nrate_limit = {{ requests_per_minute = 1000000 }}\n",
        limited_user(6)
    );
    let toml = fleet_config(&redis, &[("a", &a)], "timeout_ms = 50", &tail);
    let replicas = Arc::new([Replica::start(&toml), Replica::start(&toml)]);
    everyone_sees(&[&replicas[0], &replicas[1]], 2).await;

    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|w| {
            let (replicas, stop) = (replicas.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut done, mut slowest, mut failures) = (0u32, Duration::ZERO, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let reply = replicas[w % 2].chat("berry-busy-token", &chat_body("m")).await;
                    slowest = slowest.max(started.elapsed());
                    if reply.status != 200 {
                        failures.push(format!("{} {}", reply.status, String::from_utf8_lossy(&reply.body)));
                    }
                    done += 1;
                }
                (done, slowest, failures)
            })
        })
        .collect();

    // Frozen (SIGSTOP): operations time out after timeout_ms; the policy applies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.pause();
    for r in replicas.iter() {
        within(Duration::from_secs(3), "a frozen Redis is seen", async || {
            let c = r.cluster().await;
            c["redis"]["reachable"] == false && c["fallback"]["rate_limits"] == "local"
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.resume();
    for r in replicas.iter() {
        within(Duration::from_secs(5), "Redis is back after SIGCONT", async || {
            r.cluster().await["redis"]["reachable"] == true
        })
        .await;
    }

    // Killed: the same, and each replica limits `limited` (6/min) at its share, 3.
    redis.kill();
    for r in replicas.iter() {
        within(Duration::from_secs(3), "a dead Redis is seen", async || {
            r.cluster().await["redis"]["reachable"] == false
        })
        .await;
    }
    inside_one_minute().await;
    for r in replicas.iter() {
        let mut admitted = 0;
        for _ in 0..6 {
            if r.chat(LIMITED, &chat_body("m")).await.status == 200 {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 3, "while Redis is down, each of 2 replicas admits its share of 6");
    }

    // Restarted empty: shared again within seconds, without restarting Berry.
    redis.restart();
    let back = within(Duration::from_secs(10), "sharing resumes", async || {
        let (c0, c1) = (replicas[0].cluster().await, replicas[1].cluster().await);
        c0["redis"]["reachable"] == true && c1["redis"]["reachable"] == true && c0["replicas_seen"] == 2
    })
    .await;
    eprintln!("Redis restarted: shared again after {back:?}");
    stop.store(true, Ordering::Relaxed);
    let (mut total, mut slowest) = (0, Duration::ZERO);
    for worker in load {
        let (done, slow, failures) = worker.await.expect("worker");
        assert!(failures.is_empty(), "every request answered under the local policy: {failures:?}");
        total += done;
        slowest = slowest.max(slow);
    }
    assert!(total > 50, "the load kept flowing ({total} requests)");
    // timeout_ms (50) plus a normal request; a loaded 2-core CI machine gets room.
    assert!(slowest < Duration::from_millis(1_000), "a request waited {slowest:?} on Redis");

    // Shared again: the restarted Redis counts from zero, and 6 hold across both replicas.
    inside_one_minute().await;
    let mut admitted = 0;
    for i in 0..12 {
        if replicas[i % 2].chat(LIMITED, &chat_body("m")).await.status == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 6, "the limit is shared again after Redis restarted empty");
}

/// Issue 20 with [cluster]: a token budget holds across replicas as on one node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_budget_is_shared_by_the_replicas() {
    let redis = RedisServer::start();
    let a = mock("a").await;
    let tail = "[users.capped]\ntoken = \"berry-capped-token\"\nbudget = { max_tokens_per_day = 40 }\n";
    let toml = fleet_config(&redis, &[("a", &a)], "", tail);
    let (one, two) = (Replica::start(&toml), Replica::start(&toml));
    everyone_sees(&[&one, &two], 2).await;
    // ~9-token requests alternating between the replicas: one budget of 40 for both
    // (each alone would admit 3).
    let mut admitted = 0;
    for i in 0..10 {
        let replica = if i % 2 == 0 { &one } else { &two };
        let reply = replica.chat("berry-capped-token", &chat_body("m")).await;
        if reply.status != 200 {
            reply.assert_error(429, "insufficient_quota");
            break;
        }
        admitted += 1;
    }
    assert!((2..=3).contains(&admitted), "{admitted} admitted across the fleet");
    for r in [&one, &two] {
        r.chat("berry-capped-token", &chat_body("m")).await.assert_error(429, "insufficient_quota");
    }
}

#[tokio::test]
async fn without_redis_the_deny_policy_refuses_limited_users_and_start_does_not_wait() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let a = mock("a").await;
    let mut toml = config("weighted_random", &[("a", &a)], &[], &format!("admin_token = \"{ADMIN}\""));
    toml.push_str(&format!(
        "\n[cluster]\nredis_url = \"redis://:hunter2-secret@127.0.0.1:{port}\"\non_unavailable = \"deny\"\n\n{}",
        limited_user(100)
    ));
    let started = Instant::now();
    let gw = TestGateway::start(&toml).await;
    assert!(started.elapsed() < Duration::from_secs(10), "start waited {:?} on a dead Redis", started.elapsed());
    let refused = gw.chat(LIMITED, &chat_body("m")).await;
    refused.assert_error(503, "rate_limits_unavailable");
    assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200, "users without a limit need no Redis");
    let health = gw.get("/health", Some(ADMIN)).await.json();
    assert_eq!(health["cluster"]["redis"]["reachable"], false, "{health}");
    assert_eq!(health["cluster"]["fallback"]["rate_limits"], "deny", "{health}");
    assert!(!health.to_string().contains("hunter2"), "the Redis password leaked: {health}");
    let metrics = String::from_utf8_lossy(&gw.get("/metrics", Some(ADMIN)).await.body).into_owned();
    assert!(metrics.contains("berry_cluster_fallbacks_total{policy=\"deny\"} 1"), "{metrics}");
    assert!(metrics.contains("berry_cluster_redis_up 0"), "{metrics}");
}

fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (Debian: redis-tools, with redis-server)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Keys of the wrong type and a counter that is not a number, under Berry's prefix:
/// Redis answers errors, which fail those operations (the fault policy decides their
/// requests) without declaring Redis down, crashing or hanging; repaired keys work again.
#[tokio::test]
async fn garbage_in_redis_is_a_fault_not_a_crash() {
    let redis = RedisServer::start();
    let a = mock("a").await;
    let mut toml = config("weighted_random", &[("a", &a)], &[], &format!("admin_token = \"{ADMIN}\""));
    toml.push_str(&format!("\n[cluster]\nredis_url = \"{}\"\n\n{}", redis.url(), limited_user(1000)));
    let gw = TestGateway::start(&toml).await;
    inside_one_minute().await;
    let counter = format!("berry:rl:m:{}:limited", epoch_ms() / 60_000);
    for (key, value) in [("berry:health", "garbage"), ("berry:plugins", "garbage"), (counter.as_str(), "not-a-number")]
    {
        assert_eq!(redis_cli(&redis, &["SET", key, value]), "OK");
    }
    for _ in 0..5 {
        assert_eq!(gw.chat(LIMITED, &chat_body("m")).await.status, 200, "the local policy serves");
    }
    within(Duration::from_secs(2), "the sync sees the damage", async || {
        let health = gw.get("/health", Some(ADMIN)).await.json();
        health["cluster"]["redis"]["last_error"].as_str().is_some_and(|e| e.contains("WRONGTYPE"))
    })
    .await;
    let health = gw.get("/health", Some(ADMIN)).await.json();
    assert_eq!(health["cluster"]["redis"]["reachable"], true, "Redis answers: it is not down: {health}");

    for key in ["berry:health", "berry:plugins", counter.as_str()] {
        redis_cli(&redis, &["DEL", key]);
    }
    within(Duration::from_secs(2), "repaired keys work again", async || {
        gw.chat(LIMITED, &chat_body("m")).await.status == 200
            && redis_cli(&redis, &["GET", &counter]).parse::<u64>().is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_circuit_opened_on_one_replica_keeps_the_others_traffic_away_within_a_second() {
    let redis = RedisServer::start();
    let (a, b) = (mock("a").await, mock("b").await);
    let toml = fleet_config(&redis, &[("a", &a), ("b", &b)], "", "");
    let (one, two) = (Replica::start(&toml), Replica::start(&toml));
    everyone_sees(&[&one, &two], 2).await;
    let circuit_of = |health: &Value, provider: &str| {
        health["models"][0]["backends"]
            .as_array()
            .and_then(|bs| bs.iter().find(|b| b["provider"] == provider))
            .map(|b| b["circuit"].clone())
            .unwrap_or(Value::Null)
    };

    set(&a, berry::mock::MockUpdate { fail: Some(berry::mock::FailMode::Status(500)), ..Default::default() });
    let mut pinned = chat_body("m");
    pinned["backend"] = json!("a");
    for _ in 0..3 {
        assert_eq!(one.chat(ADMIN_TOKEN, &pinned).await.status.as_u16() / 100, 5);
    }
    assert_eq!(circuit_of(&one.admin_json("/health").await, "a"), "open");
    let seen = within(Duration::from_secs(1), "the other replica takes the open circuit", async || {
        circuit_of(&two.admin_json("/health").await, "a") == "open"
    })
    .await;
    eprintln!("circuit seen by the other replica after {seen:?}");

    let hits_before = a.state.chat.load(Ordering::Relaxed);
    for _ in 0..20 {
        let reply = two.chat(TOKEN, &chat_body("m")).await;
        assert_eq!(reply.answered_by(), "b");
    }
    assert_eq!(a.state.chat.load(Ordering::Relaxed), hits_before, "the other replica sent nothing to the open backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smart_ai_scores_converge_across_replicas_within_a_second() {
    let redis = RedisServer::start();
    let (a, b) = (mock("a").await, mock("b").await);
    let toml = fleet_config(&redis, &[("a", &a), ("b", &b)], "", "").replace("weighted_random", "smart_ai");
    let (one, two) = (Replica::start(&toml), Replica::start(&toml));
    everyone_sees(&[&one, &two], 2).await;
    let score_of = async |r: &Replica| -> Option<f64> {
        let health = r.admin_json("/health").await;
        let backends = health["models"][0]["backends"].as_array().cloned().unwrap_or_default();
        backends.iter().find(|b| b["provider"] == "a").and_then(|b| b["score"].as_f64())
    };
    let mut pinned = chat_body("m");
    pinned["backend"] = json!("a");

    // Two failures seen by one replica (under the circuit's threshold of 3)…
    set(
        &a,
        berry::mock::MockUpdate {
            fail: Some(berry::mock::FailMode::Status(500)),
            fail_next: Some(2),
            ..Default::default()
        },
    );
    for _ in 0..2 {
        assert_eq!(one.chat(ADMIN_TOKEN, &pinned).await.status.as_u16() / 100, 5);
    }
    let lowered = score_of(&one).await.expect("one keeps a score for a");
    let took = within(Duration::from_secs(1), "the other replica takes the lowered score", async || {
        score_of(&two).await.is_some_and(|s| (s - lowered).abs() < 1e-9)
    })
    .await;
    eprintln!("score converged after {took:?}");
    // …and a success seen by the other counts on top of them, on both.
    assert_eq!(two.chat(ADMIN_TOKEN, &pinned).await.status, 200);
    let raised = score_of(&two).await.expect("score");
    assert!(raised > lowered, "{raised} after a success on {lowered}");
    within(Duration::from_secs(1), "the first replica takes the raised score", async || {
        score_of(&one).await.is_some_and(|s| (s - raised).abs() < 1e-9)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plugin_swap_on_one_replica_reaches_the_fleet_under_load() {
    let redis = RedisServer::start();
    let (a, b) = (mock("a").await, mock("b").await);
    let first = std::fs::read(test_plugin("pick_first")).expect("pick_first");
    let last = std::fs::read(test_plugin("pick_last")).expect("pick_last");
    let router = |pin: &str| {
        let mut toml = config("router", &[("a", &a), ("b", &b)], &[], &format!("admin_token = \"{ADMIN}\""));
        toml.push_str(&format!(
            "\n[plugins.router]\npath = {:?}\nkind = \"strategy\"\n{pin}\n\n[cluster]\nredis_url = \"{}\"\n",
            test_plugin("pick_first").display().to_string(),
            redis.url()
        ));
        toml
    };
    let replicas = Arc::new([Replica::start(&router("")), Replica::start(&router(""))]);
    everyone_sees(&[&replicas[0], &replicas[1]], 2).await;
    let serving = async |r: &Replica| -> String {
        let list = r.admin_json("/admin/plugins").await;
        let plugins = list["plugins"].as_array().cloned().unwrap_or_default();
        let router = plugins.iter().find(|p| p["name"] == "router").cloned().unwrap_or_default();
        router["sha256"].as_str().unwrap_or_default().to_string()
    };
    let (first_sha, last_sha) = (sha256_hex(&first), sha256_hex(&last));
    assert_eq!(serving(&replicas[1]).await, first_sha);

    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|w| {
            let (replicas, stop) = (replicas.clone(), stop.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                let mut done = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let reply = replicas[w % 2].chat(TOKEN, &chat_body("m")).await;
                    if reply.status != 200 {
                        failures.push(format!("{} {}", reply.status, String::from_utf8_lossy(&reply.body)));
                    }
                    done += 1;
                }
                (done, failures)
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let reply = send_bytes(&replicas[0].url("/admin/plugins/router"), Method::PUT, last.clone()).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["fleet"]["published"], true, "{}", reply.json());
    let uploaded = started.elapsed();
    // The other replica compiles and tries the component itself, as this one just did
    // before answering: on this debug build, under the test's load, that alone can
    // take a second or more (a release build takes a fraction; `benches/load.sh
    // --cluster` measures it). So: 2 s beyond the uploader's own preparation.
    within(Duration::from_secs(2) + uploaded, "the other replica serves the new version", async || {
        serving(&replicas[1]).await == last_sha
    })
    .await;
    eprintln!(
        "fleet swap: upload answered after {uploaded:?}; the other replica served the new version {:?} later",
        started.elapsed() - uploaded
    );
    assert_eq!(replicas[1].chat(TOKEN, &chat_body("m")).await.answered_by(), "b", "pick_last serves");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in load {
        let (done, failures) = worker.await.expect("worker");
        assert!(failures.is_empty(), "no request failed during the fleet swap: {failures:?}");
        assert!(done > 5);
    }

    // A replica that starts later serves the fleet's version from its first request;
    // one whose config pins another SHA-256 keeps its own and says why.
    let late = Replica::start(&router(""));
    assert_eq!(serving(&late).await, last_sha, "a late replica loads the fleet's version at start");
    assert_eq!(late.chat(TOKEN, &chat_body("m")).await.answered_by(), "b");
    let pinned = Replica::start(&router(&format!("sha256 = \"{first_sha}\"")));
    assert_eq!(serving(&pinned).await, first_sha, "a replica that cannot take it keeps its version");
    let fleet = pinned.admin_json("/admin/plugins").await["fleet"].clone();
    let entry = fleet.as_array().and_then(|f| f.iter().find(|e| e["name"] == "router")).cloned().expect("entry");
    assert_eq!(entry["fleet_sha256"], last_sha.as_str(), "{fleet}");
    assert_eq!(entry["this_replica"], "rejected", "{fleet}");
    assert!(entry["reason"].as_str().is_some_and(|r| r.contains("sha256")), "{fleet}");

    // A revert on one replica reverts the fleet.
    let started = Instant::now();
    let reply = send_bytes(&late.url("/admin/plugins/router"), Method::DELETE, Vec::new()).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let reverted = started.elapsed();
    for r in replicas.iter() {
        within(Duration::from_secs(2) + reverted, "the fleet reverts", async || serving(r).await == first_sha).await;
    }
}

async fn send_bytes(url: &str, method: Method, body: Vec<u8>) -> Reply {
    let request = http::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .expect("request");
    send_request(request).await
}

fn sha256_hex(bytes: &[u8]) -> String {
    berry::plugin::sha256_hex(bytes)
}
