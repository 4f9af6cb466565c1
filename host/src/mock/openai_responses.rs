//! The mock's OpenAI Responses API (`POST /v1/responses`): one output message, whole
//! or as the API's typed event stream.

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::responses::{MockBody, json_response, now_s, reply_text, split_even, sse_response, words};
use super::settings::MockSettings;

pub fn answer(
    request: &Value,
    model: &str,
    settings: &MockSettings,
    stream: bool,
    break_mid_stream: bool,
) -> Response<MockBody> {
    let reply = reply_text(request);
    let input_tokens = request.get("input").map_or(0, |i| words(&i.to_string()));
    let usage = json!({ "input_tokens": input_tokens, "output_tokens": words(&reply),
        "total_tokens": input_tokens + words(&reply) });
    let id = format!("resp_mock_{}", fastrand::u32(..));
    let message = |text: &str, status: &str| {
        json!({ "id": "msg_mock_1", "type": "message", "role": "assistant", "status": status,
            "content": [{ "type": "output_text", "text": text, "annotations": [] }] })
    };
    let response = |status: &str, output: Value, usage: Value| {
        json!({ "id": id, "object": "response", "created_at": now_s(), "status": status, "model": model,
            "output": output, "usage": usage, "system_fingerprint": settings.name })
    };
    if !stream {
        return json_response(StatusCode::OK, &response("completed", json!([message(&reply, "completed")]), usage));
    }
    let mut sequence = 0u32;
    let mut frames = Vec::new();
    let mut event = |kind: &str, mut data: Value| {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(sequence);
        sequence += 1;
        frames.push(Bytes::from(format!("event: {kind}\ndata: {data}\n\n")));
    };
    event("response.created", json!({ "response": response("in_progress", json!([]), Value::Null) }));
    event("response.output_item.added", json!({ "output_index": 0, "item": message("", "in_progress") }));
    event(
        "response.content_part.added",
        json!({ "item_id": "msg_mock_1", "output_index": 0, "content_index": 0,
            "part": { "type": "output_text", "text": "", "annotations": [] } }),
    );
    for piece in split_even(&reply, settings.chunks.max(1) as usize) {
        event(
            "response.output_text.delta",
            json!({ "item_id": "msg_mock_1", "output_index": 0, "content_index": 0, "delta": piece }),
        );
    }
    event(
        "response.output_text.done",
        json!({ "item_id": "msg_mock_1", "output_index": 0, "content_index": 0, "text": reply }),
    );
    event("response.output_item.done", json!({ "output_index": 0, "item": message(&reply, "completed") }));
    event(
        "response.completed",
        json!({ "response": response("completed", json!([message(&reply, "completed")]), usage) }),
    );
    sse_response(frames, settings, break_mid_stream)
}
