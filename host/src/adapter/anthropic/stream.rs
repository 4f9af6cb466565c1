//! An Anthropic event stream → OpenAI chat completion chunks, event by event.
//!
//! `message_start` opens the answer (the role chunk), text deltas become content
//! chunks, a `tool_use` block becomes a tool call whose `input_json_delta` pieces are
//! its arguments, `message_delta` carries the finish reason and output tokens, and
//! `message_stop` ends it (the usage chunk when asked for, then `[DONE]`). An `error`
//! event is a fault with its class; a stream that ends before `message_stop` is too.

use std::borrow::Cow;

use serde::Deserialize;

use super::response::finish_reason;
use crate::adapter::StreamFault;
use crate::adapter::chunk::{ChunkWriter, Usage};
use crate::adapter::sse::{SseEvents, SseTranslator};
use crate::health::ErrorClass;

/// The translator: an SSE parser feeding [`State`].
pub type ToChat = SseTranslator<State>;

/// What the translation has seen so far.
pub struct State {
    writer: ChunkWriter,
    include_usage: bool,
    /// Tool call index (OpenAI's) of each content block index (Anthropic's).
    tool_of_block: Vec<Option<u32>>,
    tools: u32,
    finish: &'static str,
    prompt_tokens: u64,
    completion_tokens: u64,
    done: bool,
}

/// The fields of every event type this translator reads.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(default)]
    index: usize,
    #[serde(borrow)]
    message: Option<Message<'a>>,
    #[serde(borrow)]
    content_block: Option<Block<'a>>,
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
    usage: Option<TokenCounts>,
    #[serde(borrow)]
    error: Option<ErrorBody<'a>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    usage: Option<TokenCounts>,
}

#[derive(Deserialize)]
struct Block<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(borrow)]
    stop_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct TokenCounts {
    input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

impl TokenCounts {
    fn prompt(&self) -> Option<u64> {
        let parts = [self.input_tokens, self.cache_creation_input_tokens, self.cache_read_input_tokens];
        parts.iter().any(Option::is_some).then(|| parts.iter().flatten().sum())
    }
}

#[derive(Deserialize)]
struct ErrorBody<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    message: Cow<'a, str>,
}

impl ToChat {
    pub fn new(model: &str, include_usage: bool) -> Self {
        SseTranslator::over(State {
            writer: ChunkWriter::new("chatcmpl-anthropic".into(), model.to_string()),
            include_usage,
            tool_of_block: Vec::new(),
            tools: 0,
            finish: "stop",
            prompt_tokens: 0,
            completion_tokens: 0,
            done: false,
        })
    }
}

impl SseEvents for State {
    fn event(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), StreamFault> {
        let event: Event = serde_json::from_slice(data).map_err(|e| StreamFault {
            class: ErrorClass::Server,
            message: format!("unreadable event from the provider: {e}"),
        })?;
        match &*event.kind {
            "message_start" => {
                if let Some(m) = event.message {
                    self.writer.id = m.id.into_owned();
                    if let Some(model) = m.model {
                        self.writer.model = model.into_owned();
                    }
                    if let Some(u) = m.usage {
                        self.count(&u);
                    }
                }
                self.writer.role(out);
            }
            "content_block_start" => {
                let Some(block) = event.content_block else { return Ok(()) };
                match &*block.kind {
                    "tool_use" => {
                        let tool = self.tools;
                        self.tools += 1;
                        if self.tool_of_block.len() <= event.index {
                            self.tool_of_block.resize(event.index + 1, None);
                        }
                        self.tool_of_block[event.index] = Some(tool);
                        let (id, name) = (block.id.unwrap_or_default(), block.name.unwrap_or_default());
                        self.writer.tool_start(out, tool, &id, &name);
                    }
                    "text" => {
                        if let Some(text) = block.text.filter(|t| !t.is_empty()) {
                            self.writer.content(out, &text);
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let Some(delta) = event.delta else { return Ok(()) };
                match delta.kind.as_deref() {
                    Some("text_delta") => {
                        if let Some(text) = delta.text.filter(|t| !t.is_empty()) {
                            self.writer.content(out, &text);
                        }
                    }
                    Some("input_json_delta") => {
                        let tool = self.tool_of_block.get(event.index).copied().flatten();
                        if let (Some(tool), Some(json)) = (tool, delta.partial_json.filter(|j| !j.is_empty())) {
                            self.writer.tool_args(out, tool, &json);
                        }
                    }
                    // Thinking and signatures have no OpenAI counterpart.
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = event.delta.and_then(|d| d.stop_reason) {
                    self.finish = finish_reason(&reason);
                }
                if let Some(u) = event.usage {
                    self.count(&u);
                }
            }
            "message_stop" => {
                self.writer.finish(out, self.finish);
                if self.include_usage {
                    self.writer.usage(out, Usage::new(self.prompt_tokens, self.completion_tokens));
                }
                ChunkWriter::done(out);
                self.done = true;
            }
            "error" => {
                let error = event.error;
                let kind = error.as_ref().map_or("api_error", |e| &*e.kind);
                let message = error.as_ref().map_or("the provider reported an error", |e| &*e.message);
                return Err(StreamFault { class: super::class_of(kind), message: format!("{kind}: {message}") });
            }
            _ => {} // ping, content_block_stop
        }
        Ok(())
    }

    fn end(&mut self, _out: &mut Vec<u8>) -> Result<(), StreamFault> {
        if self.done { Ok(()) } else { Err(StreamFault::cut_short("before message_stop")) }
    }
}

impl State {
    fn count(&mut self, usage: &TokenCounts) {
        if let Some(p) = usage.prompt() {
            self.prompt_tokens = self.prompt_tokens.max(p);
        }
        if let Some(c) = usage.output_tokens {
            self.completion_tokens = self.completion_tokens.max(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::StreamTranslator;

    const STREAM: &str = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n",
        "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi \\\"there\\\"\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"look\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"q\\\":\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"1}\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":12}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    fn translate(split: usize) -> Result<String, StreamFault> {
        let mut t = ToChat::new("fallback", true);
        let mut out = Vec::new();
        for piece in STREAM.as_bytes().chunks(split) {
            t.feed(piece, &mut out)?;
        }
        t.finish(&mut out)?;
        Ok(String::from_utf8(out).expect("utf-8"))
    }

    #[test]
    fn events_become_chunks_whatever_the_cuts() {
        let whole = translate(STREAM.len()).expect("translates");
        for split in [1, 2, 3, 7, 64] {
            assert_eq!(translate(split).expect("translates"), whole, "split {split}");
        }
        let chunks: Vec<serde_json::Value> = whole
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).expect("chunk JSON"))
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[0]["id"], "msg_1");
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hi \"there\"");
        assert_eq!(chunks[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"], "look");
        let args: String = chunks[3..5]
            .iter()
            .map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str().expect("args"))
            .collect();
        assert_eq!(args, "{\"q\":1}");
        assert_eq!(chunks[5]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks[6]["usage"]["prompt_tokens"], 9);
        assert_eq!(chunks[6]["usage"]["completion_tokens"], 12);
        assert!(whole.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn an_error_event_and_an_early_end_are_faults() {
        let mut t = ToChat::new("m", false);
        let mut out = Vec::new();
        let overloaded = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let fault = t.feed(overloaded, &mut out).expect_err("a fault");
        assert_eq!(fault.class, ErrorClass::Server);
        let mut t = ToChat::new("m", false);
        t.feed(STREAM.split("event: message_delta").next().expect("head").as_bytes(), &mut out).expect("feed");
        assert!(t.finish(&mut out).is_err(), "no message_stop");
    }
}
