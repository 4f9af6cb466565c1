//! An Anthropic message → an OpenAI chat completion.

use serde_json::{Value, json};

use crate::adapter::now_s;

/// OpenAI's `finish_reason` for Anthropic's `stop_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// Prompt tokens as OpenAI counts them: cached input included.
pub fn prompt_tokens(usage: &Value) -> u64 {
    ["input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"]
        .iter()
        .filter_map(|k| usage.get(*k).and_then(Value::as_u64))
        .sum()
}

pub fn to_chat(message: &Value, model: &str) -> Result<Value, String> {
    let blocks = message.get("content").and_then(Value::as_array).ok_or("content: not a list of blocks")?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => tool_calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": block.get("input").map_or_else(|| "{}".to_string(), Value::to_string),
                },
            })),
            // Thinking blocks and server tool results have no OpenAI counterpart.
            _ => {}
        }
    }
    let mut reply = json!({ "role": "assistant", "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) } });
    if !tool_calls.is_empty() {
        reply["tool_calls"] = Value::Array(tool_calls);
    }
    let stop = message.get("stop_reason").and_then(Value::as_str).unwrap_or("end_turn");
    let usage = message.get("usage").unwrap_or(&Value::Null);
    let (prompt, completion) = (prompt_tokens(usage), usage.get("output_tokens").and_then(Value::as_u64).unwrap_or(0));
    Ok(json!({
        "id": message.get("id").cloned().unwrap_or_else(|| json!("msg")),
        "object": "chat.completion",
        "created": now_s(),
        "model": message.get("model").and_then(Value::as_str).unwrap_or(model),
        "choices": [{ "index": 0, "message": reply, "finish_reason": finish_reason(stop), "logprobs": null }],
        "usage": { "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_tool_use_become_a_chat_completion() {
        let message = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [
                { "type": "text", "text": "Let me look." },
                { "type": "tool_use", "id": "toolu_1", "name": "look", "input": { "q": "cat" } }
            ],
            "stop_reason": "tool_use",
            "usage": { "input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 7 }
        });
        let chat = to_chat(&message, "fallback").expect("translates");
        let choice = &chat["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "Let me look.");
        assert_eq!(choice["message"]["tool_calls"][0]["function"]["arguments"], "{\"q\":\"cat\"}");
        assert_eq!(chat["usage"], json!({ "prompt_tokens": 15, "completion_tokens": 7, "total_tokens": 22 }));
        assert_eq!(chat["model"], "claude-x");
    }
}
