//! Hardening: what one hostile or unlucky client, or one bad save, must not be able
//! to do to a running gateway. One test (or more) per defect of issue 10.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use berry::mock::{FailMode, MockUpdate};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, Request};
use http_body::Frame;
use http_body_util::{Full, StreamBody};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

const ADMIN: &str = "berry-hardening-admin";

pub(crate) async fn connect(gw: &TestGateway) -> TcpStream {
    TcpStream::connect(gw.base.trim_start_matches("http://")).await.expect("connect")
}

/// Whether the server closes `stream` within `limit` (whatever it sends first).
pub(crate) async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Send raw bytes and read the answer's status line.
pub(crate) async fn raw_status(stream: &mut TcpStream, request: &[u8], limit: Duration) -> Option<String> {
    // A request the server refuses part-way may fail to write in full (the server
    // answered and closed first): its answer is still there to read.
    let _ = stream.write_all(request).await;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(limit, stream.read(&mut buf)).await.ok()?.ok()?;
    String::from_utf8_lossy(&buf[..n]).lines().next().map(str::to_string)
}

pub(crate) fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The auth plugin's entry in `/admin/plugins`.
async fn auth_plugin(gw: &TestGateway) -> Value {
    let list = gw.get("/admin/plugins", Some(ADMIN)).await.json();
    let auth = list["plugins"].as_array().expect("plugins").iter().find(|p| p["kind"] == "auth").cloned();
    auth.expect("auth plugin")
}

// === 1. auth: a huge token, or a token the policy chokes on, denies that caller only ===

#[tokio::test]
async fn huge_credentials_are_refused_before_the_auth_plugin() {
    let up = mock("up").await;
    let gw = TestGateway::start(&config("weighted_random", &[("up", &up)], &[], &format!("admin_token = \"{ADMIN}\"")))
        .await;
    let before = auth_plugin(&gw).await["calls"].as_u64().expect("calls");
    let huge = "x".repeat(8 * 1024);
    for _ in 0..12 {
        gw.chat(&huge, &chat_body("m")).await.assert_error(401, "invalid_api_key");
        let request = Request::builder()
            .method(Method::POST)
            .uri(gw.url("/v1/chat/completions"))
            .header("x-api-key", &huge)
            .body(Full::new(Bytes::from(chat_body("m").to_string())))
            .expect("request");
        send_request(request).await.assert_error(401, "invalid_api_key");
    }
    // A head beyond 64 KiB is refused by the HTTP layer itself.
    let mut raw = connect(&gw).await;
    let giant = format!("GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n", "y".repeat(130_000));
    let status = raw_status(&mut raw, giant.as_bytes(), Duration::from_secs(5)).await;
    assert!(status.as_deref().is_none_or(|s| s.contains("431")), "{status:?}");

    let after = auth_plugin(&gw).await;
    assert_eq!(after["calls"].as_u64(), Some(before), "oversized credentials never reach the plugin");
    assert_eq!(after["quarantined"], false);
    assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200);
}

#[tokio::test]
async fn a_policy_failing_on_one_callers_input_keeps_serving_everyone_else() {
    let up = mock("up").await;
    let mut toml = config("weighted_random", &[("up", &up)], &[], &format!("admin_token = \"{ADMIN}\""));
    toml.push_str(&format!(
        "\n[plugins.picky]\npath = {:?}\nkind = \"auth\"\nquarantine_after = 3\n\n[auth]\npolicy = \"picky\"\n",
        test_plugin("auth_picky").display().to_string()
    ));
    let gw = TestGateway::start(&toml).await;
    for i in 0..20 {
        gw.chat(&format!("boom-{i}"), &chat_body("m")).await.assert_error(401, "invalid_api_key");
        if i % 5 == 0 {
            assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200, "after {i} hostile requests");
        }
    }
    assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200);
    let list = gw.get("/admin/plugins", Some(ADMIN)).await.json();
    let picky = list["plugins"].as_array().expect("plugins").iter().find(|p| p["name"] == "picky").cloned();
    let picky = picky.expect("picky listed");
    assert_eq!(picky["quarantined"], false, "{picky}");
    assert_eq!(picky["input_failures"], 20, "{picky}");
    let text = String::from_utf8_lossy(&gw.get("/metrics", Some(ADMIN)).await.body).to_string();
    assert_eq!(metric(&text, "berry_plugin_input_failures_total", "plugin=\"picky\""), 20.0, "{text}");
}

// === 2. connections that say nothing are closed; a cap bounds how many are open ===

#[tokio::test]
async fn silent_and_idle_connections_are_closed() {
    let up = mock("up").await;
    let gw =
        TestGateway::start(&config("weighted_random", &[("up", &up)], &[], "client_header_timeout_seconds = 1")).await;
    let mut silent = connect(&gw).await;
    let mut preface_only = connect(&gw).await;
    preface_only.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.expect("preface");
    let mut half_preface = connect(&gw).await;
    half_preface.write_all(b"PRI * HTTP/2").await.expect("half a preface");
    let mut idle = connect(&gw).await;
    let status = raw_status(&mut idle, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n", Duration::from_secs(5)).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"));

    let (a, b, c, d) = tokio::join!(
        closed_within(&mut silent, Duration::from_secs(5)),
        closed_within(&mut preface_only, Duration::from_secs(6)),
        closed_within(&mut half_preface, Duration::from_secs(5)),
        closed_within(&mut idle, Duration::from_secs(5)),
    );
    assert!(a, "a connection that never speaks is closed");
    assert!(b, "an HTTP/2 connection that only sent the preface is closed");
    assert!(c, "a connection stuck in the middle of the preface is closed");
    assert!(d, "an idle kept-alive connection is closed");
    let text = String::from_utf8_lossy(&gw.get("/metrics", None).await.body).to_string();
    assert!(metric(&text, "berry_client_connection_errors_total", "reason=\"silent\"") >= 2.0, "{text}");
}

/// At the cap with every connection busy (a request in flight on each), a new
/// connection is closed at once; once they finish, the gateway serves again. (With
/// idle connections at the cap, the longest-idle one makes room instead: see
/// `connections::idle_connections_cannot_hold_every_slot`.)
#[tokio::test]
async fn the_connection_cap_closes_extra_connections_and_recovers() {
    let up = mock_with(berry::mock::MockSettings { name: "up".into(), latency_ms: 1_500, ..Default::default() }).await;
    let gw = TestGateway::start(&config(
        "weighted_random",
        &[("up", &up)],
        &[],
        "max_connections = 3\nclient_header_timeout_seconds = 2",
    ))
    .await;
    let body = json!({ "model": "m", "messages": [{ "role": "user", "content": "hi" }] }).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut busy = connect(&gw).await;
        busy.write_all(request.as_bytes()).await.expect("write");
        held.push(busy);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = connect(&gw).await;
    assert!(closed_within(&mut extra, Duration::from_millis(1000)).await, "over the cap, none idle: closed at once");
    // The requests in flight are answered, then their idle connections make room.
    for mut c in held {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await.expect("answered").expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK"));
    }
    assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200);
    let text = String::from_utf8_lossy(&gw.get("/metrics", None).await.body).to_string();
    assert!(metric(&text, "berry_client_connections_rejected_total", "") >= 1.0, "{text}");
}

#[tokio::test]
async fn the_open_file_limit_is_raised_at_start() {
    let hard = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| l.lines().find(|l| l.starts_with("Max open files")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(4).and_then(|v| v.parse::<u64>().ok()));
    let Some(hard) = hard.filter(|h| *h > 256) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("berry.toml");
    std::fs::write(&config_path, demo_like_config("mock://up")).expect("write");
    let mut cmd = std::process::Command::new("bash");
    cmd.args(["-c", "ulimit -Sn 256 && exec \"$0\"", env!("CARGO_BIN_EXE_berry")]);
    let (child, _base, _log) = spawn_berry_with(cmd, &config_path, &[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).expect("limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("open files line").to_string();
    let soft: u64 = line.split_whitespace().nth(3).and_then(|v| v.parse().ok()).expect("soft limit");
    sigterm(&child);
    assert_eq!(exit_of(child).await.code(), Some(0));
    assert_eq!(soft, hard, "soft limit raised from 256 to the hard limit: {line}");
}

/// A minimal config on one embedded mock, with the test users.
fn demo_like_config(mock_url: &str) -> String {
    format!(
        "[providers.up]\nbase_url = \"{mock_url}\"\nmodels = [\"up-model\"]\n\n[models.m]\nname = \"m\"\n\
         [[models.m.backends]]\nprovider = \"up\"\nmodel = \"up-model\"\n\n[models.other]\nname = \"other\"\n\
         [[models.other.backends]]\nprovider = \"up\"\nmodel = \"up-model\"\n{}",
        users_toml()
    )
}

// === 3. an empty, truncated or half-written config file never goes live ===

#[tokio::test]
async fn an_emptied_or_half_written_config_file_is_not_applied() {
    let up = mock("up").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("berry.toml");
    let good = config("weighted_random", &[("up", &up)], &[], "");
    std::fs::write(&path, &good).expect("write");
    let gw = TestGateway::start_file(&path).await;
    let reloads = |gw: &TestGateway| {
        let url = gw.url("/metrics");
        async move {
            let text = String::from_utf8_lossy(&send(Method::GET, &url, None, None).await.body).to_string();
            (
                metric(&text, "berry_reloads_total", "result=\"ok\""),
                metric(&text, "berry_reloads_total", "result=\"rejected\""),
            )
        }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // `: > berry.toml`
    std::fs::write(&path, "").expect("truncate");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200, "the running config keeps serving");
    assert_eq!(reloads(&gw).await, (0.0, 1.0), "the empty file was seen and rejected");

    // Two saves in a row, the first of a config that serves nobody (no models): it
    // is a completed write, so it is read, and rejected; the second goes live.
    let new = format!(
        "{good}\n[models.extra]\nname = \"extra\"\n[[models.extra.backends]]\nprovider = \"up\"\nmodel = \"up-model\"\n"
    );
    let cut = new.find("[models.m]").expect("models");
    std::fs::write(&path, &new[..cut]).expect("write first part");
    tokio::time::sleep(Duration::from_millis(150)).await;
    std::fs::write(&path, &new).expect("write the rest");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(reloads(&gw).await, (1.0, 2.0), "the unusable first save was rejected, the finished one loaded");
    assert_eq!(gw.chat(TOKEN, &chat_body("extra")).await.status, 200);

    // check-config says so too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berry"))
        .arg("check-config")
        .arg(dir.path().join("empty.toml"))
        .output()
        .expect("run");
    assert!(!out.status.success(), "a missing file fails");
    std::fs::write(dir.path().join("empty.toml"), "").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berry"))
        .arg("check-config")
        .arg(dir.path().join("empty.toml"))
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an empty file is not OK: {stderr}");
    assert!(stderr.contains("models: no model is defined") && stderr.contains("users: no enabled user"), "{stderr}");
}

// === 4. request_timeout_seconds is the whole budget, not a per-attempt one ===

#[tokio::test]
async fn the_request_timeout_is_the_budget_of_all_attempts() {
    let mocks = [mock("h1").await, mock("h2").await, mock("h3").await];
    for m in &mocks {
        set(m, MockUpdate { fail: Some(FailMode::Hang), ..Default::default() });
    }
    let named: Vec<(&str, &berry::mock::MockServer)> = vec![("h1", &mocks[0]), ("h2", &mocks[1]), ("h3", &mocks[2])];
    let gw = TestGateway::start(&config(
        "failover",
        &named,
        &[],
        "request_timeout_seconds = 1.5\nfirst_byte_timeout_seconds = 10\nmax_retries = 2\ncircuit_breaker_threshold = 100",
    ))
    .await;
    let started = Instant::now();
    gw.chat(TOKEN, &chat_body("m")).await.assert_error(504, "upstream_timeout");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1400) && took < Duration::from_secs(3), "non-stream took {took:?}");

    let mut body = chat_body("m");
    body["stream"] = json!(true);
    let started = Instant::now();
    let reply = stream(&gw.url("/v1/chat/completions"), TOKEN, &body).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert!(took < Duration::from_secs(3), "stream took {took:?} to give up");
}

#[tokio::test]
async fn a_per_attempt_cap_leaves_time_to_fail_over_within_the_budget() {
    let (h1, h2, good) = (mock("h1").await, mock("h2").await, mock("good").await);
    for m in [&h1, &h2] {
        set(m, MockUpdate { fail: Some(FailMode::Hang), ..Default::default() });
    }
    let gw = TestGateway::start(&config(
        "failover",
        &[("h1", &h1), ("h2", &h2), ("good", &good)],
        &["priority = 1", "priority = 2", "priority = 3"],
        "request_timeout_seconds = 3\nattempt_timeout_seconds = 0.4\nmax_retries = 2",
    ))
    .await;
    let reply = gw.chat(TOKEN, &chat_body("m")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.answered_by(), "good");
}

// === 5. bodies are read only for authenticated callers, and within a global budget ===

#[tokio::test]
async fn strangers_are_refused_before_their_body_is_read() {
    let up = mock("up").await;
    let gw = TestGateway::start(&config("weighted_random", &[("up", &up)], &[], "request_timeout_seconds = 20")).await;
    let mut raw = connect(&gw).await;
    let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer not-a-user\r\n\
                Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{\"model\":";
    let status = raw_status(&mut raw, head.as_bytes(), Duration::from_secs(3)).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 401 Unauthorized"), "answered without waiting for the body");
}

#[tokio::test]
async fn buffered_request_bodies_are_bounded_across_requests() {
    let up = mock("up").await;
    let gw = TestGateway::start(&config(
        "weighted_random",
        &[("up", &up)],
        &[],
        "max_request_body_bytes = 100000\nmax_buffered_body_bytes = 150000",
    ))
    .await;
    // A caller uploading 100 KB slowly holds what has arrived of it.
    let mut slow = connect(&gw).await;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"model\":\"m\",\"pad\":\"{}",
        "p".repeat(95_000)
    );
    slow.write_all(head.as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let padded = |n: usize| json!({ "model": "m", "messages": [{ "role": "user", "content": "x".repeat(n) }] });
    // Another user: over the gateway's budget (its own share would allow it).
    gw.chat(ADMIN_TOKEN, &padded(60_000)).await.assert_error(503, "server_busy");
    assert_eq!(gw.chat(ADMIN_TOKEN, &padded(100)).await.status, 200, "a small body still fits");
    drop(slow);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(gw.chat(ADMIN_TOKEN, &padded(60_000)).await.status, 200, "the budget is released");
}

// === 6 & 7. streams: a break mid-event, a client that stops reading ===

/// A one-off OpenAI-compatible upstream on loopback whose streamed answer is
/// `frames` (each `Err` breaks the stream there), then `then` forever if given.
/// The flag turns true when the server's body for a request is dropped.
pub(crate) async fn scripted_upstream(
    frames: Vec<Result<Bytes, ()>>,
    forever: Option<Bytes>,
) -> (String, Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (frames, forever, flag) = (frames.clone(), forever.clone(), flag.clone());
            tokio::spawn(async move {
                let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let (frames, forever, flag) = (frames.clone(), forever.clone(), flag.clone());
                    async move {
                        struct SetOnDrop(Arc<AtomicBool>);
                        impl Drop for SetOnDrop {
                            fn drop(&mut self) {
                                self.0.store(true, Ordering::SeqCst);
                            }
                        }
                        let guard = SetOnDrop(flag);
                        // Paced, so each frame is on the wire before the next (or the break).
                        let scripted = futures_util::stream::iter(frames).then(|f| async move {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            f.map(Frame::data)
                        });
                        let endless = futures_util::stream::unfold((forever, guard), |(chunk, guard)| async move {
                            let data = chunk.clone()?;
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            Some((Ok(Frame::data(data)), (chunk, guard)))
                        });
                        let body = StreamBody::new(scripted.chain(endless).map(|r| r.map_err(|()| "broken")));
                        let response = http::Response::builder()
                            .header("content-type", "text/event-stream")
                            .body(body)
                            .expect("response");
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (format!("http://{addr}/v1"), dropped)
}

pub(crate) fn scripted_config(base_url: &str, settings: &str) -> String {
    format!(
        "[settings]\n{settings}\n[providers.s]\nbase_url = \"{base_url}\"\napi_key = \"sk-s\"\nmodels = [\"up-model\"]\n\
         [models.m]\nname = \"m\"\n[[models.m.backends]]\nprovider = \"s\"\nmodel = \"up-model\"\n\
         [models.other]\nname = \"other\"\n[[models.other.backends]]\nprovider = \"s\"\nmodel = \"up-model\"\n{}",
        users_toml()
    )
}

#[tokio::test]
async fn a_stream_broken_mid_event_ends_with_a_clean_error_event() {
    let whole = Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"hello \"}}]}\n\n");
    let half = Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"wor");
    let (url, _) = scripted_upstream(vec![Ok(whole), Ok(half), Err(())], None).await;
    let gw = TestGateway::start(&scripted_config(&url, "")).await;
    let mut body = chat_body("m");
    body["stream"] = json!(true);
    let reply = stream(&gw.url("/v1/chat/completions"), TOKEN, &body).await;
    assert_eq!(reply.status, 200);
    let text = reply.text();
    assert!(!text.contains("wor"), "the half event never reaches the client: {text}");
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 2, "{text}");
    for event in &events {
        let data = event.strip_prefix("data: ").unwrap_or_else(|| panic!("not a data event: {event:?}"));
        serde_json::from_str::<Value>(data).unwrap_or_else(|e| panic!("event is not JSON ({e}): {event:?}"));
    }
    let last: Value = serde_json::from_str(&events[1]["data: ".len()..]).expect("json");
    assert_eq!(last["error"]["code"], "stream_interrupted");
}

#[tokio::test]
async fn a_client_that_stops_reading_releases_its_upstream() {
    let event = Bytes::from(format!("data: {{\"pad\":\"{}\"}}\n\n", "z".repeat(16 * 1024)));
    let (url, upstream_dropped) = scripted_upstream(vec![], Some(event)).await;
    let gw = TestGateway::start(&scripted_config(&url, "client_write_timeout_seconds = 1")).await;
    let mut client = connect(&gw).await;
    let body = json!({ "model": "m", "stream": true, "messages": [] }).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    client.write_all(request.as_bytes()).await.expect("write");
    let mut first = [0u8; 64];
    let _ = client.read(&mut first).await.expect("the stream starts");
    // ...and the client reads nothing more, keeping its socket open.
    upstream_released(&gw, &upstream_dropped, "a client that stopped reading").await;
    drop(client);
}

/// Wait (30 s at most) until the scripted upstream's stream is dropped, then check
/// the backend holds nothing in flight.
async fn upstream_released(gw: &TestGateway, upstream_dropped: &AtomicBool, client: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !upstream_dropped.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the upstream stream is still held by {client}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = gw.get("/health", None).await.json();
    assert_eq!(health["models"][0]["backends"][0]["in_flight"], 0, "{health}");
}

/// The same over HTTP/2: a client that grants no flow-control window stalls no
/// socket write (hyper just stops taking the stream's body), so it is the stream's
/// own delivery that must time out.
#[tokio::test]
async fn an_h2_client_that_grants_no_window_releases_its_upstream() {
    let event = Bytes::from(format!("data: {{\"pad\":\"{}\"}}\n\n", "z".repeat(16 * 1024)));
    let (url, upstream_dropped) = scripted_upstream(vec![], Some(event)).await;
    let gw = TestGateway::start(&scripted_config(&url, "client_write_timeout_seconds = 1")).await;
    let (mut h2, connection) = h2::client::Builder::new()
        .initial_window_size(4096)
        .handshake::<_, Bytes>(connect(&gw).await)
        .await
        .expect("h2 handshake");
    // The connection keeps answering pings: only the stream is stalled.
    tokio::spawn(connection);
    let (mut stream, _send) = h2_chat_stream(&mut h2).await;
    let _ = stream.data().await.expect("the stream starts");
    // ...and the client never releases capacity, so the window stays shut.
    upstream_released(&gw, &upstream_dropped, "an h2 client that grants no window").await;
    drop(stream);
}

/// Start a streamed chat completion for model `m` over HTTP/2; returns the answer's
/// body and the request's (finished) send half.
pub(crate) async fn h2_chat_stream(h2: &mut h2::client::SendRequest<Bytes>) -> (h2::RecvStream, h2::SendStream<Bytes>) {
    let request = http::Request::post("http://x/v1/chat/completions")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(())
        .expect("request");
    let (response, mut send) = h2.send_request(request, false).expect("send");
    let body = json!({ "model": "m", "stream": true, "messages": [{ "role": "user", "content": "hi" }] });
    send.send_data(Bytes::from(body.to_string()), true).expect("body");
    let response = response.await.expect("response");
    assert_eq!(response.status(), 200);
    (response.into_body(), send)
}

/// An HTTP/2 client that resets its stream frees the upstream at once, even while
/// the provider is between two events (here 20 s apart).
#[tokio::test]
async fn an_h2_client_that_resets_its_stream_releases_its_upstream_at_once() {
    let up = mock_with(berry::mock::MockSettings {
        name: "up".into(),
        chunks: 3,
        chunk_delay_ms: 20_000,
        ..Default::default()
    })
    .await;
    let gw = TestGateway::start(&config("weighted_random", &[("up", &up)], &[], "")).await;
    let (mut h2, connection) = h2::client::handshake(connect(&gw).await).await.expect("h2 handshake");
    tokio::spawn(connection);
    let (mut stream, send) = h2_chat_stream(&mut h2).await;
    let _ = stream.data().await.expect("the first event");
    let in_flight = || async { gw.get("/health", None).await.json()["models"][0]["backends"][0]["in_flight"].clone() };
    assert_eq!(in_flight().await, 1);
    // Dropping both halves of the stream resets it (RST_STREAM).
    drop((stream, send));
    let deadline = Instant::now() + Duration::from_secs(3);
    while in_flight().await != 0 {
        assert!(Instant::now() < deadline, "the upstream is still held after the client reset its stream");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// === 8. duplicate top-level keys ===

#[tokio::test]
async fn duplicate_top_level_keys_are_refused() {
    let up = mock("up").await;
    let gw = TestGateway::start(&config("weighted_random", &[("up", &up)], &[], "")).await;
    let body = r#"{"model":"other","messages":[{"role":"user","content":"hi"}],"model":"m"}"#;
    send(Method::POST, &gw.url("/v1/chat/completions"), Some(TOKEN), Some(body.into()))
        .await
        .assert_error(400, "duplicate_key");
    assert_eq!(up.state.chat.load(Ordering::Relaxed), 0, "nothing was forwarded");
}

// === 9. aborted and rejected requests are logged and counted ===

#[tokio::test]
async fn aborted_and_malformed_requests_are_logged_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("berry.toml");
    let toml = format!(
        "[settings]\nclient_header_timeout_seconds = 1\nrequest_timeout_seconds = 30\n{}",
        demo_like_config("mock://hung?fail=hang")
    );
    std::fs::write(&config_path, toml).expect("write");
    let (child, base, log) = spawn_berry(&config_path, &[("BERRY_LOG_FORMAT", "json")]);
    let addr = base.trim_start_matches("http://").to_string();

    // A client that gives up on a slow answer.
    let mut quitter = TcpStream::connect(&addr).await.expect("connect");
    let quitter_addr = quitter.local_addr().expect("local addr").to_string();
    let body = chat_body("m").to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    quitter.write_all(request.as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(quitter);

    let mut garbage = TcpStream::connect(&addr).await.expect("connect");
    let garbage_status = raw_status(&mut garbage, b"NOT HTTP AT ALL\x01\x02\r\n\r\n", Duration::from_secs(3)).await;
    let mut big_head = TcpStream::connect(&addr).await.expect("connect");
    let head = format!("GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(100_000));
    let big_status = raw_status(&mut big_head, head.as_bytes(), Duration::from_secs(3)).await;
    let mut long_uri = TcpStream::connect(&addr).await.expect("connect");
    let head = format!("GET /v1/{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(100_000));
    let uri_status = raw_status(&mut long_uri, head.as_bytes(), Duration::from_secs(3)).await;
    let mut silent = TcpStream::connect(&addr).await.expect("connect");
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);

    let metrics = send(Method::GET, &format!("{base}/metrics"), None, None).await;
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    sigterm(&child);
    assert_eq!(exit_of(child).await.code(), Some(0));
    let lines: Vec<Value> = log.try_iter().filter_map(|l| serde_json::from_str(&l).ok()).collect();
    let find = |status: u64| lines.iter().find(|l| l["status"].as_u64() == Some(status)).cloned();

    let closed = find(499).unwrap_or_else(|| panic!("no 499 line: {lines:?}"));
    assert_eq!(closed["client"], quitter_addr.as_str(), "{closed}");
    assert_eq!(closed["error"], "client_closed");
    assert_eq!(closed["user"], "tester");
    assert!(find(400).is_some(), "malformed request logged (the client saw {garbage_status:?}): {lines:?}");
    assert!(find(431).is_some(), "oversized head logged (the client saw {big_status:?}): {lines:?}");
    // A URI beyond the 64 KiB head limit is refused as a head too large.
    assert_eq!(uri_status.as_deref(), Some("HTTP/1.1 431 Request Header Fields Too Large"));
    assert!(find(408).is_some(), "silent connection logged: {lines:?}");
    assert_eq!(metric(&text, "berry_requests_total", "status=\"4xx\""), 1.0, "the 499: {text}");
    for (reason, count) in [("malformed_request", 1.0), ("headers_too_large", 2.0), ("silent", 1.0)] {
        assert_eq!(
            metric(&text, "berry_client_connection_errors_total", &format!("reason=\"{reason}\"")),
            count,
            "{text}"
        );
    }
}

// === 10. upstream rate limits: move on, cool the backend, answer 429 ===

#[tokio::test]
async fn upstream_rate_limits_cool_backends_and_come_back_as_429() {
    let (a, b) = (mock("a").await, mock("b").await);
    set(&a, MockUpdate { fail: Some(FailMode::Status(429)), retry_after_ms: Some(7000), ..Default::default() });
    set(&b, MockUpdate { fail: Some(FailMode::Status(429)), retry_after_ms: Some(3000), ..Default::default() });
    let gw = TestGateway::start(&config(
        "weighted_random",
        &[("a", &a), ("b", &b)],
        &[],
        "circuit_breaker_threshold = 2\nretry_backoff_ms = 0",
    ))
    .await;
    for _ in 0..5 {
        let reply = gw.chat(TOKEN, &chat_body("m")).await;
        reply.assert_error(429, "upstream_rate_limited");
        let retry: u64 =
            reply.headers.get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok()).expect("Retry-After");
        assert_eq!(retry, 3, "the shortest Retry-After seen");
    }
    let health = gw.get("/health", None).await.json();
    for backend in health["models"][0]["backends"].as_array().expect("backends") {
        assert_eq!(backend["circuit"], "closed", "429s do not open the circuit: {backend}");
        assert!(backend["rate_limited_until_ms"].as_u64().is_some(), "{backend}");
        assert_eq!(backend["errors"]["rate_limit"], 5, "{backend}");
    }
}

#[tokio::test]
async fn a_rate_limited_backend_is_skipped_while_it_cools() {
    let (a, b) = (mock("a").await, mock("b").await);
    set(&a, MockUpdate { fail: Some(FailMode::Status(429)), retry_after_ms: Some(5000), ..Default::default() });
    let gw =
        TestGateway::start(&config("failover", &[("a", &a), ("b", &b)], &["priority = 1", "priority = 2"], "")).await;
    assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.answered_by(), "b");
    assert_eq!(a.state.chat.load(Ordering::Relaxed), 1);
    for _ in 0..5 {
        assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.answered_by(), "b");
    }
    assert_eq!(a.state.chat.load(Ordering::Relaxed), 1, "the cooling backend was not asked again");
}

#[tokio::test]
async fn a_short_retry_after_is_waited_out() {
    let a = mock("a").await;
    set(
        &a,
        MockUpdate {
            fail: Some(FailMode::Status(429)),
            retry_after_ms: Some(300),
            fail_next: Some(1),
            ..Default::default()
        },
    );
    let gw = TestGateway::start(&config("weighted_random", &[("a", &a)], &[], "")).await;
    let started = Instant::now();
    let reply = gw.chat(TOKEN, &chat_body("m")).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert!(started.elapsed() >= Duration::from_millis(300), "waited the Retry-After");
    assert_eq!(a.state.chat.load(Ordering::Relaxed), 2);
}

// === 11. smaller ones ===

/// `bytes` with a custom section appended: the same plugin under another hash.
pub(crate) fn variant(bytes: &[u8], i: u32) -> Vec<u8> {
    let name = b"berry-test-variant";
    let data = i.to_le_bytes();
    let mut out = bytes.to_vec();
    out.push(0); // custom section
    out.push((1 + name.len() + data.len()) as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&data);
    out
}

#[tokio::test]
async fn swapped_out_plugin_versions_are_freed() {
    let up = mock("up").await;
    let gw = TestGateway::start(&config("weighted_random", &[("up", &up)], &[], &format!("admin_token = \"{ADMIN}\"")))
        .await;
    let stock = berry::plugin::stock::bytes("weighted_random").expect("stock");
    for i in 0..40 {
        let reply = gw.admin(Method::PUT, "/admin/plugins/weighted_random", ADMIN, variant(stock, i)).await;
        assert_eq!(reply.status, 200, "swap {i}: {}", String::from_utf8_lossy(&reply.body));
    }
    assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200);
    assert!(berry::plugin::cached_components() <= 32, "{} compiled versions kept", berry::plugin::cached_components());
    assert_eq!(gw.gateway.versions.len(), 2, "stats kept only for the versions in service");
}

#[tokio::test]
async fn an_untrusted_plugin_cache_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("berry.toml");
    std::fs::write(&config_path, demo_like_config("mock://up")).expect("write");
    for (mode, trusted) in [(0o777, false), (0o700, true)] {
        let cache = dir.path().join(format!("cache-{mode:o}"));
        std::fs::create_dir(&cache).expect("mkdir");
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let cache_env = cache.display().to_string();
        let (child, _base, log) = spawn_berry(&config_path, &[("BERRY_CACHE_DIR", cache_env.as_str())]);
        sigterm(&child);
        assert_eq!(exit_of(child).await.code(), Some(0));
        let lines: Vec<String> = log.try_iter().collect();
        let warned = lines.iter().any(|l| l.contains("the plugin cache is not used"));
        let written = std::fs::read_dir(&cache).expect("read cache").count();
        assert_eq!(warned, !trusted, "mode {mode:o}: {lines:?}");
        assert_eq!(written > 0, trusted, "mode {mode:o}: {written} entries");
    }
}

fn slow_stream_config(drain: &str) -> String {
    format!(
        "[settings]\ndrain_timeout_seconds = {drain}\n{}",
        demo_like_config("mock://slow?chunks=60&chunk_delay_ms=100")
    )
}

#[tokio::test]
async fn the_drain_timeout_ends_open_streams_with_an_error_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("berry.toml");
    std::fs::write(&config_path, slow_stream_config("1")).expect("write");
    let (child, base, _log) = spawn_berry(&config_path, &[]);
    let mut body = chat_body("m");
    body["stream"] = json!(true);
    let (status, mut incoming) = open_stream(&format!("{base}/v1/chat/completions"), TOKEN, &body).await;
    assert_eq!(status, 200);
    let _first = http_body_util::BodyExt::frame(&mut incoming).await.expect("first chunk");
    sigterm(&child);
    let started = Instant::now();
    let rest = http_body_util::BodyExt::collect(incoming).await.expect("the stream ends cleanly").to_bytes();
    let text = String::from_utf8_lossy(&rest).to_string();
    assert!(text.contains("\"code\":\"server_shutting_down\""), "{text}");
    assert!(text.ends_with("\n\n"), "{text}");
    assert_eq!(exit_of(child).await.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(5), "ended by the drain timeout, not the stream");
}

#[tokio::test]
async fn a_second_signal_ends_the_drain_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("berry.toml");
    std::fs::write(&config_path, slow_stream_config("30")).expect("write");
    let (child, base, _log) = spawn_berry(&config_path, &[]);
    let mut body = chat_body("m");
    body["stream"] = json!(true);
    let (status, mut incoming) = open_stream(&format!("{base}/v1/chat/completions"), TOKEN, &body).await;
    assert_eq!(status, 200);
    let _first = http_body_util::BodyExt::frame(&mut incoming).await.expect("first chunk");
    sigterm(&child);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    sigterm(&child);
    let code = exit_of(child).await.code();
    assert!(started.elapsed() < Duration::from_secs(3), "exited at once");
    assert_eq!(code, Some(1), "a forced stop is not a clean exit");
}

#[tokio::test]
async fn operational_data_is_the_admins_once_an_admin_token_is_set() {
    let up = mock("up").await;
    let gw = TestGateway::start(&config("weighted_random", &[("up", &up)], &[], &format!("admin_token = \"{ADMIN}\"")))
        .await;
    assert_eq!(gw.get("/metrics", None).await.status, 401);
    assert_eq!(gw.get("/status.json", None).await.status, 401);
    let health = gw.get("/health", None).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), json!({ "status": "ok" }), "only the status without the admin token");
    assert_eq!(gw.get("/metrics", Some(ADMIN)).await.status, 200);
    assert_eq!(gw.get("/status.json", Some(ADMIN)).await.status, 200);
    assert!(gw.get("/health", Some(ADMIN)).await.json()["models"].is_array());
}

#[test]
fn the_demo_admin_token_is_refused_on_a_public_address() {
    let config = repo_root().join("config/berry.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berry"))
        .args(["serve", "--listen", "0.0.0.0:0", "--config"])
        .arg(&config)
        .env("BERRY_CACHE_DIR", "")
        .output()
        .expect("run berry");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("demo admin token"), "{stderr}");
}
