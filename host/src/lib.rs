//! Berry: an OpenAI-compatible LLM gateway whose backend-selection strategies and
//! auth policies are WebAssembly components.
//!
//! A request flows through named phases (see `docs/architecture.md`):
//! authenticate → parse → select → upstream (retrying down the ranked list) →
//! stream back → record. The pieces:
//!
//! - [`config`]: strict two-stage TOML config.
//! - [`gateway`]: the live state — one atomically swapped [`gateway::Snapshot`] of
//!   config, routes and plugins, plus the health of every backend.
//! - [`plugin`]: the wasm runtime (engine, sandbox, warm pools, stock plugins).
//! - [`health`]: per-backend passive stats and circuit breaker.
//! - [`relay`]: upstream client, body rewrite, retries, stream pass-through.
//! - [`server`]: the HTTP front door and its handlers.
//! - [`adapter`]: the wire formats of providers (OpenAI, Azure, Anthropic, Gemini).
//! - [`mock`]: the embedded mock provider (OpenAI, Anthropic and Gemini formats).
//! - [`memory`]: free memory handed back to the system after bursts.
//! - [`cluster`]: replicas sharing limits, health, scores and plugins through Redis.
//! - [`usage`]: the usage ledger (SQLite), prices, budgets and token limits.
//! - [`redact`]: configured secrets kept out of relayed provider failures and logs.

pub mod adapter;
pub mod by_user;
pub mod cluster;
pub mod config;
pub mod error;
pub mod fnv;
pub mod gateway;
pub mod health;
pub mod memory;
pub mod metrics;
pub mod mock;
pub mod plugin;
pub mod ratelimit;
pub mod redact;
pub mod relay;
pub mod sdk;
pub mod server;
pub mod telemetry;
pub mod usage;
