//! A Gemini `GenerateContentResponse` → an OpenAI chat completion.

use serde_json::{Value, json};

use crate::adapter::now_s;

/// OpenAI's `finish_reason` for Gemini's `finishReason` (a function call makes it
/// `tool_calls`, as OpenAI reports it).
pub fn finish_reason(reason: &str, called_tools: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => "content_filter",
        _ if called_tools => "tool_calls",
        _ => "stop",
    }
}

/// (prompt, completion) tokens of a `usageMetadata` (thinking counts as completion).
pub fn tokens(usage: &Value) -> (u64, u64) {
    let n = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
    (n("promptTokenCount"), n("candidatesTokenCount") + n("thoughtsTokenCount"))
}

pub fn to_chat(answer: &Value, model: &str) -> Value {
    let candidate = answer.pointer("/candidates/0").unwrap_or(&Value::Null);
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for part in candidate.pointer("/content/parts").and_then(Value::as_array).into_iter().flatten() {
        if part.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(call) = part.get("functionCall") {
            let id = call
                .get("id")
                .and_then(Value::as_str)
                .map_or_else(|| format!("call_{}", tool_calls.len()), str::to_string);
            tool_calls.push(json!({
                "id": id,
                "type": "function",
                "function": {
                    "name": call.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": call.get("args").map_or_else(|| "{}".to_string(), Value::to_string),
                },
            }));
        }
    }
    // A prompt blocked outright comes back with no candidate at all.
    let reason = candidate
        .get("finishReason")
        .and_then(Value::as_str)
        .unwrap_or_else(|| if answer.pointer("/promptFeedback/blockReason").is_some() { "SAFETY" } else { "STOP" });
    let finish = finish_reason(reason, !tool_calls.is_empty());
    let mut message = json!({ "role": "assistant", "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) } });
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let (prompt, completion) = tokens(answer.get("usageMetadata").unwrap_or(&Value::Null));
    json!({
        "id": answer.get("responseId").and_then(Value::as_str).map_or_else(|| "chatcmpl-gemini".to_string(), |id| format!("chatcmpl-{id}")),
        "object": "chat.completion",
        "created": now_s(),
        "model": answer.get("modelVersion").and_then(Value::as_str).unwrap_or(model),
        "choices": [{ "index": 0, "message": message, "finish_reason": finish, "logprobs": null }],
        "usage": { "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_function_calls_and_usage_translate() {
        let answer = json!({
            "candidates": [{ "content": { "role": "model", "parts": [
                { "text": "Checking." }, { "functionCall": { "name": "weather", "args": { "city": "Oslo" } } } ] },
                "finishReason": "STOP" }],
            "usageMetadata": { "promptTokenCount": 4, "candidatesTokenCount": 6, "totalTokenCount": 10 },
            "modelVersion": "gemini-x", "responseId": "abc"
        });
        let chat = to_chat(&answer, "fallback");
        assert_eq!(chat["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chat["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Oslo\"}");
        assert_eq!(chat["usage"]["total_tokens"], 10);
        let blocked = to_chat(&json!({ "promptFeedback": { "blockReason": "SAFETY" } }), "m");
        assert_eq!(blocked["choices"][0]["finish_reason"], "content_filter");
    }
}
