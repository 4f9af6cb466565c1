//! The OpenTelemetry GenAI client metrics, in their Prometheus spellings, beside
//! Berry's own: what a dashboard built for the semantic conventions expects to find.
//!
//! Berry is the client of its providers, so these describe upstream operations:
//! one duration per attempt, the tokens each answer reported, the time to the first
//! chunk of a stream. Names and bucket boundaries are the conventions' own
//! (`gen_ai.client.operation.duration` → `gen_ai_client_operation_duration_seconds`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::config::BackendType;
use crate::relay::Endpoint;

/// `gen_ai.operation.name` of the endpoints that have one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Chat,
    TextCompletion,
    Embeddings,
}

impl Operation {
    pub const COUNT: usize = 3;

    pub fn of(endpoint: Endpoint) -> Option<Operation> {
        match endpoint {
            Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::Responses => Some(Operation::Chat),
            Endpoint::Completions => Some(Operation::TextCompletion),
            Endpoint::Embeddings => Some(Operation::Embeddings),
            Endpoint::CountTokens | Endpoint::Models => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::TextCompletion => "text_completion",
            Operation::Embeddings => "embeddings",
        }
    }
}

/// The operation a span of `endpoint` is named after: its `gen_ai.operation.name`,
/// or "count_tokens" (Anthropic's token counting, which the conventions do not name).
pub fn operation_name(endpoint: Endpoint) -> &'static str {
    Operation::of(endpoint).map_or("count_tokens", Operation::as_str)
}

/// `gen_ai.provider.name` for a backend's wire format (the conventions' well-known
/// values; an OpenAI-compatible provider speaks as "openai").
pub fn provider_name(backend: BackendType) -> &'static str {
    match backend {
        BackendType::OpenAi => "openai",
        BackendType::Azure => "azure.ai.openai",
        BackendType::Anthropic => "anthropic",
        BackendType::Gemini => "gcp.gemini",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub gen_ai_operation_name: &'static str,
    pub gen_ai_provider_name: &'static str,
    /// The backend's model, as sent to the provider.
    pub gen_ai_request_model: String,
    pub server_address: String,
    /// The error class of a failed attempt; empty (absent) on success.
    pub error_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub gen_ai_operation_name: &'static str,
    pub gen_ai_provider_name: &'static str,
    pub gen_ai_request_model: String,
    pub server_address: String,
    /// "input" or "output".
    pub gen_ai_token_type: &'static str,
}

#[derive(Clone)]
pub struct GenAiMetrics {
    pub duration: Family<OperationLabels, Histogram, fn() -> Histogram>,
    pub first_chunk: Family<OperationLabels, Histogram, fn() -> Histogram>,
    pub tokens: Family<TokenLabels, Histogram, fn() -> Histogram>,
}

/// The conventions' advisory boundaries for durations, in seconds.
fn seconds() -> Histogram {
    Histogram::new([0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92])
}

/// … and for token counts.
fn tokens() -> Histogram {
    Histogram::new((0..14).map(|i| 4f64.powi(i)))
}

impl Default for GenAiMetrics {
    fn default() -> Self {
        GenAiMetrics {
            duration: Family::new_with_constructor(seconds as fn() -> Histogram),
            first_chunk: Family::new_with_constructor(seconds as fn() -> Histogram),
            tokens: Family::new_with_constructor(tokens as fn() -> Histogram),
        }
    }
}

impl GenAiMetrics {
    /// Registered at the registry's root: these names carry no `berry_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "gen_ai_client_operation_duration_seconds",
            "GenAI operation duration (one upstream attempt; streams to their last chunk)",
            self.duration.clone(),
        );
        registry.register(
            "gen_ai_client_operation_time_to_first_chunk_seconds",
            "Time from an upstream streaming request to its first chunk",
            self.first_chunk.clone(),
        );
        registry.register(
            "gen_ai_client_token_usage",
            "Tokens used per GenAI operation, by token type (input, output)",
            self.tokens.clone(),
        );
    }
}
