//! The mock's Gemini API: `generateContent` and `streamGenerateContent?alt=sse`, a
//! text answer (or, given function declarations, a `functionCall` of the first);
//! errors in Google's shape.

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::responses::{MockBody, json_response, reply_text, split_even, sse_response, tool_call, words};
use super::settings::MockSettings;

pub fn error(status: StatusCode, message: &str) -> Response<MockBody> {
    let code = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    };
    json_response(status, &json!({ "error": { "code": status.as_u16(), "message": message, "status": code } }))
}

pub fn answer(
    request: &Value,
    model: &str,
    settings: &MockSettings,
    stream: bool,
    break_mid_stream: bool,
) -> Response<MockBody> {
    let reply = reply_text(request);
    let prompt = request.get("contents").map_or(0, |c| words(&c.to_string()));
    let usage = json!({ "promptTokenCount": prompt, "candidatesTokenCount": words(&reply),
        "totalTokenCount": prompt + words(&reply) });
    let response_id = format!("mock{}", fastrand::u32(..));
    let candidate = |parts: Value, finish: Option<&str>| {
        let mut c = json!({ "content": { "role": "model", "parts": parts }, "index": 0 });
        if let Some(f) = finish {
            c["finishReason"] = json!(f);
        }
        c
    };
    let answer = |candidate: Value, last: bool| {
        let mut a = json!({ "candidates": [candidate], "modelVersion": model, "responseId": response_id });
        if last {
            a["usageMetadata"] = usage.clone();
        }
        a
    };
    let tool = tool_call(request);
    if !stream {
        let parts = match &tool {
            Some((name, args)) => json!([{ "functionCall": { "name": name, "args": args } }]),
            None => json!([{ "text": reply }]),
        };
        return json_response(StatusCode::OK, &answer(candidate(parts, Some("STOP")), true));
    }
    let event = |v: Value| Bytes::from(format!("data: {v}\r\n\r\n"));
    let frames: Vec<Bytes> = match &tool {
        Some((name, args)) => {
            let parts = json!([{ "functionCall": { "name": name, "args": args } }]);
            vec![event(answer(candidate(parts, Some("STOP")), true))]
        }
        None => {
            let pieces = split_even(&reply, settings.chunks.max(1) as usize);
            let n = pieces.len();
            pieces
                .into_iter()
                .enumerate()
                .map(|(i, piece)| {
                    let last = i + 1 == n;
                    event(answer(candidate(json!([{ "text": piece }]), last.then_some("STOP")), last))
                })
                .collect()
        }
    };
    sse_response(frames, settings, break_mid_stream)
}
