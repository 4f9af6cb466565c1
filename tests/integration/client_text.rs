//! Hardening round 2, what clients write (issue 17, items 9–11): bounded echoes,
//! escaped format characters in the logs, the bearer scheme in any case.

use std::time::Duration;

use http::{Method, Request};
use http_body_util::Full;
use serde_json::json;

use crate::harness::*;

fn demo(path: &std::path::Path) {
    std::fs::write(
        path,
        format!(
            "[providers.up]\nbase_url = \"mock://up\"\nmodels = [\"up-model\"]\n\n[models.m]\nname = \"m\"\n\
             [[models.m.backends]]\nprovider = \"up\"\nmodel = \"up-model\"\n{}",
            users_toml()
        ),
    )
    .expect("write");
}

/// Ask for `model` and return the answer and the gateway's request line for it.
async fn ask(format: &str, model: &str) -> (Reply, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("berry.toml");
    demo(&path);
    let (child, base, log) = spawn_berry(&path, &[("BERRY_LOG_FORMAT", format)]);
    let body = json!({ "model": model, "messages": [{ "role": "user", "content": "hi" }] }).to_string();
    let reply = send(Method::POST, &format!("{base}/v1/chat/completions"), Some(TOKEN), Some(body)).await;
    sigterm(&child);
    let _ = exit_of(child).await;
    let line = log
        .try_iter()
        .find(|l| l.contains("berry::request") && l.contains("/v1/chat/completions"))
        .expect("the request's log line");
    (reply, line)
}

#[tokio::test]
async fn a_huge_model_name_is_cut_in_the_answer_and_the_log() {
    let (reply, line) = ask("text", &"m".repeat(1_000_000)).await;
    reply.assert_error(404, "model_not_found");
    assert!(reply.body.len() < 1024, "the 404 echoes {} bytes", reply.body.len());
    assert!(String::from_utf8_lossy(&reply.body).contains("…(cut: 1000000 bytes in all)"));
    assert!(line.len() < 1024, "a {}-byte log line", line.len());
    assert!(line.contains("…(cut: 1000000 bytes in all)"), "{line}");
}

#[tokio::test]
async fn format_and_separator_characters_are_escaped_in_text_and_json_logs() {
    let model = "evil\u{202E}txt.exe\u{2028}INFO forged line\u{2029}";
    for format in ["text", "json"] {
        let (reply, line) = ask(format, model).await;
        assert_eq!(reply.status, 404);
        for raw in ['\u{202E}', '\u{2028}', '\u{2029}'] {
            assert!(!line.contains(raw), "{format}: {raw:?} written raw: {line:?}");
        }
        assert!(line.contains("\\u202e") && line.contains("\\u2028"), "{format}: {line}");
        if format == "json" {
            let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
            assert_eq!(v["model"], model, "JSON readers get the text back");
        }
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_read_in_any_case() {
    let up = mock("up").await;
    let gw = TestGateway::start(&config("weighted_random", &[("up", &up)], &[], "")).await;
    for scheme in ["BEARER", "bearer", "Bearer", "bEaReR"] {
        let request = Request::builder()
            .method(Method::POST)
            .uri(gw.url("/v1/chat/completions"))
            .header("authorization", format!("{scheme} {TOKEN}"))
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(chat_body("m").to_string())))
            .expect("request");
        let reply = tokio::time::timeout(Duration::from_secs(10), send_request(request)).await.expect("answer");
        assert_eq!(reply.status, 200, "{scheme}: {}", String::from_utf8_lossy(&reply.body));
    }
}
