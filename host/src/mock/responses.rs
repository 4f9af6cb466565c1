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

/// The APIs the mock serves, told apart by path (under any prefix, so Azure's
/// deployment URLs and Gemini's `/v1beta/models/…` reach them too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Api {
    Chat,
    Completions,
    Embeddings,
    Responses,
    Models,
    /// Anthropic's Messages API.
    Messages,
    CountTokens,
    /// Gemini's `models/{model}:generateContent` (or `:streamGenerateContent`).
    Gemini {
        model: String,
        stream: bool,
    },
}

impl Api {
    pub fn of(path: &str) -> Option<Api> {
        if let Some((_, rest)) = path.split_once("/models/")
            && let Some((model, method)) = rest.split_once(':')
        {
            return match method {
                "generateContent" => Some(Api::Gemini { model: model.to_string(), stream: false }),
                "streamGenerateContent" => Some(Api::Gemini { model: model.to_string(), stream: true }),
                _ => None,
            };
        }
        let ends = |suffix: &str| path.ends_with(suffix);
        Some(match () {
            _ if ends("/chat/completions") => Api::Chat,
            _ if ends("/completions") => Api::Completions,
            _ if ends("/embeddings") => Api::Embeddings,
            _ if ends("/responses") => Api::Responses,
            _ if ends("/messages/count_tokens") => Api::CountTokens,
            _ if ends("/messages") => Api::Messages,
            _ if ends("/models") => Api::Models,
            _ => return None,
        })
    }
}

/// The answer of `api` to a request `body`.
pub fn answer(api: &Api, body: &Bytes, settings: &MockSettings, break_mid_stream: bool) -> Response<MockBody> {
    if *api == Api::Models {
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
        return failure(api, StatusCode::BAD_REQUEST, "Request body is not valid JSON.");
    };
    let model = request.get("model").and_then(Value::as_str).unwrap_or("mock").to_string();
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    match api {
        Api::Embeddings => embeddings(&request, &model, settings),
        Api::Completions if stream => stream_completions(&request, &model, settings, break_mid_stream),
        Api::Completions => completions(&request, &model, settings),
        Api::Responses => super::openai_responses::answer(&request, &model, settings, stream, break_mid_stream),
        Api::Messages => super::anthropic::answer(&request, &model, settings, stream, break_mid_stream),
        Api::CountTokens => super::anthropic::count_tokens(&request),
        Api::Gemini { model, stream } => super::gemini::answer(&request, model, settings, *stream, break_mid_stream),
        _ if stream => stream_chat(&request, &model, settings, break_mid_stream),
        _ => chat(&request, &model, settings),
    }
}

/// An injected failure (or a bad request) in `api`'s own error shape.
pub fn failure(api: &Api, status: StatusCode, message: &str) -> Response<MockBody> {
    match api {
        Api::Messages | Api::CountTokens => super::anthropic::error(status, message),
        Api::Gemini { .. } => super::gemini::error(status, message),
        _ => error(status, "mock_failure", message),
    }
}

/// The reply text: fixed words plus the caller's last message, so it is stable
/// across runs and different per prompt.
pub fn reply_text(request: &Value) -> String {
    let echoed: String = last_user_text(request).chars().take(200).collect();
    format!("Hello from Berry's mock provider! You said: {echoed}")
}

/// The text of the last message in any of the formats the mock speaks (OpenAI
/// `messages`/`prompt`/`input`, Anthropic `messages` blocks, Gemini `contents`).
pub fn last_user_text(request: &Value) -> String {
    // Text parts, Anthropic tool results and Gemini function responses all count.
    let text_of = |content: &Value| match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| {
                p.get("text")
                    .or_else(|| {
                        p.get("content").filter(|_| p.get("type").and_then(Value::as_str) == Some("tool_result"))
                    })
                    .or_else(|| p.pointer("/functionResponse/response/content"))
                    .and_then(Value::as_str)
            })
            .collect(),
        _ => String::new(),
    };
    if let Some(last) = request.get("messages").and_then(Value::as_array).and_then(|m| m.last()) {
        return last.get("content").map(text_of).unwrap_or_default();
    }
    if let Some(last) = request.get("contents").and_then(Value::as_array).and_then(|c| c.last()) {
        return last.get("parts").map(text_of).unwrap_or_default();
    }
    request.get("prompt").or_else(|| request.get("input")).map(text_of).unwrap_or_default()
}

/// Whether the last message answers a tool call (then the mock replies in text;
/// otherwise, given tools, it calls the first one).
pub fn answers_a_tool(request: &Value) -> bool {
    let last = request.get("messages").and_then(Value::as_array).and_then(|m| m.last());
    if let Some(last) = last {
        return last.get("role").and_then(Value::as_str) == Some("tool")
            || last.get("content").and_then(Value::as_array).is_some_and(|blocks| {
                blocks.iter().any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            });
    }
    let last = request.get("contents").and_then(Value::as_array).and_then(|c| c.last());
    last.and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .is_some_and(|parts| parts.iter().any(|p| p.get("functionResponse").is_some()))
}

/// The tool call the mock makes, if the request offers tools: (name, arguments).
pub fn tool_call(request: &Value) -> Option<(String, Value)> {
    if answers_a_tool(request) {
        return None;
    }
    let tools = request.get("tools").and_then(Value::as_array)?;
    let first = tools.first()?;
    let name = first
        .pointer("/function/name")
        .or_else(|| first.get("name"))
        .or_else(|| first.pointer("/functionDeclarations/0/name"))
        .and_then(Value::as_str)?;
    Some((name.to_string(), json!({ "query": last_user_text(request) })))
}

pub fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

pub fn usage(request: &Value, reply: &str) -> Value {
    let prompt = words(&request.get("messages").map(Value::to_string).unwrap_or_default());
    let completion = words(reply);
    json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion })
}

pub fn now_s() -> u64 {
    crate::health::now_ms() / 1000
}

fn chat(request: &Value, model: &str, settings: &MockSettings) -> Response<MockBody> {
    let reply = reply_text(request);
    let (message, finish) = match tool_call(request) {
        Some((name, args)) => (
            json!({ "role": "assistant", "content": null, "tool_calls": [{
                "id": "call_mock_1", "type": "function",
                "function": { "name": name, "arguments": args.to_string() } }] }),
            "tool_calls",
        ),
        None => (json!({ "role": "assistant", "content": reply }), "stop"),
    };
    json_response(
        StatusCode::OK,
        &json!({
            "id": format!("chatcmpl-mock-{}", fastrand::u32(..)),
            "object": "chat.completion",
            "created": now_s(),
            "model": model,
            "system_fingerprint": settings.name,
            "choices": [{ "index": 0, "message": message, "finish_reason": finish }],
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

/// A streamed legacy completion: `text_completion` chunks, as OpenAI sends them.
fn stream_completions(
    request: &Value,
    model: &str,
    settings: &MockSettings,
    break_mid_stream: bool,
) -> Response<MockBody> {
    let reply = reply_text(request);
    let id = format!("cmpl-mock-{}", fastrand::u32(..));
    let created = now_s();
    let chunk = |text: &str, finish: Value| {
        json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "system_fingerprint": settings.name,
            "choices": [{ "index": 0, "text": text, "finish_reason": finish, "logprobs": null }],
        })
    };
    let mut events: Vec<Value> =
        split_even(&reply, settings.chunks.max(1) as usize).iter().map(|piece| chunk(piece, Value::Null)).collect();
    events.push(chunk("", json!("stop")));
    if request.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true) {
        let mut last = chunk("", Value::Null);
        last["choices"] = json!([]);
        last["usage"] = usage(request, &reply);
        events.push(last);
    }
    let mut frames: Vec<Bytes> = events.iter().map(|e| Bytes::from(format!("data: {e}\n\n"))).collect();
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    sse_response(frames, settings, break_mid_stream)
}

fn embeddings(request: &Value, model: &str, settings: &MockSettings) -> Response<MockBody> {
    // The Node SDK asks for base64 by default: little-endian f32s, base64-encoded.
    let base64 = request.get("encoding_format").and_then(Value::as_str) == Some("base64");
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
            let mut seed = crate::fnv::hash(text.as_bytes());
            let vector: Vec<f64> = (0..8)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
                })
                .collect();
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| (*v as f32).to_le_bytes()).collect();
                Value::String(base64_encode(&bytes))
            } else {
                json!(vector)
            };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
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
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": settings.name,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        })
    };
    let mut events: Vec<Value> = Vec::new();
    match tool_call(request) {
        Some((name, args)) => {
            let args = args.to_string();
            let (head, tail) = args.split_at(args.len() / 2);
            events.push(chunk(
                json!({ "role": "assistant", "content": null, "tool_calls": [{ "index": 0, "id": "call_mock_1",
                    "type": "function", "function": { "name": name, "arguments": "" } }] }),
                Value::Null,
            ));
            for piece in [head, tail] {
                events.push(chunk(
                    json!({ "tool_calls": [{ "index": 0, "function": { "arguments": piece } }] }),
                    Value::Null,
                ));
            }
            events.push(chunk(json!({}), json!("tool_calls")));
        }
        None => {
            for (i, piece) in split_even(&reply, settings.chunks.max(1) as usize).iter().enumerate() {
                let delta =
                    if i == 0 { json!({ "role": "assistant", "content": piece }) } else { json!({ "content": piece }) };
                events.push(chunk(delta, Value::Null));
            }
            events.push(chunk(json!({}), json!("stop")));
        }
    }
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
    sse_response(frames, settings, break_mid_stream)
}

/// A streamed answer of `frames` (whole SSE events), paced by `chunk_delay_ms`, cut
/// into `split_bytes` pieces when asked, stamped when asked, and broken off half-way
/// when `break_mid_stream`.
pub fn sse_response(frames: Vec<Bytes>, settings: &MockSettings, break_mid_stream: bool) -> Response<MockBody> {
    let cut = break_mid_stream.then_some(frames.len() / 2);
    let delay = Duration::from_millis(settings.chunk_delay_ms);
    let (stamp, split) = (settings.stamp, settings.split_bytes as usize);
    let stream = futures_util::stream::iter(frames.into_iter().enumerate()).then(move |(i, frame)| async move {
        if i > 0 && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if cut == Some(i) {
            return Err(std::io::Error::other("mock breaks the stream"));
        }
        let frame = if stamp { stamped(&frame) } else { frame };
        let pieces: Vec<Bytes> = if split == 0 {
            vec![frame]
        } else {
            (0..frame.len()).step_by(split).map(|at| frame.slice(at..(at + split).min(frame.len()))).collect()
        };
        Ok::<_, std::io::Error>(futures_util::stream::iter(pieces.into_iter().map(|p| Ok(Frame::data(p)))))
    });
    // An error item aborts the chunked response: the client sees a broken stream.
    let stream = stream.map(|r| match r {
        Ok(pieces) => pieces.left_stream(),
        Err(e) => futures_util::stream::iter(vec![Err(e)]).right_stream(),
    });
    let body = StreamBody::new(stream.flatten()).boxed_unsync();
    let mut response = Response::new(body);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Standard base64 with padding (RFC 4648).
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let n = group.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `frame` preceded by a `: sent_us=…` SSE comment carrying the time now.
fn stamped(frame: &[u8]) -> Bytes {
    let us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
    let mut out = format!(": sent_us={us}\n").into_bytes();
    out.extend_from_slice(frame);
    Bytes::from(out)
}

pub fn split_even(text: &str, parts: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let size = chars.len().div_ceil(parts).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::base64_encode;

    #[test]
    fn base64_is_rfc_4648() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(&[0xff, 0xfe, 0x00, 0x80]), "//4AgA==");
    }
}
