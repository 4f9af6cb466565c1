//! The mock's knobs: from a `mock://name?knob=value&…` URL, the CLI, or a runtime
//! `POST /mock/control` with a JSON object of the knobs to change.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Answer normally.
    None,
    /// Answer with this HTTP status and an OpenAI-shaped error body.
    Status(u16),
    /// Accept the request and never answer.
    Hang,
    /// Close the connection without answering.
    Close,
    /// Streams break off after half their chunks (non-streams answer normally).
    MidStream,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MockSettings {
    /// A label, returned as `system_fingerprint` so callers can tell mocks apart.
    pub name: String,
    /// Delay before the response headers.
    pub latency_ms: u64,
    /// Content chunks per streamed response.
    pub chunks: u32,
    /// Delay between streamed chunks.
    pub chunk_delay_ms: u64,
    pub fail: FailMode,
    /// Share of requests `fail` applies to, drawn at random per request.
    pub fail_rate: f64,
    /// With a failure status: send `retry-after-ms` (and `retry-after`, in whole
    /// seconds) with it; 0 sends neither.
    pub retry_after_ms: u64,
    /// Prefix every SSE event with `id:` and `event:` lines (pass-through tests).
    pub sse_ids: bool,
    /// Precede every SSE event with a `: sent_us=<µs since the epoch>` comment,
    /// stamped as the frame is sent: a client on the same machine reads each chunk's
    /// latency off it (the load benchmark). Comments are passed through untouched.
    pub stamp: bool,
    /// Model ids served by `/models`; empty means it lists the model "mock".
    pub models: Vec<String>,
    /// Cut every streamed event into pieces of this many bytes (0: whole events), so
    /// clients meet events split at arbitrary places.
    pub split_bytes: u32,
}

impl Default for MockSettings {
    fn default() -> Self {
        MockSettings {
            name: "mock".into(),
            latency_ms: 0,
            chunks: 5,
            chunk_delay_ms: 0,
            fail: FailMode::None,
            fail_rate: 1.0,
            retry_after_ms: 0,
            sse_ids: false,
            stamp: false,
            models: Vec::new(),
            split_bytes: 0,
        }
    }
}

/// A partial update of the knobs (`POST /mock/control`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockUpdate {
    pub latency_ms: Option<u64>,
    pub chunks: Option<u32>,
    pub chunk_delay_ms: Option<u64>,
    pub fail: Option<FailMode>,
    pub fail_rate: Option<f64>,
    pub retry_after_ms: Option<u64>,
    /// Fail exactly the next N requests (with `fail`), then none; overrides `fail_rate`.
    pub fail_next: Option<u32>,
    pub sse_ids: Option<bool>,
    pub stamp: Option<bool>,
    pub split_bytes: Option<u32>,
}

impl MockSettings {
    pub fn apply(&mut self, u: MockUpdate) {
        if let Some(v) = u.latency_ms {
            self.latency_ms = v;
        }
        if let Some(v) = u.chunks {
            self.chunks = v.max(1);
        }
        if let Some(v) = u.chunk_delay_ms {
            self.chunk_delay_ms = v;
        }
        if let Some(v) = u.fail {
            self.fail = v;
        }
        if let Some(v) = u.fail_rate {
            self.fail_rate = v.clamp(0.0, 1.0);
        }
        if let Some(v) = u.retry_after_ms {
            self.retry_after_ms = v;
        }
        if let Some(v) = u.sse_ids {
            self.sse_ids = v;
        }
        if let Some(v) = u.stamp {
            self.stamp = v;
        }
        if let Some(v) = u.split_bytes {
            self.split_bytes = v;
        }
    }

    /// Parse `mock://name?latency_ms=5&chunks=8&chunk_delay_ms=10&fail=500&fail_rate=0.3&sse_ids=true`.
    pub fn from_mock_url(url: &str) -> Result<MockSettings, String> {
        let rest = url.strip_prefix("mock://").ok_or_else(|| format!("{url}: not a mock:// URL"))?;
        let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
        let name = name.trim_end_matches('/').trim_end_matches("/v1");
        let mut s =
            MockSettings { name: if name.is_empty() { "mock".into() } else { name.into() }, ..Default::default() };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = || format!("{url}: bad value {value:?} for {key}");
            match key {
                "latency_ms" => s.latency_ms = value.parse().map_err(|_| bad())?,
                "chunks" => s.chunks = value.parse::<u32>().map_err(|_| bad())?.max(1),
                "chunk_delay_ms" => s.chunk_delay_ms = value.parse().map_err(|_| bad())?,
                "fail_rate" => s.fail_rate = value.parse::<f64>().map_err(|_| bad())?.clamp(0.0, 1.0),
                "retry_after_ms" => s.retry_after_ms = value.parse().map_err(|_| bad())?,
                "sse_ids" => s.sse_ids = value.parse().map_err(|_| bad())?,
                "stamp" => s.stamp = value.parse().map_err(|_| bad())?,
                "split_bytes" => s.split_bytes = value.parse().map_err(|_| bad())?,
                "models" => s.models = value.split(',').map(str::to_string).collect(),
                "fail" => {
                    s.fail = match value {
                        "none" => FailMode::None,
                        "hang" => FailMode::Hang,
                        "close" => FailMode::Close,
                        "mid_stream" => FailMode::MidStream,
                        status => FailMode::Status(status.parse().map_err(|_| bad())?),
                    }
                }
                _ => return Err(format!("{url}: unknown mock knob {key:?}")),
            }
        }
        Ok(s)
    }
}
