//! Logging: `tracing` with `RUST_LOG` filtering (default `info`), human-readable by
//! default, one JSON object per line with `BERRY_LOG_FORMAT=json`.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("BERRY_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    // `try_init` fails only if a subscriber is already set (tests): keep that one.
    let _ = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
}
