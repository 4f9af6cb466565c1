//! Token usage, read on the side from the provider's answers for metrics (before
//! any translation): the body the client gets is never touched.

use serde::Deserialize;

/// Where usage sits in the answers of every format Berry relays: OpenAI's `usage`
/// (chat, and `input_tokens`/`output_tokens` in the Responses API), Anthropic's
/// `message.usage` (its stream's first event) and `usage`, the Responses API stream's
/// `response.usage`, Gemini's `usageMetadata`.
#[derive(Deserialize)]
struct Found {
    usage: Option<Counts>,
    message: Option<Nested>,
    response: Option<Nested>,
    #[serde(rename = "usageMetadata")]
    usage_metadata: Option<GeminiCounts>,
}

#[derive(Deserialize)]
struct Nested {
    usage: Option<Counts>,
}

#[derive(Deserialize)]
struct Counts {
    #[serde(alias = "input_tokens")]
    prompt_tokens: Option<u64>,
    #[serde(alias = "output_tokens")]
    completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiCounts {
    prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Usage {
    /// Counts reported in pieces (Anthropic: input first, output at the end; Gemini:
    /// growing counts per event) keep the largest of each.
    fn merge(self, other: Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.max(other.prompt_tokens),
            completion_tokens: self.completion_tokens.max(other.completion_tokens),
        }
    }
}

fn from_counts(c: &Counts) -> Option<Usage> {
    (c.prompt_tokens.is_some() || c.completion_tokens.is_some()).then(|| Usage {
        prompt_tokens: c.prompt_tokens.unwrap_or(0),
        completion_tokens: c.completion_tokens.unwrap_or(0),
    })
}

/// The usage a JSON answer (or one streamed event) reports, if any.
pub fn of_json(bytes: &[u8]) -> Option<Usage> {
    let found: Found = serde_json::from_slice(bytes).ok()?;
    let nested = |n: &Option<Nested>| n.as_ref().and_then(|n| n.usage.as_ref()).and_then(from_counts);
    let gemini = found.usage_metadata.map(|g| Usage {
        prompt_tokens: g.prompt_token_count.unwrap_or(0),
        completion_tokens: g.candidates_token_count.unwrap_or(0),
    });
    found.usage.as_ref().and_then(from_counts).or_else(|| nested(&found.message)).or_else(|| nested(&found.response)).or(gemini)
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
            Some(Usage { prompt_tokens: 3, completion_tokens: 5 })
        );
        assert_eq!(of_json(br#"{"id":"x"}"#), None);
        let mut sse = SseUsage::default();
        sse.feed(b"data: {\"choices\":[]}\n\ndata: {\"choices\":[],\"us");
        assert_eq!(sse.found, None);
        sse.feed(b"age\":{\"prompt_tokens\":2,\"completion_tokens\":7}}\n\ndata: [DONE]\n\n");
        assert_eq!(sse.found, Some(Usage { prompt_tokens: 2, completion_tokens: 7 }));
    }

    #[test]
    fn reads_the_usage_of_every_format() {
        let mut anthropic = SseUsage::default();
        anthropic.feed(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":11,\"output_tokens\":1}}}\n\n");
        anthropic.feed(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":30}}\n\n");
        assert_eq!(anthropic.found, Some(Usage { prompt_tokens: 11, completion_tokens: 30 }));
        let gemini = br#"{"candidates":[],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":9}}"#;
        assert_eq!(of_json(gemini), Some(Usage { prompt_tokens: 4, completion_tokens: 9 }));
        let responses = br#"{"type":"response.completed","response":{"usage":{"input_tokens":3,"output_tokens":5}}}"#;
        assert_eq!(of_json(responses), Some(Usage { prompt_tokens: 3, completion_tokens: 5 }));
    }
}
