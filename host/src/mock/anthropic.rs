//! The mock's Anthropic Messages API: a text answer (or, given tools, a `tool_use`
//! of the first tool), whole or as Anthropic's event stream; errors in Anthropic's
//! shape (529: `overloaded_error`).

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::responses::{MockBody, json_response, reply_text, split_even, sse_response, tool_call, words};
use super::settings::MockSettings;

pub fn error(status: StatusCode, message: &str) -> Response<MockBody> {
    let kind = crate::adapter::anthropic::error_type(status.as_u16());
    json_response(status, &json!({ "type": "error", "error": { "type": kind, "message": message } }))
}

pub fn count_tokens(request: &Value) -> Response<MockBody> {
    let n = request.get("messages").map_or(0, |m| words(&m.to_string()));
    json_response(StatusCode::OK, &json!({ "input_tokens": n }))
}

pub fn answer(
    request: &Value,
    model: &str,
    settings: &MockSettings,
    stream: bool,
    break_mid_stream: bool,
) -> Response<MockBody> {
    let reply = reply_text(request);
    let input_tokens = request.get("messages").map_or(0, |m| words(&m.to_string()));
    let output_tokens = words(&reply);
    let id = format!("msg_mock_{}", fastrand::u32(..));
    let tool = tool_call(request);
    let stop_reason = if tool.is_some() { "tool_use" } else { "end_turn" };
    if !stream {
        let content = match &tool {
            Some((name, input)) => json!([{ "type": "tool_use", "id": "toolu_mock_1", "name": name, "input": input }]),
            None => json!([{ "type": "text", "text": reply }]),
        };
        return json_response(
            StatusCode::OK,
            &json!({
                "id": id, "type": "message", "role": "assistant", "model": model, "content": content,
                "stop_reason": stop_reason, "stop_sequence": null,
                "usage": { "input_tokens": input_tokens, "output_tokens": output_tokens },
            }),
        );
    }
    let event = |name: &str, data: Value| Bytes::from(format!("event: {name}\ndata: {data}\n\n"));
    let mut frames = vec![
        event(
            "message_start",
            json!({ "type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": { "input_tokens": input_tokens, "output_tokens": 1 } } }),
        ),
        event("ping", json!({ "type": "ping" })),
    ];
    match &tool {
        Some((name, input)) => {
            frames.push(event(
                "content_block_start",
                json!({ "type": "content_block_start", "index": 0, "content_block":
                    { "type": "tool_use", "id": "toolu_mock_1", "name": name, "input": {} } }),
            ));
            let input = input.to_string();
            let (head, tail) = input.split_at(input.len() / 2);
            for piece in [head, tail] {
                frames.push(event(
                    "content_block_delta",
                    json!({ "type": "content_block_delta", "index": 0,
                        "delta": { "type": "input_json_delta", "partial_json": piece } }),
                ));
            }
        }
        None => {
            frames.push(event(
                "content_block_start",
                json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } }),
            ));
            for piece in split_even(&reply, settings.chunks.max(1) as usize) {
                frames.push(event(
                    "content_block_delta",
                    json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": piece } }),
                ));
            }
        }
    }
    frames.push(event("content_block_stop", json!({ "type": "content_block_stop", "index": 0 })));
    frames.push(event(
        "message_delta",
        json!({ "type": "message_delta", "delta": { "stop_reason": stop_reason, "stop_sequence": null },
            "usage": { "output_tokens": output_tokens } }),
    ));
    frames.push(event("message_stop", json!({ "type": "message_stop" })));
    sse_response(frames, settings, break_mid_stream)
}
