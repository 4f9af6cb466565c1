//! Hardening round 2, provider text (issue 17, item 6): a provider that echoes
//! Berry's key back cannot leak it to the client or the log. Successful answers
//! still pass byte for byte.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::harness::*;

const KEY: &str = "sk-echoed-secret-0123456789";

/// A provider on loopback that puts the key it was sent into everything it says:
/// an error body and headers (model "bad"), an SSE error event after one good
/// event (streams), and the content of a successful answer (otherwise).
async fn echoing_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let key = req
                        .headers()
                        .get("authorization")
                        .or_else(|| req.headers().get("x-api-key"))
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .trim_start_matches("Bearer ")
                        .to_string();
                    let anthropic = req.uri().path().ends_with("/messages");
                    let body: serde_json::Value =
                        serde_json::from_slice(&req.into_body().collect().await.expect("body").to_bytes())
                            .unwrap_or_default();
                    let response = if anthropic {
                        // Anthropic's stream: it starts, then reports an error event.
                        let start = json!({ "type": "message_start", "message": { "id": "msg_1", "type": "message",
                            "role": "assistant", "model": "claude", "content": [], "stop_reason": null,
                            "usage": { "input_tokens": 1, "output_tokens": 0 } } });
                        let text = json!({ "type": "content_block_start", "index": 0,
                            "content_block": { "type": "text", "text": "" } });
                        let delta = json!({ "type": "content_block_delta", "index": 0,
                            "delta": { "type": "text_delta", "text": "partial" } });
                        let error = json!({ "type": "error", "error": { "type": "overloaded_error",
                            "message": format!("key {key} is overloaded") } });
                        Response::builder().header("content-type", "text/event-stream").body(Full::new(Bytes::from(
                            format!(
                                "event: message_start\ndata: {start}\n\nevent: content_block_start\ndata: {text}\n\n\
                             event: content_block_delta\ndata: {delta}\n\nevent: error\ndata: {error}\n\n"
                            ),
                        )))
                    } else if body["model"] == "bad-model" {
                        let error = json!({ "error": { "message": format!("Incorrect API key provided: {key}"),
                            "type": "invalid_request_error", "code": "bad_request" } });
                        Response::builder()
                            .status(400)
                            .header("content-type", "application/json")
                            .header("x-request-id", format!("req-{key}"))
                            .header("x-ratelimit-remaining-requests", key.clone())
                            .body(Full::new(Bytes::from(error.to_string())))
                    } else if body["stream"] == true {
                        let good = json!({ "choices": [{ "index": 0, "delta": { "content": format!("ok {key}") } }] });
                        let bad = json!({ "error": { "message": format!("quota exceeded for key {key}") } });
                        Response::builder()
                            .header("content-type", "text/event-stream")
                            .body(Full::new(Bytes::from(format!("data: {good}\n\ndata: {bad}\n\ndata: [DONE]\n\n"))))
                    } else {
                        let answer = json!({ "id": "x", "object": "chat.completion", "model": "up-model",
                            "choices": [{ "index": 0, "message": { "role": "assistant", "content": format!("ok {key}") },
                            "finish_reason": "stop" }] });
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(answer.to_string())))
                    };
                    Ok::<_, Infallible>(response.expect("response"))
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    format!("http://{addr}/v1")
}

fn echo_config(url: &str) -> String {
    format!(
        "[providers.echo]\nbase_url = \"{url}\"\napi_key = \"{KEY}\"\nmodels = [\"up-model\", \"bad-model\"]\n\
         [providers.claude]\nbackend_type = \"anthropic\"\nbase_url = \"{url}\"\napi_key = \"{KEY}\"\nmodels = [\"claude\"]\n\
         [models.m]\nname = \"m\"\n[[models.m.backends]]\nprovider = \"echo\"\nmodel = \"up-model\"\n\
         [models.bad]\nname = \"bad\"\n[[models.bad.backends]]\nprovider = \"echo\"\nmodel = \"bad-model\"\n\
         [models.claude]\nname = \"claude\"\n[[models.claude.backends]]\nprovider = \"claude\"\nmodel = \"claude\"\n{}",
        users_toml()
    )
}

#[tokio::test]
async fn a_provider_echoing_our_key_leaks_it_nowhere() {
    let url = echoing_upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("berry.toml");
    std::fs::write(&path, echo_config(&url)).expect("write");
    let (child, base, log) = spawn_berry(&path, &[("RUST_LOG", "debug")]);
    let url = format!("{base}/v1/chat/completions");
    let chat = |model: &str, stream: bool| {
        let body = json!({ "model": model, "stream": stream, "messages": [{ "role": "user", "content": "hi" }] });
        send(Method::POST, &url, Some(TOKEN), Some(body.to_string()))
    };

    // An error body and the headers that come back with it.
    let error = chat("bad", false).await;
    assert_eq!(error.status, 400);
    let everything = format!("{:?} {}", error.headers, String::from_utf8_lossy(&error.body));
    assert!(!everything.contains(KEY), "the key reached the client: {everything}");
    assert!(String::from_utf8_lossy(&error.body).contains("[redacted]"), "the message stays readable");
    assert_eq!(error.headers["x-upstream-request-id"], "req-[redacted]");

    // An SSE error event inside a stream; the successful event before it is untouched.
    let streamed = chat("m", true).await;
    let text = String::from_utf8_lossy(&streamed.body).to_string();
    assert!(text.contains("quota exceeded for key [redacted]"), "{text}");
    assert!(text.contains(&format!("ok {KEY}")), "a successful event passes byte for byte: {text}");

    // An error event of a translated (Anthropic) stream: the client's error event
    // and the gateway's warning both carry the provider's message, redacted.
    let translated = chat("claude", true).await;
    let text = String::from_utf8_lossy(&translated.body).to_string();
    assert!(text.contains("key [redacted] is overloaded"), "{text}");

    // A successful answer passes byte for byte, whatever it contains.
    let answer = chat("m", false).await;
    assert_eq!(answer.status, 200);
    assert!(String::from_utf8_lossy(&answer.body).contains(&format!("ok {KEY}")));

    sigterm(&child);
    assert_eq!(exit_of(child).await.code(), Some(0));
    let lines: Vec<String> = log.try_iter().collect();
    assert!(!lines.is_empty());
    let leaked: Vec<&String> = lines.iter().filter(|l| l.contains(KEY)).collect();
    assert!(leaked.is_empty(), "the key reached the log: {leaked:?}");
    assert!(lines.iter().any(|l| l.contains("key [redacted] is overloaded")), "the warning is still there: {lines:?}");
}
