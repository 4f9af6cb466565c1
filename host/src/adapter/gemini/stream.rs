//! A Gemini `streamGenerateContent?alt=sse` stream → OpenAI chat completion chunks.
//! Every event is a whole `GenerateContentResponse` holding the next parts: text
//! becomes content chunks, a function call a tool call (Gemini sends its arguments
//! whole), `finishReason` the finish chunk; the last `usageMetadata` is the usage.

use serde_json::Value;

use super::response::{finish_reason, tokens};
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
    tools: u32,
    finish: Option<&'static str>,
    usage: (u64, u64),
}

impl ToChat {
    pub fn new(model: &str, include_usage: bool) -> Self {
        SseTranslator::over(State {
            writer: ChunkWriter::new("chatcmpl-gemini".into(), model.to_string()),
            include_usage,
            tools: 0,
            finish: None,
            usage: (0, 0),
        })
    }
}

impl SseEvents for State {
    fn event(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), StreamFault> {
        let answer: Value = serde_json::from_slice(data).map_err(|e| StreamFault {
            class: ErrorClass::Server,
            message: format!("unreadable event from the provider: {e}"),
        })?;
        if let Some(error) = answer.get("error") {
            let status = error.get("code").and_then(Value::as_u64).unwrap_or(500) as u16;
            let message = error.get("message").and_then(Value::as_str).unwrap_or("the provider reported an error");
            return Err(StreamFault {
                class: ErrorClass::from_status(status).unwrap_or(ErrorClass::Server),
                message: message.to_string(),
            });
        }
        if self.writer.id == "chatcmpl-gemini"
            && let Some(id) = answer.get("responseId").and_then(Value::as_str)
        {
            self.writer.id = format!("chatcmpl-{id}");
        }
        self.writer.role(out);
        let candidate = answer.pointer("/candidates/0").unwrap_or(&Value::Null);
        for part in candidate.pointer("/content/parts").and_then(Value::as_array).into_iter().flatten() {
            if part.get("thought").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            if let Some(text) = part.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                self.writer.content(out, text);
            }
            if let Some(call) = part.get("functionCall") {
                let index = self.tools;
                self.tools += 1;
                let id = call.get("id").and_then(Value::as_str).map_or_else(|| format!("call_{index}"), str::to_string);
                let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
                self.writer.tool_start(out, index, &id, name);
                let args = call.get("args").map_or_else(|| "{}".to_string(), Value::to_string);
                self.writer.tool_args(out, index, &args);
            }
        }
        if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
            self.finish = Some(finish_reason(reason, self.tools > 0));
        } else if answer.pointer("/promptFeedback/blockReason").is_some() {
            self.finish = Some("content_filter");
        }
        if let Some(usage) = answer.get("usageMetadata") {
            self.usage = tokens(usage);
        }
        Ok(())
    }

    fn end(&mut self, out: &mut Vec<u8>) -> Result<(), StreamFault> {
        // Gemini has no end-of-stream event: a finish reason is what says it is over.
        let finish = self.finish.ok_or_else(|| StreamFault::cut_short("without a finishReason"))?;
        self.writer.finish(out, finish);
        if self.include_usage {
            self.writer.usage(out, Usage::new(self.usage.0, self.usage.1));
        }
        ChunkWriter::done(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::StreamTranslator;

    #[test]
    fn chunks_come_out_whole_whatever_the_cuts() {
        let stream = concat!(
            "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Hel\"}]}}],\"responseId\":\"r1\"}\r\n\r\n",
            "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"lo\"},{\"functionCall\":{\"name\":\"f\",\"args\":{\"a\":1}}}]},\"finishReason\":\"STOP\"}],",
            "\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":2}}\r\n\r\n",
        );
        let translate = |split: usize| {
            let mut t = ToChat::new("g", true);
            let mut out = Vec::new();
            for piece in stream.as_bytes().chunks(split) {
                t.feed(piece, &mut out).expect("feed");
            }
            t.finish(&mut out).expect("finish");
            String::from_utf8(out).expect("utf-8")
        };
        let whole = translate(stream.len());
        for split in [1, 5, 33] {
            assert_eq!(translate(split), whole);
        }
        assert!(whole.contains("\"content\":\"Hel\"") && whole.contains("\"content\":\"lo\""), "{whole}");
        assert!(whole.contains("\"finish_reason\":\"tool_calls\""), "{whole}");
        assert!(whole.contains("\"arguments\":\"{\\\"a\\\":1}\""), "{whole}");
        assert!(whole.contains("\"prompt_tokens\":3,\"completion_tokens\":2"), "{whole}");
        assert!(whole.contains("\"id\":\"chatcmpl-r1\""), "{whole}");
        assert!(whole.ends_with("data: [DONE]\n\n"));
    }
}
