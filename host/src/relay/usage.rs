//! Token usage, read on the side from the provider's answers for metrics (before
//! any translation): the body the client gets is never touched.

use serde::Deserialize;

/// Where usage sits in every format Berry relays: OpenAI's `usage` (chat, and
/// `input_tokens`/`output_tokens` in the Responses API, where a stream nests it in
/// `response`), Anthropic's `usage` (in its stream's first event, under `message`),
/// Gemini's `usageMetadata`. [`of_json`] finds the member whatever its parent.
#[derive(Deserialize)]
struct Counts {
    #[serde(alias = "input_tokens")]
    prompt_tokens: Option<u64>,
    #[serde(alias = "output_tokens")]
    completion_tokens: Option<u64>,
    /// OpenAI chat (`prompt_tokens_details`), Responses (`input_tokens_details`).
    #[serde(alias = "input_tokens_details")]
    prompt_tokens_details: Option<Details>,
    #[serde(alias = "output_tokens_details")]
    completion_tokens_details: Option<Details>,
    /// Anthropic: input read from its prompt cache (not in `input_tokens`).
    cache_read_input_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Details {
    cached_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiCounts {
    prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
    cached_content_token_count: Option<u64>,
    thoughts_token_count: Option<u64>,
}

/// The model an answer (or a stream's first event) names: OpenAI's and Anthropic's
/// `model`, Gemini's `modelVersion`; read from the first 4 KiB only (it comes early).
pub fn response_model(bytes: &[u8]) -> Option<String> {
    let head = &bytes[..bytes.len().min(4096)];
    for key in [&b"\"model\""[..], b"\"modelVersion\""] {
        let Some(at) = memchr::memmem::find(head, key) else { continue };
        let rest = head[at + key.len()..].trim_ascii_start().strip_prefix(b":")?.trim_ascii_start();
        let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<String>();
        if let Some(Ok(model)) = values.next() {
            return Some(model);
        }
    }
    None
}

/// Tokens as the provider reported them. `prompt_tokens` is the provider's own input
/// count (OpenAI's includes cached input, Anthropic's does not: its cache reads are
/// `cached_tokens` alone).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
}

impl Usage {
    /// Counts reported in pieces (Anthropic: input first, output at the end; Gemini:
    /// growing counts per event) keep the largest of each.
    fn merge(self, other: Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.max(other.prompt_tokens),
            completion_tokens: self.completion_tokens.max(other.completion_tokens),
            cached_tokens: self.cached_tokens.max(other.cached_tokens),
            reasoning_tokens: self.reasoning_tokens.max(other.reasoning_tokens),
        }
    }

    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

fn from_counts(c: &Counts) -> Option<Usage> {
    let detail = |d: &Option<Details>, f: fn(&Details) -> Option<u64>| d.as_ref().and_then(f).unwrap_or(0);
    (c.prompt_tokens.is_some() || c.completion_tokens.is_some()).then(|| Usage {
        prompt_tokens: c.prompt_tokens.unwrap_or(0),
        completion_tokens: c.completion_tokens.unwrap_or(0),
        cached_tokens: c.cache_read_input_tokens.unwrap_or(0) + detail(&c.prompt_tokens_details, |d| d.cached_tokens),
        reasoning_tokens: detail(&c.completion_tokens_details, |d| d.reasoning_tokens),
    })
}

/// The usage a JSON answer (or one streamed event) reports, if any.
///
/// Only the usage member is read: parsing starts at its key instead of walking the
/// whole answer (whose text is most of it). The key is found from the end, where
/// every format puts it; a key inside a string value would follow a backslash.
pub fn of_json(bytes: &[u8]) -> Option<Usage> {
    let mut end = bytes.len();
    while let Some(at) = rfind(&bytes[..end], b"\"usage") {
        end = at;
        if at > 0 && bytes[at - 1] == b'\\' {
            continue;
        }
        let rest = &bytes[at + 1..];
        let (gemini, key_len) = if rest.starts_with(b"usageMetadata\"") {
            (true, "usageMetadata\"".len())
        } else if rest.starts_with(b"usage\"") {
            (false, "usage\"".len())
        } else {
            continue;
        };
        let value = rest[key_len..].trim_ascii_start().strip_prefix(b":")?;
        let mut de = serde_json::Deserializer::from_slice(value);
        return if gemini {
            let g = GeminiCounts::deserialize(&mut de).ok()?;
            Some(Usage {
                prompt_tokens: g.prompt_token_count.unwrap_or(0),
                completion_tokens: g.candidates_token_count.unwrap_or(0),
                cached_tokens: g.cached_content_token_count.unwrap_or(0),
                reasoning_tokens: g.thoughts_token_count.unwrap_or(0),
            })
        } else {
            from_counts(&Counts::deserialize(&mut de).ok()?)
        };
    }
    None
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// Largest SSE line kept while looking for `usage` in a stream.
const MAX_LINE: usize = 64 << 10;

/// Scans SSE bytes as they pass for a `data:` event carrying `usage` (sent by
/// OpenAI-compatible providers with `stream_options.include_usage`).
#[derive(Default)]
pub struct SseUsage {
    line: Vec<u8>,
    pub found: Option<Usage>,
}

impl SseUsage {
    pub fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if b == b'\n' {
                // `"usage` also finds Gemini's `"usageMetadata"`.
                if let Some(data) = self.line.strip_prefix(b"data:")
                    && data.windows(6).any(|w| w == b"\"usage")
                    && let Some(u) = of_json(data.trim_ascii())
                {
                    self.found = Some(self.found.map_or(u, |f| f.merge(u)));
                }
                self.line.clear();
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_usage_from_json_and_from_split_sse_lines() {
        assert_eq!(
            of_json(br#"{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#),
            Some(Usage { prompt_tokens: 3, completion_tokens: 5, ..Usage::default() })
        );
        assert_eq!(of_json(br#"{"id":"x"}"#), None);
        let mut sse = SseUsage::default();
        sse.feed(b"data: {\"choices\":[]}\n\ndata: {\"choices\":[],\"us");
        assert_eq!(sse.found, None);
        sse.feed(b"age\":{\"prompt_tokens\":2,\"completion_tokens\":7}}\n\ndata: [DONE]\n\n");
        assert_eq!(sse.found, Some(Usage { prompt_tokens: 2, completion_tokens: 7, ..Usage::default() }));
    }

    #[test]
    fn reads_the_usage_of_every_format() {
        let mut anthropic = SseUsage::default();
        anthropic.feed(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":11,\"output_tokens\":1}}}\n\n");
        anthropic
            .feed(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":30}}\n\n");
        assert_eq!(anthropic.found, Some(Usage { prompt_tokens: 11, completion_tokens: 30, ..Usage::default() }));
        let gemini = br#"{"candidates":[],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":9}}"#;
        assert_eq!(of_json(gemini), Some(Usage { prompt_tokens: 4, completion_tokens: 9, ..Usage::default() }));
        let responses = br#"{"type":"response.completed","response":{"usage":{"input_tokens":3,"output_tokens":5}}}"#;
        assert_eq!(of_json(responses), Some(Usage { prompt_tokens: 3, completion_tokens: 5, ..Usage::default() }));
    }

    #[test]
    fn cached_and_reasoning_tokens_are_read_in_every_format() {
        let chat = br#"{"usage":{"prompt_tokens":100,"completion_tokens":50,"prompt_tokens_details":{"cached_tokens":60},"completion_tokens_details":{"reasoning_tokens":20}}}"#;
        assert_eq!(
            of_json(chat),
            Some(Usage { prompt_tokens: 100, completion_tokens: 50, cached_tokens: 60, reasoning_tokens: 20 })
        );
        let responses = br#"{"usage":{"input_tokens":10,"output_tokens":5,"input_tokens_details":{"cached_tokens":4},"output_tokens_details":{"reasoning_tokens":2}}}"#;
        assert_eq!(
            of_json(responses),
            Some(Usage { prompt_tokens: 10, completion_tokens: 5, cached_tokens: 4, reasoning_tokens: 2 })
        );
        let anthropic = br#"{"usage":{"input_tokens":7,"output_tokens":3,"cache_read_input_tokens":30}}"#;
        assert_eq!(
            of_json(anthropic),
            Some(Usage { prompt_tokens: 7, completion_tokens: 3, cached_tokens: 30, reasoning_tokens: 0 })
        );
        let gemini = br#"{"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":2,"cachedContentTokenCount":5,"thoughtsTokenCount":9}}"#;
        assert_eq!(
            of_json(gemini),
            Some(Usage { prompt_tokens: 8, completion_tokens: 2, cached_tokens: 5, reasoning_tokens: 9 })
        );
    }

    #[test]
    fn a_usage_key_inside_text_is_not_the_usage() {
        let quoted = br#"{"usage":{"prompt_tokens":1,"completion_tokens":2},"note":"the \"usage\": 99 field"}"#;
        assert_eq!(of_json(quoted), Some(Usage { prompt_tokens: 1, completion_tokens: 2, ..Usage::default() }));
        assert_eq!(of_json(br#"{"usage":null}"#), None);
        assert_eq!(of_json(br#"{"choices":[]}"#), None);
    }

    #[test]
    fn the_answering_model_is_read_from_the_head_of_an_answer_or_event() {
        let chat = br#"{"id":"x","object":"chat.completion","model":"gpt-4o-2024-08-06","choices":[]}"#;
        assert_eq!(super::response_model(chat).as_deref(), Some("gpt-4o-2024-08-06"));
        let sse = b"data: {\"id\":\"x\",\"model\" : \"m\\u0031\"}\n\n";
        assert_eq!(super::response_model(sse).as_deref(), Some("m1"));
        let gemini = br#"{"candidates":[],"modelVersion":"gemini-2.0-flash"}"#;
        assert_eq!(super::response_model(gemini).as_deref(), Some("gemini-2.0-flash"));
        assert_eq!(super::response_model(br#"{"model":5}"#), None);
        assert_eq!(super::response_model(b"nothing"), None);
    }
}
