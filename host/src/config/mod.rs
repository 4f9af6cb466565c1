//! Configuration: TOML parsed in two stages, raw (`raw.rs`, strict serde) then
//! validated (`validate.rs`), producing the typed [`Config`] below. Every error names
//! the TOML key path it is about.

mod raw;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use validate::parse;

/// A value that must never be printed: provider keys, user tokens, the admin token.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub settings: Settings,
    pub providers: BTreeMap<String, Provider>,
    /// In table-key order.
    pub models: Vec<Model>,
    /// In table-key order.
    pub users: Vec<User>,
    pub plugins: BTreeMap<String, PluginSpec>,
    pub auth: AuthSettings,
    /// Where the file was read from; relative plugin paths resolve against its folder.
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: Option<String>,
    pub health_check_interval: Duration,
    pub recovery_check_interval: Duration,
    pub request_timeout: Duration,
    pub connection_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub drain_timeout: Duration,
    pub max_retries: u32,
    pub circuit_breaker_threshold: u32,
    pub circuit_breaker_window: Duration,
    pub circuit_breaker_cooldown: Duration,
    /// Successes that move a recovering backend to its next stage (10% → 30% → 50% → 100%).
    pub recovery_successes_per_stage: u32,
    /// Timeout of one active health probe.
    pub health_check_timeout: Duration,
    pub max_request_body_bytes: usize,
    pub admin_token: Option<Secret>,
    /// `/metrics` needs the admin token.
    pub protect_metrics: bool,
    /// `/status` and its data need the admin token.
    pub protect_status: bool,
    /// `[settings.smart_ai]` as the JSON object handed to the smart_ai plugin.
    pub smart_ai_json: String,
}

#[derive(Debug, Clone)]
pub struct Provider {
    pub key: String,
    pub name: String,
    /// Without a trailing slash; includes the API version path (e.g. `/v1`).
    pub base_url: String,
    pub api_key: Secret,
    pub models: Vec<String>,
    pub enabled: bool,
    /// Overrides `settings.request_timeout` for this provider.
    pub timeout: Option<Duration>,
    /// Caps the attempts one request may make on this provider (1 + max_retries).
    pub max_retries: Option<u32>,
    /// How `per_token` backends of this provider are probed.
    pub probe: Probe,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// The active health probe of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `GET {base_url}/models`: free at every provider; proves the key and the endpoint.
    Models,
    /// A one-token chat completion per backend: proves the model itself answers.
    Chat,
    /// Never probed; recovers through real traffic only.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingMode {
    PerToken,
    PerRequest,
}

#[derive(Debug, Clone)]
pub struct Backend {
    pub provider: String,
    pub model: String,
    pub weight: f64,
    pub priority: u32,
    pub enabled: bool,
    pub billing_mode: BillingMode,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub key: String,
    /// The model id clients send.
    pub name: String,
    pub strategy: String,
    pub enabled: bool,
    pub backends: Vec<Backend>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimit {
    pub per_minute: Option<u32>,
    pub per_hour: Option<u32>,
    pub per_day: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct User {
    pub key: String,
    pub name: String,
    pub token: Option<Secret>,
    /// Lowercase hex.
    pub token_sha256: Option<String>,
    pub allowed_models: Vec<String>,
    pub enabled: bool,
    pub tags: Vec<String>,
    pub rate_limit: RateLimit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    Strategy,
    Auth,
}

#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub name: String,
    pub path: PathBuf,
    pub kind: PluginKind,
    /// The plugin's own configuration as a JSON object.
    pub config_json: String,
    pub limits: crate::plugin::Limits,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub policy: String,
    pub config_json: String,
}

/// Every problem found in a configuration, each prefixed with its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub errors: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(e)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError { errors: vec![format!("{}: cannot read: {e}", path.display())] })?;
        let mut config = parse(&text, &|name| std::env::var(name).ok())?;
        config.source = Some(path.to_path_buf());
        config.resolve_plugin_paths();
        Ok(config)
    }

    fn resolve_plugin_paths(&mut self) {
        let Some(dir) = self.source.as_deref().and_then(Path::parent) else { return };
        for spec in self.plugins.values_mut() {
            if spec.path.is_relative() {
                spec.path = dir.join(&spec.path);
            }
        }
    }

    pub fn model(&self, name: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.name == name)
    }
}
