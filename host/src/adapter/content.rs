//! Pieces of an OpenAI chat request that the Anthropic and Gemini translations read
//! alike: a user message's content parts, and turns that must alternate by role.

use serde_json::Value;

/// A provider's way of writing one content part.
pub(crate) struct PartShape {
    pub text: fn(&str) -> Value,
    /// An image given as base64 data: (media type, data).
    pub inline_image: fn(&str, &str) -> Value,
    /// An image given by its web address.
    pub linked_image: fn(&str) -> Value,
}

/// The parts of an OpenAI user message's `content` (a string, or a list of `text` and
/// `image_url` parts), written in `shape`. Empty text is left out (both providers
/// reject empty text parts); other part types are an error naming their index.
pub(crate) fn user_parts(content: &Value, shape: &PartShape) -> Result<Vec<Value>, String> {
    match content {
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![(shape.text)(s)]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .filter_map(|(i, part)| match part.get("type").and_then(Value::as_str) {
                Some("text") => {
                    let text = part.get("text").and_then(Value::as_str).unwrap_or_default();
                    (!text.is_empty()).then(|| Ok((shape.text)(text)))
                }
                Some("image_url") => {
                    let url = part.pointer("/image_url/url").and_then(Value::as_str).unwrap_or_default();
                    Some(Ok(image(url, shape)))
                }
                other => Some(Err(format!("content[{i}].type: {other:?} is not supported by this provider"))),
            })
            .collect(),
        Value::Null => Ok(Vec::new()),
        _ => Err("content: must be a string or a list of parts".into()),
    }
}

/// An image part from an OpenAI image URL: a `data:…;base64,` URL or a web address.
fn image(url: &str, shape: &PartShape) -> Value {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((media, data)) = rest.split_once(";base64,")
    {
        return (shape.inline_image)(media, data);
    }
    (shape.linked_image)(url)
}

/// Append a turn, merging it into the previous one of the same role (both providers
/// want roles to alternate; OpenAI allows e.g. two user messages in a row).
pub(crate) fn push_turn(turns: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, parts: Vec<Value>) {
    match turns.last_mut() {
        Some((last, existing)) if *last == role => existing.extend(parts),
        _ => turns.push((role, parts)),
    }
}
