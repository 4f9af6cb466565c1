//! Authentication and request errors: right status, OpenAI-shaped body.

use http::{Method, Request};
use http_body_util::Full;
use serde_json::json;

use crate::harness::*;

async fn gateway() -> (TestGateway, berry::mock::MockServer) {
    let up = mock("up").await;
    let gw = TestGateway::start(&config("weighted_random", &[("up", &up)], &[], "max_request_body_bytes = 2048")).await;
    (gw, up)
}

#[tokio::test]
async fn credentials_are_checked() {
    let (gw, _up) = gateway().await;
    let body = chat_body("m");
    let reply = send(Method::POST, &gw.url("/v1/chat/completions"), None, Some(body.to_string())).await;
    reply.assert_error(401, "missing_api_key");
    gw.chat("berry-wrong-token", &body).await.assert_error(401, "invalid_api_key");
    gw.chat("berry-disabled-token", &body).await.assert_error(401, "user_disabled");
    assert_eq!(gw.chat(TOKEN, &body).await.status, 200);

    // `x-api-key` works like a bearer token.
    let request = Request::builder()
        .method(Method::POST)
        .uri(gw.url("/v1/chat/completions"))
        .header("x-api-key", TOKEN)
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .expect("request");
    assert_eq!(send_request(request).await.status, 200);
}

#[tokio::test]
async fn models_outside_the_allow_list_are_forbidden_and_hidden() {
    let (gw, _up) = gateway().await;
    gw.chat("berry-restricted-token", &chat_body("m")).await.assert_error(403, "model_not_allowed");
    assert_eq!(gw.chat("berry-restricted-token", &chat_body("other")).await.status, 200);

    let listed = gw.get("/v1/models", Some("berry-restricted-token")).await;
    assert_eq!(listed.status, 200);
    let v = listed.json();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"].as_array().expect("data").iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids, ["other"]);

    let all = gw.get("/v1/models", Some(TOKEN)).await.json();
    let mut ids: Vec<&str> = all["data"].as_array().expect("data").iter().filter_map(|m| m["id"].as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["m", "other"]);
    gw.get("/v1/models", None).await.assert_error(401, "missing_api_key");
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let (gw, _up) = gateway().await;
    gw.chat(TOKEN, &chat_body("no-such-model")).await.assert_error(404, "model_not_found");
    let url = gw.url("/v1/chat/completions");
    let post = |body: &str| send(Method::POST, &url, Some(TOKEN), Some(body.to_string()));
    post("{\"model\": \"m\", ").await.assert_error(400, "invalid_json");
    post("[1,2]").await.assert_error(400, "invalid_json");
    post("{\"messages\": []}").await.assert_error(400, "missing_model");
    post("{\"model\": 42}").await.assert_error(400, "invalid_model");
    let huge = json!({ "model": "m", "messages": [{ "role": "user", "content": "x".repeat(4096) }] });
    post(&huge.to_string()).await.assert_error(413, "request_too_large");
    // A wrong token with a malformed body is still a 401: strangers learn nothing.
    send(Method::POST, &gw.url("/v1/chat/completions"), Some("nope"), Some("{".into()))
        .await
        .assert_error(401, "invalid_api_key");
    gw.get("/v1/nothing-here", Some(TOKEN)).await.assert_error(404, "unknown_url");
    gw.get("/v1/chat/completions", Some(TOKEN)).await.assert_error(405, "method_not_allowed");
}

#[tokio::test]
async fn oversized_body_without_content_length_is_cut_off() {
    let (gw, _up) = gateway().await;
    // A streamed (chunked) upload, so the limit must be enforced while reading.
    let chunks = futures_util::stream::iter(
        (0..64)
            .map(|_| Ok::<_, std::convert::Infallible>(http_body::Frame::data(bytes::Bytes::from(vec![b' '; 1024])))),
    );
    let request = Request::builder()
        .method(Method::POST)
        .uri(gw.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(http_body_util::StreamBody::new(chunks))
        .expect("request");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let response = client.request(request).await.expect("response");
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn health_endpoints_answer_without_auth() {
    let (gw, _up) = gateway().await;
    let short = gw.get("/v1/health", None).await;
    assert_eq!(short.status, 200);
    assert_eq!(short.json()["status"], "ok");
    let full = gw.get("/health", None).await;
    assert_eq!(full.status, 200);
    let v = full.json();
    assert_eq!(v["models"][0]["model"], "m");
    assert_eq!(v["models"][0]["backends"][0]["circuit"], "closed");
    assert!(!full.body.windows(6).any(|w| w == b"sk-up-"), "health output must not contain provider keys");
}
