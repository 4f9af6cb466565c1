//! An Anthropic Messages request → an OpenAI chat request.

use serde_json::{Map, Value, json};

use crate::adapter::text_of;

pub fn to_chat(request: &Value) -> Result<Value, String> {
    let mut messages = Vec::new();
    match request.get("system") {
        None | Some(Value::Null) => {}
        Some(system) => messages.push(json!({ "role": "system", "content": text_of(system) })),
    }
    let turns = request.get("messages").and_then(Value::as_array).ok_or("messages: must be an array")?;
    for (i, m) in turns.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).ok_or_else(|| format!("messages[{i}].role: missing"))?;
        let content = m.get("content").unwrap_or(&Value::Null);
        let blocks: Vec<Value> = match content {
            Value::String(s) => vec![json!({ "type": "text", "text": s })],
            Value::Array(blocks) => blocks.clone(),
            _ => return Err(format!("messages[{i}].content: must be a string or a list of blocks")),
        };
        match role {
            "user" => user(&blocks, &mut messages).map_err(|e| format!("messages[{i}].{e}"))?,
            "assistant" => messages.push(assistant(&blocks)),
            other => return Err(format!("messages[{i}].role: {other:?} is not supported")),
        }
    }
    let mut chat = Map::new();
    chat.insert("model".into(), request.get("model").cloned().unwrap_or(Value::Null));
    chat.insert("messages".into(), Value::Array(messages));
    if let Some(max) = request.get("max_tokens") {
        chat.insert("max_tokens".into(), max.clone());
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = request.get(key).filter(|v| !v.is_null()) {
            chat.insert(key.into(), v.clone());
        }
    }
    if let Some(stop) = request.get("stop_sequences").filter(|v| v.as_array().is_some_and(|a| !a.is_empty())) {
        chat.insert("stop".into(), stop.clone());
    }
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        chat.insert("stream".into(), json!(true));
        // Anthropic's closing event carries the token counts: ask for them.
        chat.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    if let Some(user) = request.pointer("/metadata/user_id") {
        chat.insert("user".into(), user.clone());
    }
    if let Some(tools) = request.get("tools").and_then(Value::as_array) {
        let tools: Vec<Value> = tools
            .iter()
            .filter(|t| t.get("input_schema").is_some())
            .map(|t| {
                let mut function = Map::new();
                function.insert("name".into(), t.get("name").cloned().unwrap_or(Value::Null));
                if let Some(d) = t.get("description") {
                    function.insert("description".into(), d.clone());
                }
                function.insert("parameters".into(), t.get("input_schema").cloned().unwrap_or(Value::Null));
                json!({ "type": "function", "function": function })
            })
            .collect();
        if !tools.is_empty() {
            chat.insert("tools".into(), Value::Array(tools));
        }
    }
    if let Some(choice) = request.get("tool_choice") {
        let mapped = match choice.get("type").and_then(Value::as_str) {
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => json!({ "type": "function", "function": { "name": choice.get("name") } }),
            _ => json!("auto"),
        };
        chat.insert("tool_choice".into(), mapped);
        if choice.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
            chat.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    Ok(Value::Object(chat))
}

/// A user turn: its tool results become tool messages (first: they answer the
/// assistant's calls just before), the rest one user message.
fn user(blocks: &[Value], messages: &mut Vec<Value>) -> Result<(), String> {
    let mut parts = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                parts.push(json!({ "type": "text", "text": block.get("text").cloned().unwrap_or(Value::Null) }))
            }
            Some("image") => {
                let source = block.get("source").unwrap_or(&Value::Null);
                let url = match source.get("type").and_then(Value::as_str) {
                    Some("base64") => format!(
                        "data:{};base64,{}",
                        source.get("media_type").and_then(Value::as_str).unwrap_or("image/png"),
                        source.get("data").and_then(Value::as_str).unwrap_or_default()
                    ),
                    _ => source.get("url").and_then(Value::as_str).unwrap_or_default().to_string(),
                };
                parts.push(json!({ "type": "image_url", "image_url": { "url": url } }));
            }
            Some("tool_result") => messages.push(json!({
                "role": "tool",
                "tool_call_id": block.get("tool_use_id").cloned().unwrap_or(Value::Null),
                "content": text_of(block.get("content").unwrap_or(&Value::Null)),
            })),
            other => return Err(format!("content[{i}].type: {other:?} is not supported by this backend")),
        }
    }
    if !parts.is_empty() {
        // One text part is written as a plain string, as most clients do.
        let content = match parts.as_slice() {
            [only] if only["type"] == "text" => only["text"].clone(),
            _ => Value::Array(parts),
        };
        messages.push(json!({ "role": "user", "content": content }));
    }
    Ok(())
}

fn assistant(blocks: &[Value]) -> Value {
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": block.get("input").map_or_else(|| "{}".to_string(), Value::to_string),
                },
            })),
            _ => {} // thinking blocks: nothing to say in OpenAI's terms
        }
    }
    let mut message =
        json!({ "role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) } });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_conversation_translates() {
        let request = json!({
            "model": "m", "max_tokens": 100, "system": [{ "type": "text", "text": "Be brief." }],
            "stream": true, "stop_sequences": ["END"],
            "messages": [
                { "role": "user", "content": "weather?" },
                { "role": "assistant", "content": [
                    { "type": "text", "text": "Checking." },
                    { "type": "tool_use", "id": "toolu_1", "name": "weather", "input": { "city": "Oslo" } } ] },
                { "role": "user", "content": [
                    { "type": "tool_result", "tool_use_id": "toolu_1", "content": "3 degrees" },
                    { "type": "text", "text": "and tomorrow?" } ] }
            ],
            "tools": [{ "name": "weather", "input_schema": { "type": "object" } }],
            "tool_choice": { "type": "tool", "name": "weather" }
        });
        let chat = to_chat(&request).expect("translates");
        let m = chat["messages"].as_array().expect("messages");
        assert_eq!(m[0], json!({ "role": "system", "content": "Be brief." }));
        assert_eq!(m[2]["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Oslo\"}");
        assert_eq!(m[3], json!({ "role": "tool", "tool_call_id": "toolu_1", "content": "3 degrees" }));
        assert_eq!(m[4], json!({ "role": "user", "content": "and tomorrow?" }));
        assert_eq!(chat["stream_options"]["include_usage"], true);
        assert_eq!(chat["stop"], json!(["END"]));
        assert_eq!(chat["tool_choice"]["function"]["name"], "weather");
    }
}
