//! Token usage, read on the side from upstream answers for metrics: the body the
//! client gets is never touched.

use serde::Deserialize;

#[derive(Deserialize)]
struct WithUsage {
    usage: Option<Usage>,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

/// `usage` of a JSON answer, if it has one.
pub fn of_json(bytes: &[u8]) -> Option<Usage> {
    serde_json::from_slice::<WithUsage>(bytes).ok()?.usage
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
                if let Some(data) = self.line.strip_prefix(b"data:")
                    && data.windows(7).any(|w| w == b"\"usage\"")
                    && let Some(u) = of_json(data.trim_ascii())
                {
                    self.found = Some(u);
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
}
