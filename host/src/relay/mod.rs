//! Talking to providers: the pooled client, the body rewrite, the retry loop down
//! the strategy's ranked list, and stream pass-through.

mod attempt;
pub mod body;
mod client;
mod forward;
pub mod plan;
mod proxy;
pub mod stream;
pub mod usage;

pub(crate) use attempt::classify_transport;
pub use body::RequestBody;
pub use client::{Route as ClientRoute, UpstreamClient};
pub use forward::{ForwardRequest, forward};

/// The APIs Berry routes. The OpenAI ones are relayed to the same path under an
/// OpenAI-compatible provider's base URL; adapters map them for other providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    /// OpenAI's Responses API.
    Responses,
    /// Anthropic's Messages API (`/v1/messages`).
    Messages,
    /// Anthropic's token counting (`/v1/messages/count_tokens`).
    CountTokens,
    Models,
}

impl Endpoint {
    pub const ALL: [Endpoint; 7] = [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Responses,
        Endpoint::Messages,
        Endpoint::CountTokens,
        Endpoint::Models,
    ];

    pub fn upstream_path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Responses => "/responses",
            Endpoint::Messages => "/messages",
            Endpoint::CountTokens => "/messages/count_tokens",
            Endpoint::Models => "/models",
        }
    }

    /// The API its clients speak, which decides the shape of errors they get.
    pub fn dialect(self) -> crate::adapter::Dialect {
        match self {
            Endpoint::Messages | Endpoint::CountTokens => crate::adapter::Dialect::Anthropic,
            _ => crate::adapter::Dialect::OpenAi,
        }
    }
}
