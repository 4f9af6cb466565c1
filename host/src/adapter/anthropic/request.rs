//! An OpenAI chat request → an Anthropic Messages request.
//!
//! System and developer messages become `system`; tool calls become `tool_use`
//! blocks and tool answers `tool_result` blocks in a user turn; images become image
//! blocks; consecutive turns of one role are merged (Anthropic wants them to
//! alternate); `max_tokens`, which Anthropic requires, defaults to
//! [`DEFAULT_MAX_TOKENS`].

use serde_json::{Map, Value, json};

use crate::adapter::content::{PartShape, push_turn, user_parts};
use crate::adapter::text_of;

/// `max_tokens` when the request sets none.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

pub fn from_chat(chat: &Value, model: &str, stream: bool) -> Result<Value, String> {
    let messages = chat.get("messages").and_then(Value::as_array).ok_or("messages: must be an array")?;
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).ok_or_else(|| format!("messages[{i}].role: missing"))?;
        let content = m.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => system.push(text_of(content)),
            "user" => {
                push_turn(&mut turns, "user", user_parts(content, &PARTS).map_err(|e| format!("messages[{i}].{e}"))?)
            }
            "assistant" => {
                let mut blocks = Vec::new();
                let text = text_of(content);
                if !text.is_empty() {
                    blocks.push(json!({ "type": "text", "text": text }));
                }
                for call in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    blocks.push(tool_use(call).map_err(|e| format!("messages[{i}].tool_calls: {e}"))?);
                }
                push_turn(&mut turns, "assistant", blocks);
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or_default();
                let result = json!({ "type": "tool_result", "tool_use_id": id, "content": text_of(content) });
                push_turn(&mut turns, "user", vec![result]);
            }
            other => return Err(format!("messages[{i}].role: {other:?} is not supported")),
        }
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    let messages: Vec<Value> = turns
        .into_iter()
        .filter(|(_, blocks)| !blocks.is_empty())
        .map(|(role, content)| json!({ "role": role, "content": content }))
        .collect();
    body.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        body.insert("system".into(), json!(system.join("\n\n")));
    }
    let max_tokens = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| chat.get(*k).and_then(Value::as_u64))
        .unwrap_or(DEFAULT_MAX_TOKENS);
    body.insert("max_tokens".into(), json!(max_tokens));
    for key in ["temperature", "top_p"] {
        if let Some(v) = chat.get(key).filter(|v| !v.is_null()) {
            body.insert(key.into(), v.clone());
        }
    }
    match chat.get("stop") {
        Some(Value::String(s)) => {
            body.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(list)) if !list.is_empty() => {
            body.insert("stop_sequences".into(), Value::Array(list.clone()));
        }
        _ => {}
    }
    if stream {
        body.insert("stream".into(), json!(true));
    }
    if let Some(user) = chat.get("user").and_then(Value::as_str) {
        body.insert("metadata".into(), json!({ "user_id": user }));
    }
    if let Some(tools) = chat.get("tools").and_then(Value::as_array) {
        let tools: Vec<Value> = tools
            .iter()
            .filter_map(|t| t.get("function"))
            .map(|f| {
                let mut tool = Map::new();
                tool.insert("name".into(), f.get("name").cloned().unwrap_or(Value::Null));
                if let Some(d) = f.get("description") {
                    tool.insert("description".into(), d.clone());
                }
                let schema = f.get("parameters").cloned().unwrap_or_else(|| json!({ "type": "object" }));
                tool.insert("input_schema".into(), schema);
                Value::Object(tool)
            })
            .collect();
        if !tools.is_empty() {
            body.insert("tools".into(), Value::Array(tools));
        }
    }
    let parallel = chat.get("parallel_tool_calls").and_then(Value::as_bool);
    let mut choice = match chat.get("tool_choice") {
        Some(Value::String(s)) if s == "required" => Some(json!({ "type": "any" })),
        Some(Value::String(s)) if s == "none" => Some(json!({ "type": "none" })),
        Some(Value::String(s)) if s == "auto" => Some(json!({ "type": "auto" })),
        Some(Value::Object(o)) => {
            o.get("function").and_then(|f| f.get("name")).map(|name| json!({ "type": "tool", "name": name }))
        }
        _ => None,
    };
    if parallel == Some(false) && body.contains_key("tools") {
        let c = choice.get_or_insert_with(|| json!({ "type": "auto" }));
        if c["type"] != "none" {
            c["disable_parallel_tool_use"] = json!(true);
        }
    }
    if let Some(c) = choice {
        body.insert("tool_choice".into(), c);
    }
    Ok(Value::Object(body))
}

/// How Anthropic writes text and images.
const PARTS: PartShape = PartShape {
    text: |text| json!({ "type": "text", "text": text }),
    inline_image: |media, data| json!({ "type": "image", "source": { "type": "base64", "media_type": media, "data": data } }),
    linked_image: |url| json!({ "type": "image", "source": { "type": "url", "url": url } }),
};

fn tool_use(call: &Value) -> Result<Value, String> {
    let id = call.get("id").and_then(Value::as_str).ok_or("a tool call has no id")?;
    let name = call.pointer("/function/name").and_then(Value::as_str).ok_or("a tool call has no function name")?;
    let arguments = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}");
    let input: Value = if arguments.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(arguments).map_err(|e| format!("arguments of {name:?} are not JSON: {e}"))?
    };
    Ok(json!({ "type": "tool_use", "id": id, "name": name, "input": input }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_with_tools_and_images_translates() {
        let chat = json!({
            "model": "x", "max_tokens": 50, "stop": "END", "user": "u1",
            "messages": [
                { "role": "system", "content": "Be brief." },
                { "role": "user", "content": [
                    { "type": "text", "text": "What is this?" },
                    { "type": "image_url", "image_url": { "url": "data:image/png;base64,AAAA" } } ] },
                { "role": "assistant", "content": null, "tool_calls": [
                    { "id": "call_1", "type": "function", "function": { "name": "look", "arguments": "{\"q\":1}" } } ] },
                { "role": "tool", "tool_call_id": "call_1", "content": "a cat" },
                { "role": "user", "content": "thanks" }
            ],
            "tools": [{ "type": "function", "function": { "name": "look", "parameters": { "type": "object" } } }],
            "tool_choice": "required", "parallel_tool_calls": false
        });
        let out = from_chat(&chat, "claude-x", true).expect("translates");
        assert_eq!(out["system"], "Be brief.");
        assert_eq!(out["max_tokens"], 50);
        assert_eq!(out["stop_sequences"], json!(["END"]));
        assert_eq!(out["stream"], true);
        assert_eq!(out["metadata"]["user_id"], "u1");
        assert_eq!(out["tool_choice"], json!({ "type": "any", "disable_parallel_tool_use": true }));
        assert_eq!(out["tools"][0]["input_schema"], json!({ "type": "object" }));
        let m = out["messages"].as_array().expect("messages");
        assert_eq!(m.len(), 3, "tool result and the next user text merge into one user turn: {m:?}");
        assert_eq!(m[0]["content"][1]["source"]["media_type"], "image/png");
        assert_eq!(
            m[1]["content"][0],
            json!({ "type": "tool_use", "id": "call_1", "name": "look", "input": { "q": 1 } })
        );
        assert_eq!(m[2]["content"][0]["type"], "tool_result");
        assert_eq!(m[2]["content"][1], json!({ "type": "text", "text": "thanks" }));
    }
}
