//! Clients that speak Anthropic's Messages API (`POST /v1/messages`), served by
//! backends that do not: the request is put into OpenAI's chat shape ([`request`]),
//! which every adapter takes, and the answer is put back into Anthropic's — whole
//! ([`from_chat`]) or event by event ([`stream`]). To an Anthropic backend, the
//! request passes through untouched instead.

pub mod request;
pub mod stream;

use serde_json::{Value, json};

/// Anthropic's `stop_reason` for OpenAI's `finish_reason`.
pub fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// An OpenAI chat completion → an Anthropic message. Its model is the one the answer
/// names, else `model` (the backend's).
pub fn from_chat(chat: &Value, model: &str) -> Result<Value, String> {
    let model = chat.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()).unwrap_or(model);
    let choice = chat.pointer("/choices/0").ok_or("the answer has no choices")?;
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    if let Some(text) = message.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        content.push(json!({ "type": "text", "text": text }));
    }
    for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let arguments = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}");
        content.push(json!({
            "type": "tool_use",
            "id": call.get("id").cloned().unwrap_or(Value::Null),
            "name": call.pointer("/function/name").cloned().unwrap_or(Value::Null),
            "input": serde_json::from_str::<Value>(arguments).unwrap_or_else(|_| json!({})),
        }));
    }
    let finish = choice.get("finish_reason").and_then(Value::as_str).unwrap_or("stop");
    let usage = chat.get("usage").unwrap_or(&Value::Null);
    let n = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
    let id = chat.get("id").and_then(Value::as_str).unwrap_or("message");
    Ok(json!({
        "id": if id.starts_with("msg") { id.to_string() } else { format!("msg_{id}") },
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(finish),
        "stop_sequence": null,
        "usage": { "input_tokens": n("prompt_tokens"), "output_tokens": n("completion_tokens") },
    }))
}
