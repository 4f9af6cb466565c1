//! Deterministic OpenAI-shaped answers of the mock provider.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde_json::{Value, json};

use super::settings::MockSettings;
use crate::server::body::BerryBody;

/// The mock's body type: unlike the gateway's, it can fail, to break streams on purpose.
pub type MockBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

pub fn json_response(status: StatusCode, value: &Value) -> Response<MockBody> {
    widen(crate::server::body::json_response(status, value))
}

/// A gateway body (which cannot fail) as a mock body.
pub fn widen(response: Response<BerryBody>) -> Response<MockBody> {
    response.map(|b| b.map_err(|never: Infallible| match never {}).boxed_unsync())
}

pub fn error(status: StatusCode, code: &str, message: &str) -> Response<MockBody> {
    json_response(
        status,
        &json!({ "error": { "message": message, "type": "mock_error", "code": code, "param": null } }),
    )
}

/// The answer for `path` (under `/v1`) to a request `body`.
pub fn answer(path: &str, body: &Bytes, settings: &MockSettings, break_mid_stream: bool) -> Response<MockBody> {
    let path = path.trim_start_matches("/v1");
    if path == "/models" {
        let ids: Vec<&str> = if settings.models.is_empty() {
            vec!["mock"]
        } else {
            settings.models.iter().map(String::as_str).collect()
        };
        let data: Vec<Value> =
            ids.iter().map(|id| json!({ "id": id, "object": "model", "created": 0, "owned_by": "mock" })).collect();
        return json_response(StatusCode::OK, &json!({ "object": "list", "data": data }));
    }
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return error(StatusCode::BAD_REQUEST, "invalid_json", "Request body is not valid JSON.");
    };
    let model = request.get("model").and_then(Value::as_str).unwrap_or("mock").to_string();
    match path {
        "/embeddings" => embeddings(&request, &model, settings),
        "/completions" => completions(&request, &model, settings),
        _ if request.get("stream").and_then(Value::as_bool) == Some(true) => {
            stream_chat(&request, &model, settings, break_mid_stream)
        }
        _ => chat(&request, &model, settings),
    }
}

/// The reply text: fixed words plus the caller's last message, so it is stable
/// across runs and different per prompt.
fn reply_text(request: &Value) -> String {
    let last = request
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .or_else(|| request.get("prompt").and_then(Value::as_str))
        .unwrap_or("");
    let echoed: String = last.chars().take(200).collect();
    format!("Hello from Berry's mock provider! You said: {echoed}")
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn usage(request: &Value, reply: &str) -> Value {
    let prompt = words(&request.get("messages").map(Value::to_string).unwrap_or_default());
    let completion = words(reply);
    json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion })
}

fn now_s() -> u64 {
    crate::health::now_ms() / 1000
}

fn chat(request: &Value, model: &str, settings: &MockSettings) -> Response<MockBody> {
    let reply = reply_text(request);
    json_response(
        StatusCode::OK,
        &json!({
            "id": format!("chatcmpl-mock-{}", fastrand::u32(..)),
            "object": "chat.completion",
            "created": now_s(),
            "model": model,
            "system_fingerprint": settings.name,
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": reply }, "finish_reason": "stop" }],
            "usage": usage(request, &reply),
        }),
    )
}

fn completions(request: &Value, model: &str, settings: &MockSettings) -> Response<MockBody> {
    let reply = reply_text(request);
    json_response(
        StatusCode::OK,
        &json!({
            "id": format!("cmpl-mock-{}", fastrand::u32(..)),
            "object": "text_completion",
            "created": now_s(),
            "model": model,
            "system_fingerprint": settings.name,
            "choices": [{ "index": 0, "text": reply, "finish_reason": "stop", "logprobs": null }],
            "usage": usage(request, &reply),
        }),
    )
}

fn embeddings(request: &Value, model: &str, settings: &MockSettings) -> Response<MockBody> {
    let inputs: Vec<String> = match request.get("input") {
        Some(Value::Array(items)) => {
            items.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).collect()
        }
        Some(Value::String(s)) => vec![s.clone()],
        _ => vec![String::new()],
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            // A fixed pseudo-embedding derived from the text's bytes.
            let mut seed =
                text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
            let vector: Vec<f64> = (0..8)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
                })
                .collect();
            json!({ "object": "embedding", "index": i, "embedding": vector })
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|s| words(s)).sum();
    json_response(
        StatusCode::OK,
        &json!({
            "object": "list",
            "data": data,
            "model": model,
            "system_fingerprint": settings.name,
            "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
        }),
    )
}

fn stream_chat(request: &Value, model: &str, settings: &MockSettings, break_mid_stream: bool) -> Response<MockBody> {
    let reply = reply_text(request);
    let id = format!("chatcmpl-mock-{}", fastrand::u32(..));
    let created = now_s();
    let include_usage = request.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true);
    let pieces = split_even(&reply, settings.chunks.max(1) as usize);
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": settings.name,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        })
    };
    let mut events: Vec<Value> = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let delta = if i == 0 { json!({ "role": "assistant", "content": piece }) } else { json!({ "content": piece }) };
        events.push(chunk(delta, Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    if include_usage {
        let mut last = chunk(json!({}), Value::Null);
        last["choices"] = json!([]);
        last["usage"] = usage(request, &reply);
        events.push(last);
    }
    let mut frames: Vec<Bytes> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let prefix = if settings.sse_ids { format!("id: {i}\nevent: message\n") } else { String::new() };
            Bytes::from(format!("{prefix}data: {e}\n\n"))
        })
        .collect();
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let cut = break_mid_stream.then_some(frames.len() / 2);
    let delay = Duration::from_millis(settings.chunk_delay_ms);
    let stamp = settings.stamp;
    let stream = futures_util::stream::iter(frames.into_iter().enumerate()).then(move |(i, frame)| async move {
        if i > 0 && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if cut == Some(i) {
            return Err(std::io::Error::other("mock breaks the stream"));
        }
        let frame = if stamp { stamped(&frame) } else { frame };
        Ok::<_, std::io::Error>(Frame::data(frame))
    });
    // An error item aborts the chunked response: the client sees a broken stream.
    let body = StreamBody::new(stream).boxed_unsync();
    let mut response = Response::new(body);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `frame` preceded by a `: sent_us=…` SSE comment carrying the time now.
fn stamped(frame: &[u8]) -> Bytes {
    let us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
    let mut out = format!(": sent_us={us}\n").into_bytes();
    out.extend_from_slice(frame);
    Bytes::from(out)
}

fn split_even(text: &str, parts: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let size = chars.len().div_ceil(parts).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}
