//! Berry's integration and end-to-end tests: one test binary, real loopback sockets,
//! mock providers on ephemeral ports, plugins built from source.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]

mod cli;
mod client_text;
mod cluster;
mod connections;
mod e2e;
mod errors;
mod hardening;
mod harness;
mod health;
mod memory;
mod messages;
mod observability;
mod operations;
mod platform;
mod plugin_authors;
mod providers;
mod proxy;
mod redaction;
mod relay;
mod reload;
mod routing;
mod sandbox;
mod scale;
mod smart_ai;
mod tracing;
mod uploads;
mod usage;
