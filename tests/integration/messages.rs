//! The Anthropic Messages API served by Berry (`POST /v1/messages`): natively to
//! Anthropic backends, translated to OpenAI-compatible and Gemini ones, through the
//! same auth, strategies and retries; errors in Anthropic's shape.

use berry::mock::{FailMode, MockServer, MockUpdate};
use http::{Method, Request};
use http_body_util::Full;
use serde_json::{Value, json};

use crate::harness::*;

fn typed(name: &str, mock: &MockServer, backend_type: &str) -> String {
    format!(
        "[providers.{name}]\nbase_url = \"{}\"\napi_key = \"sk-{name}-secret\"\nmodels = [\"up-model\"]\nbackend_type = \"{backend_type}\"\n",
        mock.base_url()
    )
}

fn one_backend(mock: &MockServer, backend_type: &str) -> String {
    format!(
        "{}[models.m]\nname = \"m\"\n[[models.m.backends]]\nprovider = \"p\"\nmodel = \"up-model\"\n\
         [models.other]\nname = \"other\"\n[[models.other.backends]]\nprovider = \"p\"\nmodel = \"up-model\"\n{}",
        typed("p", mock, backend_type),
        users_toml()
    )
}

/// POST to `path` the way the anthropic SDK does (`x-api-key`, `anthropic-version`).
async fn post(gw: &TestGateway, path: &str, key: &str, body: &Value) -> Reply {
    post_anthropic(&gw.url(path), key, body).await
}

fn message(stream: bool) -> Value {
    json!({ "model": "m", "max_tokens": 64, "stream": stream, "system": "Be brief.",
        "messages": [{ "role": "user", "content": "hello claude" }] })
}

/// Event names and data of an Anthropic event stream.
fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or_default().to_string();
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or("null");
            (name, serde_json::from_str(data).unwrap_or_else(|err| panic!("bad data ({err}): {data}")))
        })
        .collect()
}

fn text_of(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .filter_map(|(_, d)| d["delta"]["text"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn messages_pass_through_natively_to_an_anthropic_backend() {
    let up = mock("up").await;
    let gw = TestGateway::start(&one_backend(&up, "anthropic")).await;
    let sent = r#"{"max_tokens":64, "model":"m","messages":[{"role":"user","content":"hello claude"}],"x_unknown":{"model":"keep"}}"#;
    let request = Request::builder()
        .method(Method::POST)
        .uri(gw.url("/v1/messages"))
        .header("x-api-key", TOKEN)
        .body(Full::new(bytes::Bytes::from(sent)))
        .expect("request");
    let reply = send_request(request).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let v = reply.json();
    assert_eq!(v["type"], "message");
    assert!(v["content"][0]["text"].as_str().is_some_and(|t| t.ends_with("You said: hello claude")), "{v}");
    let received = up.state.last_request().expect("called");
    assert_eq!(received.path, "/v1/messages");
    assert_eq!(
        String::from_utf8_lossy(&received.body),
        r#"{"max_tokens":64, "model":"up-model","messages":[{"role":"user","content":"hello claude"}],"x_unknown":{"model":"keep"}}"#,
        "byte for byte but the model"
    );
    assert!(received.headers.iter().any(|(k, v)| k == "x-api-key" && v == "sk-p-secret"));
    assert!(!received.headers.iter().any(|(_, v)| v.contains(TOKEN)), "the caller's key never goes upstream");

    let text = stream(&gw.url("/v1/messages"), TOKEN, &message(true)).await.text();
    let ev = events(&text);
    assert_eq!(ev.first().map(|(n, _)| n.as_str()), Some("message_start"), "{text}");
    assert_eq!(ev.last().map(|(n, _)| n.as_str()), Some("message_stop"), "{text}");
    assert!(text_of(&ev).ends_with("You said: hello claude"), "{text}");

    let count = post(
        &gw,
        "/v1/messages/count_tokens",
        TOKEN,
        &json!({ "model": "m", "messages": [{ "role": "user", "content": "hi" }] }),
    )
    .await;
    assert_eq!(count.status, 200);
    assert!(count.json()["input_tokens"].as_u64().is_some());
}

async fn check_translated(backend_type: &str) {
    let up =
        mock_with(berry::mock::MockSettings { name: "up".into(), split_bytes: 5, chunks: 4, ..Default::default() })
            .await;
    let gw = TestGateway::start(&one_backend(&up, backend_type)).await;

    let reply = post(&gw, "/v1/messages", TOKEN, &message(false)).await;
    assert_eq!(reply.status, 200, "{backend_type}: {}", String::from_utf8_lossy(&reply.body));
    let v = reply.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    // One rule on every endpoint: the model that served, as the upstream names it.
    assert_eq!(v["model"], "up-model", "the upstream's own name");
    let backend = reply.headers.get("x-berry-backend").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(backend.ends_with("/up-model"), "the serving backend is named: {backend:?}");
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["content"][0]["text"].as_str().is_some_and(|t| t.ends_with("You said: hello claude")), "{v}");
    assert!(v["usage"]["output_tokens"].as_u64() > Some(0), "{v}");

    let text = stream(&gw.url("/v1/messages"), TOKEN, &message(true)).await.text();
    let ev = events(&text);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{text}");
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"], "{text}");
    assert!(text_of(&ev).ends_with("You said: hello claude"), "{text}");
    let delta = &ev[ev.len() - 2].1;
    assert!(delta["usage"]["output_tokens"].as_u64() > Some(0), "usage reaches the client: {delta}");

    // Tools, streamed: a tool_use block whose input arrives as JSON pieces.
    let mut with_tools = message(true);
    with_tools["tools"] = json!([{ "name": "search", "input_schema": { "type": "object" } }]);
    let text = stream(&gw.url("/v1/messages"), TOKEN, &with_tools).await.text();
    let ev = events(&text);
    let start = ev.iter().find(|(n, d)| n == "content_block_start" && d["content_block"]["type"] == "tool_use");
    assert_eq!(start.map(|(_, d)| d["content_block"]["name"].clone()), Some(json!("search")), "{text}");
    let input: String =
        ev.iter().filter_map(|(_, d)| d["delta"]["partial_json"].as_str().map(str::to_string)).collect();
    assert_eq!(serde_json::from_str::<Value>(&input).ok(), Some(json!({ "query": "hello claude" })), "{text}");
    assert_eq!(ev[ev.len() - 2].1["delta"]["stop_reason"], "tool_use");

    // A tool result goes back to the backend as its own format expects, and the
    // mock answers in text.
    let mut follow_up = message(false);
    follow_up["tools"] = with_tools["tools"].clone();
    follow_up["messages"] = json!([
        { "role": "user", "content": "hello claude" },
        { "role": "assistant", "content": [{ "type": "tool_use", "id": "toolu_1", "name": "search", "input": { "query": "x" } }] },
        { "role": "user", "content": [{ "type": "tool_result", "tool_use_id": "toolu_1", "content": "found it" }] }
    ]);
    let v = post(&gw, "/v1/messages", TOKEN, &follow_up).await.json();
    assert_eq!(v["stop_reason"], "end_turn", "{v}");
    assert!(v["content"][0]["text"].as_str().is_some_and(|t| t.ends_with("You said: found it")), "{v}");

    // count_tokens needs an Anthropic backend.
    let count = post(&gw, "/v1/messages/count_tokens", TOKEN, &json!({ "model": "m", "messages": [] })).await;
    assert_eq!(count.status, 400);
    assert_eq!(count.json()["type"], "error");
}

#[tokio::test]
async fn messages_are_translated_for_an_openai_backend() {
    check_translated("openai").await;
}

#[tokio::test]
async fn messages_are_translated_for_a_gemini_backend() {
    check_translated("gemini").await;
}

#[tokio::test]
async fn messages_errors_are_anthropic_shaped() {
    let up = mock("up").await;
    let gw = TestGateway::start(&one_backend(&up, "openai")).await;
    let anthropic_error = |reply: &Reply, status: u16, kind: &str| {
        assert_eq!(reply.status.as_u16(), status, "{}", String::from_utf8_lossy(&reply.body));
        let v = reply.json();
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], kind, "{v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    };
    anthropic_error(&post(&gw, "/v1/messages", "berry-wrong", &message(false)).await, 401, "authentication_error");
    let mut unknown = message(false);
    unknown["model"] = json!("nope");
    anthropic_error(&post(&gw, "/v1/messages", TOKEN, &unknown).await, 404, "not_found_error");
    anthropic_error(
        &post(&gw, "/v1/messages", "berry-restricted-token", &message(false)).await,
        403,
        "permission_error",
    );
    // The provider's own 400, put into Anthropic's shape.
    set(&up, MockUpdate { fail: Some(FailMode::Status(400)), ..Default::default() });
    anthropic_error(&post(&gw, "/v1/messages", TOKEN, &message(false)).await, 400, "invalid_request_error");
    // Upstream down: 502, as Anthropic's api_error.
    set(&up, MockUpdate { fail: Some(FailMode::Status(500)), ..Default::default() });
    anthropic_error(&post(&gw, "/v1/messages", TOKEN, &message(false)).await, 502, "api_error");
}

#[tokio::test]
async fn messages_fail_over_across_formats() {
    let (bad, good) = (mock("bad").await, mock("good").await);
    set(&bad, MockUpdate { fail: Some(FailMode::Status(529)), ..Default::default() });
    let toml = format!(
        "{}{}[models.m]\nname = \"m\"\nstrategy = \"failover\"\n\
         [[models.m.backends]]\nprovider = \"bad\"\nmodel = \"up-model\"\npriority = 1\n\
         [[models.m.backends]]\nprovider = \"good\"\nmodel = \"up-model\"\npriority = 2\n\
         [models.other]\nname = \"other\"\n[[models.other.backends]]\nprovider = \"good\"\nmodel = \"up-model\"\n{}",
        typed("bad", &bad, "anthropic"),
        typed("good", &good, "gemini"),
        users_toml()
    );
    let gw = TestGateway::start(&toml).await;
    let v = post(&gw, "/v1/messages", TOKEN, &message(false)).await.json();
    assert_eq!(v["type"], "message", "{v}");
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!((bad.state.messages.load(Relaxed), good.state.gemini.load(Relaxed)), (1, 1));
}
