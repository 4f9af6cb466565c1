//! Providers spoken natively: Anthropic, Gemini and Azure adapters against the mock's
//! native formats (non-stream, streams cut at arbitrary places, tool calls, errors
//! mapped and classified for health), the Responses API, `GET /v1/models/{id}`, and
//! the provider headers relayed.

use berry::mock::{FailMode, MockServer, MockSettings, MockUpdate};
use serde_json::{Value, json};

use crate::harness::*;

/// A provider section for `mock` speaking `backend_type`.
fn typed_provider(name: &str, mock: &MockServer, backend_type: &str, extra: &str) -> String {
    let base = match backend_type {
        // Azure's base URL is the resource, without /v1.
        "azure" => format!("http://{}", mock.addr()),
        _ => mock.base_url(),
    };
    format!(
        "[providers.{name}]\nbase_url = \"{base}\"\napi_key = \"sk-{name}-secret\"\nmodels = [\"up-model\"]\n\
         backend_type = \"{backend_type}\"\n{extra}\n"
    )
}

/// One model `m` (and `other`) over the given typed providers.
fn typed_config(providers: &[(&str, &MockServer, &str)], strategy: &str, settings: &str) -> String {
    let mut s = format!("[settings]\nmax_retries = 3\nretry_backoff_ms = 0\n{settings}\n");
    for (name, mock, kind) in providers {
        s.push_str(&typed_provider(name, mock, kind, ""));
    }
    s.push_str(&format!("[models.m]\nname = \"m\"\nstrategy = \"{strategy}\"\n"));
    for (name, _, _) in providers {
        s.push_str(&format!("[[models.m.backends]]\nprovider = \"{name}\"\nmodel = \"up-model\"\n"));
    }
    s.push_str(&format!(
        "[models.other]\nname = \"other\"\n[[models.other.backends]]\nprovider = \"{}\"\nmodel = \"up-model\"\n",
        providers[0].0
    ));
    s + &users_toml()
}

async fn mock_named(name: &str, extra: MockSettings) -> MockServer {
    mock_with(MockSettings { name: name.into(), ..extra }).await
}

fn header<'a>(request: &'a berry::mock::RecordedRequest, name: &str) -> Option<&'a str> {
    request.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn tools_body(stream: bool) -> Value {
    json!({
        "model": "m", "stream": stream,
        "messages": [{ "role": "user", "content": "find cats" }],
        "tools": [{ "type": "function", "function": { "name": "search", "description": "Search.",
            "parameters": { "type": "object", "properties": { "query": { "type": "string" } } } } }],
    })
}

/// The SSE `data:` payloads of a stream, `[DONE]` excluded.
fn chunks(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("not JSON ({e}): {d}")))
        .collect()
}

fn streamed_text(text: &str) -> String {
    chunks(text).iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_string)).collect()
}

fn streamed_arguments(text: &str) -> String {
    chunks(text)
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str().map(str::to_string))
        .collect()
}

async fn check_adapter(kind: &str) {
    let up = mock_named("up", MockSettings { split_bytes: 3, chunks: 6, ..Default::default() }).await;
    let gw = TestGateway::start(&typed_config(&[("p", &up, kind)], "weighted_random", "")).await;

    // Non-streaming.
    let reply = gw
        .chat(
            TOKEN,
            &json!({ "model": "m", "max_tokens": 30, "messages": [
        { "role": "system", "content": "Be brief." }, { "role": "user", "content": "hello there" }] }),
        )
        .await;
    assert_eq!(reply.status, 200, "{kind}: {}", String::from_utf8_lossy(&reply.body));
    let v = reply.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert!(
        v["choices"][0]["message"]["content"].as_str().is_some_and(|t| t.ends_with("You said: hello there")),
        "{v}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(
        v["usage"]["prompt_tokens"].as_u64() > Some(0) && v["usage"]["completion_tokens"].as_u64() > Some(0),
        "{v}"
    );
    let sent = up.state.last_request().expect("the provider was called");
    let body: Value = serde_json::from_slice(&sent.body).expect("JSON");
    match kind {
        "anthropic" => {
            assert_eq!(sent.path, "/v1/messages");
            assert_eq!(header(&sent, "x-api-key"), Some("sk-p-secret"));
            assert_eq!(header(&sent, "anthropic-version"), Some("2023-06-01"));
            assert_eq!(header(&sent, "authorization"), None);
            assert_eq!(body["system"], "Be brief.");
            assert_eq!(body["max_tokens"], 30);
            assert_eq!(body["model"], "up-model");
        }
        _ => {
            assert_eq!(sent.path, "/v1/models/up-model:generateContent");
            assert_eq!(header(&sent, "x-goog-api-key"), Some("sk-p-secret"));
            assert_eq!(body["systemInstruction"]["parts"][0]["text"], "Be brief.");
            assert_eq!(body["generationConfig"]["maxOutputTokens"], 30);
            assert_eq!(body["contents"][0]["parts"][0]["text"], "hello there");
        }
    }

    // Streamed, every event cut into 3-byte pieces by the mock.
    let mut body = chat_body("m");
    body["stream"] = json!(true);
    body["stream_options"] = json!({ "include_usage": true });
    let streamed = stream(&gw.url("/v1/chat/completions"), TOKEN, &body).await;
    assert_eq!(streamed.status, 200);
    let text = streamed.text();
    assert_eq!(streamed_text(&text), "Hello from Berry's mock provider! You said: hi", "{kind}: {text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let all = chunks(&text);
    assert!(all.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"), "{text}");
    assert!(all.last().is_some_and(|c| c["usage"]["completion_tokens"].as_u64() > Some(0)), "{text}");
    if kind == "gemini" {
        let sent = up.state.last_request().expect("called");
        assert_eq!(sent.path, "/v1/models/up-model:streamGenerateContent?alt=sse");
    }

    // Tool calls, whole and streamed.
    let reply = gw.chat(TOKEN, &tools_body(false)).await.json();
    let call = &reply["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(reply["choices"][0]["finish_reason"], "tool_calls", "{reply}");
    assert_eq!(call["function"]["name"], "search");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().expect("args")).ok(),
        Some(json!({ "query": "find cats" }))
    );
    let text = stream(&gw.url("/v1/chat/completions"), TOKEN, &tools_body(true)).await.text();
    assert_eq!(
        serde_json::from_str::<Value>(&streamed_arguments(&text)).ok(),
        Some(json!({ "query": "find cats" })),
        "{text}"
    );
    assert!(chunks(&text).iter().any(|c| c["choices"][0]["finish_reason"] == "tool_calls"), "{text}");
    assert_eq!(chunks(&text)[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"], "search", "{text}");

    // The caller's own bad request: the provider's message, OpenAI-shaped, same status.
    set(&up, MockUpdate { fail: Some(FailMode::Status(400)), fail_next: Some(1), ..Default::default() });
    let bad = gw.chat(TOKEN, &chat_body("m")).await;
    bad.assert_error(400, "upstream_error");
    assert_eq!(bad.json()["error"]["message"], "Injected failure from the mock provider.");
}

#[tokio::test]
async fn the_anthropic_adapter_translates_requests_answers_streams_and_tools() {
    check_adapter("anthropic").await;
}

#[tokio::test]
async fn the_gemini_adapter_translates_requests_answers_streams_and_tools() {
    check_adapter("gemini").await;
}

/// Provider errors in each native format are classified for health like OpenAI's.
#[tokio::test]
async fn provider_errors_are_classified_for_health_in_every_format() {
    for kind in ["anthropic", "gemini", "openai"] {
        for (status, class) in [(401, "auth"), (429, "rate_limit"), (500, "server"), (529, "server"), (404, "model")] {
            let (bad, good) = (mock("bad").await, mock("good").await);
            set(&bad, MockUpdate { fail: Some(FailMode::Status(status)), ..Default::default() });
            let gw = TestGateway::start(&typed_config(
                &[("bad", &bad, kind), ("good", &good, "openai")],
                "failover",
                "circuit_breaker_threshold = 100",
            ))
            .await;
            let reply = gw.chat(TOKEN, &chat_body("m")).await;
            assert_eq!(reply.status, 200, "{kind} {status}: fails over");
            assert_eq!(reply.answered_by(), "good");
            let health = gw.get("/health", None).await.json();
            let errors = &health["models"][0]["backends"][0]["errors"];
            assert_eq!(errors[class], 1, "{kind} {status} → {class}: {errors}");
        }
    }
}

#[tokio::test]
async fn an_anthropic_error_event_mid_stream_ends_the_stream_with_an_error() {
    let up = mock_named("up", MockSettings { chunks: 6, chunk_delay_ms: 5, ..Default::default() }).await;
    set(&up, MockUpdate { fail: Some(FailMode::MidStream), ..Default::default() });
    let gw = TestGateway::start(&typed_config(&[("p", &up, "anthropic")], "weighted_random", "")).await;
    let mut body = chat_body("m");
    body["stream"] = json!(true);
    let text = stream(&gw.url("/v1/chat/completions"), TOKEN, &body).await.text();
    let last = chunks(&text).pop().expect("an event");
    assert_eq!(last["error"]["code"], "stream_interrupted", "{text}");
    let health = gw.get("/health", None).await.json();
    assert_eq!(health["models"][0]["backends"][0]["errors"]["network"], 1, "{health}");
}

#[tokio::test]
async fn azure_gets_its_own_urls_and_key_header() {
    let (deployments, v1) = (mock("deployments").await, mock("v1").await);
    let mut toml = "[settings]\nretry_backoff_ms = 0\n".to_string();
    toml.push_str(&typed_provider("dep", &deployments, "azure", "api_version = \"2024-10-21\""));
    toml.push_str(&typed_provider("v1", &v1, "azure", ""));
    toml.push_str(
        "[models.m]\nname = \"m\"\nstrategy = \"failover\"\n[[models.m.backends]]\nprovider = \"dep\"\nmodel = \"up-model\"\n\
         [models.other]\nname = \"other\"\n[[models.other.backends]]\nprovider = \"v1\"\nmodel = \"up-model\"\n",
    );
    toml.push_str(&users_toml());
    let gw = TestGateway::start(&toml).await;
    assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.answered_by(), "deployments");
    let sent = deployments.state.last_request().expect("called");
    assert_eq!(sent.path, "/openai/deployments/up-model/chat/completions?api-version=2024-10-21");
    assert_eq!(header(&sent, "api-key"), Some("sk-dep-secret"));
    assert_eq!(header(&sent, "authorization"), None);
    assert_eq!(gw.chat(TOKEN, &chat_body("other")).await.answered_by(), "v1");
    let sent = v1.state.last_request().expect("called");
    assert_eq!(sent.path, "/openai/v1/chat/completions");
    assert_eq!(serde_json::from_slice::<Value>(&sent.body).expect("JSON")["model"], "up-model");
}

#[tokio::test]
async fn one_model_serves_from_openai_anthropic_and_gemini_backends() {
    let (a, b, c) = (mock("oa").await, mock("an").await, mock("ge").await);
    let gw = TestGateway::start(&typed_config(
        &[("oa", &a, "openai"), ("an", &b, "anthropic"), ("ge", &c, "gemini")],
        "round_robin",
        "",
    ))
    .await;
    for i in 0..6 {
        let mut body = chat_body("m");
        body["stream"] = json!(i % 2 == 1);
        if i % 2 == 1 {
            let text = stream(&gw.url("/v1/chat/completions"), TOKEN, &body).await.text();
            assert!(streamed_text(&text).ends_with("You said: hi"), "{text}");
        } else {
            let reply = gw.chat(TOKEN, &body).await;
            assert_eq!(reply.status, 200);
            assert!(
                reply.json()["choices"][0]["message"]["content"].as_str().is_some_and(|t| t.ends_with("You said: hi"))
            );
        }
    }
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!((a.state.chat.load(Relaxed), b.state.messages.load(Relaxed), c.state.gemini.load(Relaxed)), (2, 2, 2));
}

#[tokio::test]
async fn the_responses_api_and_a_single_model_pass_through() {
    let up = mock("up").await;
    let gw = TestGateway::start(&config("weighted_random", &[("up", &up)], &[], "")).await;
    let url = gw.url("/v1/responses");
    let body = r#"{"model":"m","input":"tell me"}"#;
    let reply = send(http::Method::POST, &url, Some(TOKEN), Some(body.to_string())).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["object"], "response");
    let sent = up.state.last_request().expect("called");
    assert_eq!(sent.path, "/v1/responses");
    assert_eq!(String::from_utf8_lossy(&sent.body), r#"{"model":"up-model","input":"tell me"}"#);
    let streamed = stream(&url, TOKEN, &json!({ "model": "m", "input": "tell me", "stream": true })).await;
    let text = streamed.text();
    assert!(text.contains("event: response.output_text.delta"), "{text}");
    assert!(text.contains("event: response.completed"), "{text}");
    // Usage from the Responses stream counts in the token metrics.
    let metrics = String::from_utf8_lossy(&gw.get("/metrics", None).await.body).to_string();
    assert!(
        metrics.lines().any(|l| l.starts_with("berry_tokens_total") && l.contains("kind=\"completion\"")),
        "{metrics}"
    );

    let one = gw.get("/v1/models/m", Some(TOKEN)).await;
    assert_eq!(one.status, 200);
    let created = one.json()["created"].as_u64().unwrap_or(0);
    assert!(created > 1_600_000_000, "when the model entered the configuration: {}", one.json());
    assert_eq!(one.json(), json!({ "id": "m", "object": "model", "created": created, "owned_by": "berry" }));
    let list = gw.get("/v1/models", Some(TOKEN)).await.json();
    assert_eq!(list["data"][0]["created"], created, "the same in the list: {list}");
    gw.get("/v1/models/m", Some("berry-restricted-token")).await.assert_error(404, "model_not_found");
    gw.get("/v1/models/nope", Some(TOKEN)).await.assert_error(404, "model_not_found");
    gw.get("/v1/models/m", None).await.assert_error(401, "missing_api_key");
}

#[tokio::test]
async fn useful_provider_headers_come_back_and_organization_headers_go_out_on_request() {
    let (plain, opted) = (mock("plain").await, mock("opted").await);
    let mut toml = config("weighted_random", &[("plain", &plain)], &[], "");
    toml.push_str(&format!(
        "[providers.opted]\nbase_url = \"{}\"\napi_key = \"sk-o\"\nmodels = [\"up-model\"]\nforward_organization_headers = true\n\
         [models.org]\nname = \"org\"\n[[models.org.backends]]\nprovider = \"opted\"\nmodel = \"up-model\"\n",
        opted.base_url()
    ));
    let gw = TestGateway::start(&toml).await;
    let request = |model: &str| {
        http::Request::builder()
            .method(http::Method::POST)
            .uri(gw.url("/v1/chat/completions"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("openai-organization", "org-123")
            .header("openai-project", "proj-9")
            .body(http_body_util::Full::new(bytes::Bytes::from(chat_body(model).to_string())))
            .expect("request")
    };
    let reply = send_request(request("m")).await;
    assert_eq!(reply.headers.get("x-upstream-request-id").map(|v| v.as_bytes()), Some(&b"mock-upstream-request"[..]));
    assert_eq!(reply.headers.get("x-ratelimit-remaining-requests").map(|v| v.as_bytes()), Some(&b"999"[..]));
    assert_ne!(reply.headers.get("x-request-id").map(|v| v.as_bytes()), Some(&b"mock-upstream-request"[..]));
    let sent = plain.state.last_request().expect("called");
    assert_eq!(header(&sent, "openai-organization"), None, "not forwarded unless the provider opts in");
    send_request(request("org")).await;
    let sent = opted.state.last_request().expect("called");
    assert_eq!(header(&sent, "openai-organization"), Some("org-123"));
    assert_eq!(header(&sent, "openai-project"), Some("proj-9"));
}

#[tokio::test]
async fn an_endpoint_no_backend_serves_is_a_clear_error() {
    let up = mock("up").await;
    let gw = TestGateway::start(&typed_config(&[("p", &up, "gemini")], "weighted_random", "")).await;
    let reply = send(
        http::Method::POST,
        &gw.url("/v1/embeddings"),
        Some(TOKEN),
        Some(json!({ "model": "m", "input": "x" }).to_string()),
    )
    .await;
    reply.assert_error(400, "unsupported_endpoint");
}
