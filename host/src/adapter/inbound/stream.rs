//! OpenAI chat completion chunks → Anthropic's event stream, for `/v1/messages`
//! clients served by a backend that streams OpenAI's format.
//!
//! The first chunk opens the message (`message_start`); content deltas fill a text
//! block and tool call deltas a `tool_use` block each (a new block closes the open
//! one); the finish reason and the usage chunk go into `message_delta`, then
//! `message_stop`, when `[DONE]` arrives. An `error` object in the stream is a fault.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::stop_reason;
use crate::adapter::StreamFault;
use crate::adapter::sse::{SseEvents, SseTranslator};
use crate::health::ErrorClass;

/// The translator: an SSE parser feeding [`State`].
pub type FromChat = SseTranslator<State>;

#[derive(Clone, Copy, PartialEq)]
enum Open {
    Nothing,
    Text,
    /// A tool_use block, for OpenAI's tool call index.
    Tool(u32),
}

/// What the translation has seen so far.
pub struct State {
    model: String,
    started: bool,
    open: Open,
    /// Index of the next content block.
    blocks: u32,
    stop_reason: &'static str,
    input_tokens: u64,
    output_tokens: u64,
    done: bool,
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    /// The model that answers, as the provider names it.
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    choices: Vec<Choice<'a>>,
    usage: Option<Usage>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    delta: Delta<'a>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct Delta<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(default)]
    index: u32,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    function: Option<Function<'a>>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

/// `content_block_delta` with borrowed text, written without a JSON tree.
#[derive(Serialize)]
struct BlockDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    delta: DeltaBody<'a>,
}

#[derive(Serialize)]
struct DeltaBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partial_json: Option<&'a str>,
}

impl FromChat {
    /// `model` is the backend's model name, reported in `message_start` unless the
    /// provider's first chunk names its model itself (see `relay::plan`: an answer's
    /// model is always the upstream's).
    pub fn new(model: &str) -> Self {
        SseTranslator::over(State {
            model: model.to_string(),
            started: false,
            open: Open::Nothing,
            blocks: 0,
            stop_reason: "end_turn",
            input_tokens: 0,
            output_tokens: 0,
            done: false,
        })
    }
}

fn write(out: &mut Vec<u8>, event: &str, data: &impl Serialize) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, data);
    out.extend_from_slice(b"\n\n");
}

impl SseEvents for State {
    fn event(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), StreamFault> {
        if self.done {
            return Ok(());
        }
        if data == b"[DONE]" {
            self.close(out);
            return Ok(());
        }
        let chunk: Chunk = serde_json::from_slice(data).map_err(|e| StreamFault {
            class: ErrorClass::Server,
            message: format!("unreadable chunk from the provider: {e}"),
        })?;
        if let Some(error) = chunk.error {
            let message = error.get("message").and_then(|m| m.as_str()).unwrap_or("the provider reported an error");
            return Err(StreamFault { class: ErrorClass::Server, message: message.to_string() });
        }
        if !self.started
            && let Some(model) = chunk.model.as_deref().filter(|m| !m.is_empty())
        {
            self.model = model.to_string();
        }
        self.start(out, chunk.id.as_deref().unwrap_or("stream"));
        if let Some(u) = chunk.usage {
            self.input_tokens = u.prompt_tokens.unwrap_or(self.input_tokens);
            self.output_tokens = u.completion_tokens.unwrap_or(self.output_tokens);
        }
        for choice in chunk.choices {
            if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                if self.open != Open::Text {
                    self.open_block(out, Open::Text, json!({ "type": "text", "text": "" }));
                }
                let delta = DeltaBody { kind: "text_delta", text: Some(&text), partial_json: None };
                write(
                    out,
                    "content_block_delta",
                    &BlockDelta { kind: "content_block_delta", index: self.blocks - 1, delta },
                );
            }
            for call in choice.delta.tool_calls.into_iter().flatten() {
                let function = call.function.as_ref();
                if let Some(id) = &call.id {
                    let name = function.and_then(|f| f.name.as_deref()).unwrap_or_default();
                    let block = json!({ "type": "tool_use", "id": id, "name": name, "input": {} });
                    self.open_block(out, Open::Tool(call.index), block);
                }
                let arguments = function.and_then(|f| f.arguments.as_deref()).filter(|a| !a.is_empty());
                if let Some(json) = arguments
                    && self.open == Open::Tool(call.index)
                {
                    let delta = DeltaBody { kind: "input_json_delta", text: None, partial_json: Some(json) };
                    write(
                        out,
                        "content_block_delta",
                        &BlockDelta { kind: "content_block_delta", index: self.blocks - 1, delta },
                    );
                }
            }
            if let Some(finish) = choice.finish_reason {
                self.stop_reason = stop_reason(&finish);
            }
        }
        Ok(())
    }

    fn end(&mut self, _out: &mut Vec<u8>) -> Result<(), StreamFault> {
        if self.done { Ok(()) } else { Err(StreamFault::cut_short("before [DONE]")) }
    }
}

impl State {
    fn start(&mut self, out: &mut Vec<u8>, id: &str) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        let id = if id.starts_with("msg") { id.to_string() } else { format!("msg_{id}") };
        let message = json!({
            "type": "message_start",
            "message": {
                "id": id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                "stop_reason": null, "stop_sequence": null, "usage": { "input_tokens": 0, "output_tokens": 0 },
            },
        });
        write(out, "message_start", &message);
    }

    fn open_block(&mut self, out: &mut Vec<u8>, open: Open, block: serde_json::Value) {
        self.close_block(out);
        write(
            out,
            "content_block_start",
            &json!({ "type": "content_block_start", "index": self.blocks, "content_block": block }),
        );
        self.blocks += 1;
        self.open = open;
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if self.open != Open::Nothing {
            write(out, "content_block_stop", &json!({ "type": "content_block_stop", "index": self.blocks - 1 }));
            self.open = Open::Nothing;
        }
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        self.start(out, "stream");
        self.close_block(out);
        let delta = json!({
            "type": "message_delta",
            "delta": { "stop_reason": self.stop_reason, "stop_sequence": null },
            "usage": { "input_tokens": self.input_tokens, "output_tokens": self.output_tokens },
        });
        write(out, "message_delta", &delta);
        write(out, "message_stop", &json!({ "type": "message_stop" }));
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::StreamTranslator;

    #[test]
    fn chunks_become_anthropic_events() {
        let stream = concat!(
            "data: {\"id\":\"c1\",\"model\":\"gpt-like-0613\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3}}\n\n",
            "data: [DONE]\n\n",
        );
        let mut t = FromChat::new("claude-like");
        let mut out = Vec::new();
        for piece in stream.as_bytes().chunks(9) {
            t.feed(piece, &mut out).expect("feed");
        }
        t.finish(&mut out).expect("finish");
        let text = String::from_utf8(out).expect("utf-8");
        let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(text.contains("\"stop_reason\":\"tool_use\""), "{text}");
        assert!(text.contains("\"usage\":{\"input_tokens\":5,\"output_tokens\":3}"), "{text}");
        assert!(text.contains("\"model\":\"gpt-like-0613\""), "the upstream's own name: {text}");
    }
}
