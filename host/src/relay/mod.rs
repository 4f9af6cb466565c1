//! Talking to providers: the pooled client, the body rewrite, the retry loop down
//! the strategy's ranked list, and stream pass-through.

pub mod body;
mod client;
mod forward;
pub mod stream;
pub mod usage;

pub use body::RequestBody;
pub use client::UpstreamClient;
pub(crate) use forward::classify_transport;
pub use forward::{ForwardRequest, forward};

/// The OpenAI endpoints Berry routes, each relayed to the same path under the
/// provider's base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Models,
}

impl Endpoint {
    pub const ALL: [Endpoint; 4] =
        [Endpoint::ChatCompletions, Endpoint::Completions, Endpoint::Embeddings, Endpoint::Models];

    pub fn upstream_path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Models => "/models",
        }
    }
}
