//! An OpenAI chat request → a Gemini `generateContent` request.
//!
//! System messages become `systemInstruction`; the assistant is the `model` role;
//! tool calls become `functionCall` parts and tool answers `functionResponse` parts
//! (named by the call they answer); images become `inlineData` (data URLs) or
//! `fileData` parts; sampling options go to `generationConfig`; tool schemas lose
//! the JSON Schema keys Gemini refuses.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::adapter::content::{PartShape, push_turn, user_parts};
use crate::adapter::text_of;

/// JSON Schema keys Gemini's function declarations reject.
const UNSUPPORTED_SCHEMA_KEYS: &[&str] = &["$schema", "additionalProperties", "strict", "$defs", "definitions"];

pub fn from_chat(chat: &Value) -> Result<Value, String> {
    let messages = chat.get("messages").and_then(Value::as_array).ok_or("messages: must be an array")?;
    // functionResponse parts name the function; OpenAI's tool messages name the call.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
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
                let mut parts = Vec::new();
                let text = text_of(content);
                if !text.is_empty() {
                    parts.push(json!({ "text": text }));
                }
                for call in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    let name = call.pointer("/function/name").and_then(Value::as_str).unwrap_or_default();
                    if let Some(id) = call.get("id").and_then(Value::as_str) {
                        call_names.insert(id, name);
                    }
                    let arguments = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}");
                    let args: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
                    parts.push(json!({ "functionCall": { "name": name, "args": args } }));
                }
                push_turn(&mut turns, "model", parts);
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or_default();
                let name = call_names.get(id).copied().unwrap_or(id);
                let text = text_of(content);
                // A JSON object answer is passed as it is; anything else is wrapped.
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({ "content": text }),
                };
                push_turn(
                    &mut turns,
                    "user",
                    vec![json!({ "functionResponse": { "name": name, "response": response } })],
                );
            }
            other => return Err(format!("messages[{i}].role: {other:?} is not supported")),
        }
    }
    let mut body = Map::new();
    let contents: Vec<Value> = turns
        .into_iter()
        .filter(|(_, parts)| !parts.is_empty())
        .map(|(role, parts)| json!({ "role": role, "parts": parts }))
        .collect();
    body.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({ "parts": [{ "text": system.join("\n\n") }] }));
    }
    let mut generation = Map::new();
    for (from, to) in [("temperature", "temperature"), ("top_p", "topP"), ("n", "candidateCount"), ("seed", "seed")] {
        if let Some(v) = chat.get(from).filter(|v| !v.is_null()) {
            generation.insert(to.into(), v.clone());
        }
    }
    if let Some(max) = ["max_completion_tokens", "max_tokens"].iter().find_map(|k| chat.get(*k).and_then(Value::as_u64))
    {
        generation.insert("maxOutputTokens".into(), json!(max));
    }
    match chat.get("stop") {
        Some(Value::String(s)) => {
            generation.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(list)) if !list.is_empty() => {
            generation.insert("stopSequences".into(), Value::Array(list.clone()));
        }
        _ => {}
    }
    if let Some(format) = chat.pointer("/response_format/type").and_then(Value::as_str)
        && (format == "json_object" || format == "json_schema")
    {
        generation.insert("responseMimeType".into(), json!("application/json"));
    }
    if !generation.is_empty() {
        body.insert("generationConfig".into(), Value::Object(generation));
    }
    if let Some(tools) = chat.get("tools").and_then(Value::as_array) {
        let declarations: Vec<Value> = tools
            .iter()
            .filter_map(|t| t.get("function"))
            .map(|f| {
                let mut d = Map::new();
                d.insert("name".into(), f.get("name").cloned().unwrap_or(Value::Null));
                if let Some(description) = f.get("description") {
                    d.insert("description".into(), description.clone());
                }
                if let Some(parameters) = f.get("parameters") {
                    d.insert("parameters".into(), clean_schema(parameters));
                }
                Value::Object(d)
            })
            .collect();
        if !declarations.is_empty() {
            body.insert("tools".into(), json!([{ "functionDeclarations": declarations }]));
        }
    }
    let mode = match chat.get("tool_choice") {
        Some(Value::String(s)) if s == "required" => Some(json!({ "mode": "ANY" })),
        Some(Value::String(s)) if s == "none" => Some(json!({ "mode": "NONE" })),
        Some(Value::String(s)) if s == "auto" => Some(json!({ "mode": "AUTO" })),
        Some(Value::Object(o)) => o
            .get("function")
            .and_then(|f| f.get("name"))
            .map(|name| json!({ "mode": "ANY", "allowedFunctionNames": [name] })),
        _ => None,
    };
    if let Some(mode) = mode {
        body.insert("toolConfig".into(), json!({ "functionCallingConfig": mode }));
    }
    Ok(Value::Object(body))
}

/// How Gemini writes text and images (a linked image's type guessed from its name).
const PARTS: PartShape = PartShape {
    text: |text| json!({ "text": text }),
    inline_image: |media, data| json!({ "inlineData": { "mimeType": media, "data": data } }),
    linked_image: |url| {
        let mime = match url.rsplit('.').next().map(str::to_ascii_lowercase).as_deref() {
            Some("png") => "image/png",
            Some("webp") => "image/webp",
            Some("gif") => "image/gif",
            _ => "image/jpeg",
        };
        json!({ "fileData": { "mimeType": mime, "fileUri": url } })
    },
};

/// A JSON Schema without the keys Gemini rejects, at every depth.
fn clean_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !UNSUPPORTED_SCHEMA_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), clean_schema(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(clean_schema).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_conversation_translates() {
        let chat = json!({
            "messages": [
                { "role": "system", "content": "Be brief." },
                { "role": "user", "content": "weather?" },
                { "role": "assistant", "tool_calls": [
                    { "id": "call_7", "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Oslo\"}" } } ] },
                { "role": "tool", "tool_call_id": "call_7", "content": "{\"temp\":3}" }
            ],
            "max_tokens": 20, "temperature": 0.5, "stop": ["x"],
            "tools": [{ "type": "function", "function": { "name": "weather", "parameters":
                { "type": "object", "additionalProperties": false, "properties": { "city": { "type": "string" } } } } }],
            "tool_choice": { "type": "function", "function": { "name": "weather" } }
        });
        let out = from_chat(&chat).expect("translates");
        assert_eq!(out["systemInstruction"]["parts"][0]["text"], "Be brief.");
        assert_eq!(out["contents"][1]["role"], "model");
        assert_eq!(
            out["contents"][1]["parts"][0]["functionCall"],
            json!({ "name": "weather", "args": { "city": "Oslo" } })
        );
        assert_eq!(
            out["contents"][2]["parts"][0]["functionResponse"],
            json!({ "name": "weather", "response": { "temp": 3 } })
        );
        assert_eq!(
            out["generationConfig"],
            json!({ "temperature": 0.5, "maxOutputTokens": 20, "stopSequences": ["x"] })
        );
        let parameters = &out["tools"][0]["functionDeclarations"][0]["parameters"];
        assert!(parameters.get("additionalProperties").is_none(), "{parameters}");
        assert_eq!(
            out["toolConfig"]["functionCallingConfig"],
            json!({ "mode": "ANY", "allowedFunctionNames": ["weather"] })
        );
    }
}
