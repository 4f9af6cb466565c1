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

/// The admin token of the demo config (`config/berry.toml`).
pub const DEMO_ADMIN_TOKEN: &str = "berry-demo-admin";

/// Whether a listen address only accepts connections from this machine.
fn is_loopback(listen: &str) -> bool {
    match listen.parse::<std::net::SocketAddr>() {
        Ok(addr) => addr.ip().is_loopback(),
        Err(_) => listen.rsplit_once(':').is_some_and(|(host, _)| host == "localhost"),
    }
}

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
    /// `[cluster]`: shared state through Redis. Read at start.
    pub cluster: Option<ClusterSettings>,
    /// `[telemetry]` with the `OTEL_*` environment: where traces go. Read at start.
    pub telemetry: TelemetrySettings,
    /// Where the file was read from; relative plugin paths resolve against its folder.
    pub source: Option<PathBuf>,
    /// Things that load but deserve the operator's attention (keys from berry-api
    /// that have no effect here, references to models that do not exist), each with
    /// its key path. Logged at every load; printed by `check-config`.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: Option<String>,
    pub health_check_interval: Duration,
    pub recovery_check_interval: Duration,
    /// The whole budget of a request, shared by its attempts and the waits between
    /// them: to the last byte of a non-streaming answer, to the first byte of a stream.
    pub request_timeout: Duration,
    /// Cap on one non-streaming attempt (`providers.X.timeout_seconds` overrides it);
    /// `None`: an attempt may use whatever is left of `request_timeout`.
    pub attempt_timeout: Option<Duration>,
    pub connection_timeout: Duration,
    /// Streaming: cap on one attempt's wait for its first byte (and, once flowing,
    /// on a silence between two upstream chunks).
    pub first_byte_timeout: Duration,
    pub drain_timeout: Duration,
    pub max_retries: u32,
    /// Base of the exponential backoff (full jitter) before each retry; zero: none.
    pub retry_backoff: Duration,
    /// Ceiling of one backoff wait.
    pub retry_backoff_max: Duration,
    pub circuit_breaker_threshold: u32,
    pub circuit_breaker_window: Duration,
    pub circuit_breaker_cooldown: Duration,
    /// Successes that move a recovering backend to its next stage (10% → 30% → 50% → 100%).
    pub recovery_successes_per_stage: u32,
    /// Timeout of one active health probe.
    pub health_check_timeout: Duration,
    pub max_request_body_bytes: usize,
    /// Bound on the request bodies buffered at once, all requests together; a
    /// request that would go over it is answered 503.
    pub max_buffered_body_bytes: usize,
    /// The share of that bound one user's requests may hold at once; a request that
    /// would go over it is answered 429.
    pub max_buffered_body_bytes_per_user: usize,
    /// Client connections open at once. At the cap, the longest-idle connection is
    /// closed to admit a new one; with none idle, the new one is closed. Read at start.
    pub max_connections: u32,
    /// Client connections one IP address may hold open at once (0: no limit; behind
    /// a load balancer every client shares its address). Read at start.
    pub max_connections_per_ip: u32,
    /// Time a client connection has to send its first request headers (and, idle
    /// between requests, the next ones; HTTP/2: to answer a keep-alive ping).
    pub client_header_timeout: Duration,
    /// A response write the client does not take for this long closes the connection
    /// (a client that stops reading cannot hold an upstream stream).
    pub client_write_timeout: Duration,
    pub admin_token: Option<Secret>,
    /// `/metrics` needs the admin token (default: when one is set).
    pub protect_metrics: bool,
    /// `/status` and its data need the admin token (default: when one is set).
    pub protect_status: bool,
    /// `/health` shows backend details only to the admin token (default: when one
    /// is set); others get the status alone.
    pub protect_health: bool,
    /// The usage ledger's SQLite file (`None`: no ledger). Read at start.
    pub usage_db: Option<PathBuf>,
    pub usage_retention: Duration,
    /// `[settings.smart_ai]` as the JSON object handed to the smart_ai plugin.
    pub smart_ai_json: String,
}

/// `[telemetry]`, validated, with the standard `OTEL_*` variables filling in what
/// the file does not say (the file wins).
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    /// The OTLP/HTTP traces URL; `None`: no export (traceparent is still passed on).
    pub otlp_traces_url: Option<String>,
    pub sampling_ratio: f64,
    pub service_name: String,
    pub queue_size: usize,
}

/// `[cluster]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSettings {
    /// May carry a password: a secret.
    pub redis_url: Secret,
    /// Every key Berry writes starts with it (several fleets can share one Redis).
    pub key_prefix: String,
    pub timeout: Duration,
    pub on_unavailable: OnUnavailable,
    pub sync_interval: Duration,
    pub replica_name: String,
    /// Rate-limit permits leased from Redis at a time, at most (`cluster/limits.rs`).
    pub lease_max: u32,
}

/// What rate limits do while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    /// Each replica limits with its own counters, at its share of the limit (the limit
    /// divided by the replicas it last saw).
    Local,
    /// No rate limit until Redis is back.
    Allow,
    /// Rate-limited users are refused (503) until Redis is back.
    Deny,
}

impl OnUnavailable {
    pub fn as_str(self) -> &'static str {
        match self {
            OnUnavailable::Local => "local",
            OnUnavailable::Allow => "allow",
            OnUnavailable::Deny => "deny",
        }
    }
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
    /// The provider's wire format.
    pub backend: BackendType,
    /// Azure: `api-version` for deployment URLs; `None`: Azure's v1 API.
    pub api_version: Option<String>,
    /// Forward the caller's `OpenAI-Organization` / `OpenAI-Project` headers.
    pub forward_organization_headers: bool,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// How its connections leave the machine.
    pub proxy: Proxy,
}

/// A provider's outbound proxy (`providers.X.proxy`).
#[derive(Debug, Clone, PartialEq)]
pub enum Proxy {
    /// `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY`, minus `NO_PROXY` (and their
    /// lowercase forms), as curl reads them: the default.
    Environment,
    /// No proxy, whatever the environment says (`proxy = ""`; embedded mocks).
    Direct,
    /// This HTTP proxy (connections tunnel through it with `CONNECT`). May carry
    /// credentials: a secret.
    Via(Secret),
}

/// A provider's wire format (`backend_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendType {
    /// OpenAI's API and everything compatible with it: passed through unchanged.
    OpenAi,
    /// Azure OpenAI: OpenAI's bodies, Azure's URLs and `api-key` header.
    Azure,
    /// Anthropic's Messages API.
    Anthropic,
    /// Google's Gemini API (generateContent).
    Gemini,
}

impl BackendType {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendType::OpenAi => "openai",
            BackendType::Azure => "azure",
            BackendType::Anthropic => "anthropic",
            BackendType::Gemini => "gemini",
        }
    }
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
    pub prices: Prices,
}

/// What a backend charges; the ledger's cost of a request. All zero: unpriced.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Prices {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    pub cached_input_per_mtok: f64,
    pub per_request: f64,
}

/// `[users.X.budget]` and `rate_limit.tokens_per_minute`: token and spend limits.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Budget {
    pub max_cost_per_day: Option<f64>,
    pub max_cost_per_month: Option<f64>,
    pub max_tokens_per_day: Option<u64>,
    pub max_tokens_per_month: Option<u64>,
    pub tokens_per_minute: Option<u64>,
}

impl Budget {
    pub fn is_set(&self) -> bool {
        *self != Budget::default()
    }
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
    pub budget: Budget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    Strategy,
    Auth,
}

#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub name: String,
    /// The component file; `None` for a stock plugin (the entry sets its limits).
    pub path: Option<PathBuf>,
    pub kind: PluginKind,
    /// The SHA-256 (lowercase hex) every version loaded under this name must have.
    pub sha256: Option<String>,
    /// The plugin's own configuration as a JSON object.
    pub config_json: String,
    pub limits: crate::plugin::Limits,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub policy: String,
    pub config_json: String,
    /// How long the principal of an admitted caller is reused without asking the
    /// policy again (zero: never).
    pub cache_ttl: Duration,
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
        for path in self.plugins.values_mut().filter_map(|spec| spec.path.as_mut()) {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
    }

    /// Why this config must not be served on `listen`, if it must not: the demo
    /// admin token is published in the README, so it may only guard a gateway that
    /// listens on loopback.
    pub fn exposure_error(&self, listen: &str) -> Option<String> {
        let demo = self.settings.admin_token.as_ref().is_some_and(|t| t.expose() == DEMO_ADMIN_TOKEN);
        (demo && !is_loopback(listen)).then(|| {
            format!(
                "settings.admin_token: the demo admin token is public (it is in the README), and {listen} is reachable \
                 from other machines: set an admin_token of your own (or remove it), or listen on 127.0.0.1"
            )
        })
    }

    /// One log line per warning (at start and on every reload).
    pub fn log_warnings(&self) {
        for warning in &self.warnings {
            tracing::warn!("config: {warning}");
        }
    }

    pub fn model(&self, name: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.name == name)
    }
}
