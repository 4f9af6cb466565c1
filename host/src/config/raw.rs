//! Stage one of config loading: the TOML file as written, parsed strictly.
//! Unknown keys are errors; defaults live in `validate.rs`, not here, so this file
//! reads as the schema.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub settings: RawSettings,
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    pub models: BTreeMap<String, RawModel>,
    #[serde(default)]
    pub users: BTreeMap<String, RawUser>,
    #[serde(default)]
    pub plugins: BTreeMap<String, RawPlugin>,
    #[serde(default)]
    pub auth: RawAuth,
    /// Replicas sharing state through Redis; absent: one node.
    pub cluster: Option<RawCluster>,
    /// Trace export (OpenTelemetry, OTLP/HTTP); absent: the `OTEL_*` environment.
    pub telemetry: Option<RawTelemetry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// The collector's OTLP/HTTP base URL (`/v1/traces` is appended), or the full
    /// traces URL. Empty: no export.
    pub otlp_endpoint: Option<String>,
    /// Share of traces sampled (0 … 1), for requests whose caller did not decide.
    pub sampling_ratio: Option<f64>,
    pub service_name: Option<String>,
    /// Finished spans waiting for export, at most (beyond: dropped and counted).
    pub queue_size: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// `redis://[user:password@]host:port[/db]` or `rediss://` (TLS).
    pub redis_url: String,
    pub key_prefix: Option<String>,
    /// Cap on one Redis operation, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// "local" (default), "allow" or "deny".
    pub on_unavailable: Option<String>,
    /// How often shared health, scores, replicas and plugin versions are synced.
    pub sync_interval_ms: Option<u64>,
    /// This replica's name in the fleet (default: host name and process id).
    pub replica_name: Option<String>,
    /// Rate-limit permits a replica leases from Redis at a time, at most (1: every
    /// rate-limited request asks Redis).
    pub lease_max: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    pub listen: Option<String>,
    pub health_check_interval_seconds: Option<f64>,
    pub recovery_check_interval_seconds: Option<f64>,
    pub request_timeout_seconds: Option<f64>,
    pub attempt_timeout_seconds: Option<f64>,
    pub connection_timeout_seconds: Option<f64>,
    pub first_byte_timeout_seconds: Option<f64>,
    pub retry_backoff_ms: Option<u64>,
    pub retry_backoff_max_ms: Option<u64>,
    pub drain_timeout_seconds: Option<f64>,
    pub max_retries: Option<u32>,
    pub circuit_breaker_threshold: Option<u32>,
    pub circuit_breaker_window_seconds: Option<f64>,
    pub circuit_breaker_cooldown_seconds: Option<f64>,
    // berry-api's names for the same settings (seed configs load unchanged).
    pub circuit_breaker_failure_threshold: Option<u32>,
    pub circuit_breaker_timeout_seconds: Option<f64>,
    /// berry-api: retries "inside" a request; Berry's max_retries already is that.
    pub max_internal_retries: Option<u32>,
    pub recovery_successes_per_stage: Option<u32>,
    pub health_check_timeout_seconds: Option<f64>,
    pub max_request_body_bytes: Option<u64>,
    pub max_buffered_body_bytes: Option<u64>,
    pub max_buffered_body_bytes_per_user: Option<u64>,
    pub max_connections: Option<u32>,
    pub max_connections_per_ip: Option<u32>,
    pub client_header_timeout_seconds: Option<f64>,
    pub client_write_timeout_seconds: Option<f64>,
    pub admin_token: Option<String>,
    pub protect_metrics: Option<bool>,
    pub protect_status: Option<bool>,
    pub protect_health: Option<bool>,
    /// The usage ledger (SQLite) file; "" disables it.
    pub usage_db: Option<String>,
    pub usage_retention_days: Option<u32>,
    #[serde(default)]
    pub smart_ai: RawSmartAi,
}

#[derive(Debug, Deserialize, Default, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmartAi {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_confidence: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_confidence: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_time_decay: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decay_half_life_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exploration_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub non_premium_stability_bonus: Option<f64>,
    /// berry-api's light connectivity check; Berry's health probes do that job.
    #[serde(skip_serializing)]
    pub lightweight_check_interval_seconds: Option<f64>,
    #[serde(default)]
    pub confidence_adjustments: RawConfidenceAdjustments,
}

#[derive(Debug, Deserialize, Default, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfidenceAdjustments {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_boost: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_error_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_error_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_error_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_error_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_penalty: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub name: Option<String>,
    pub base_url: String,
    #[serde(default)]
    pub api_key: String,
    #[serde(default)]
    pub models: Vec<String>,
    pub enabled: Option<bool>,
    pub timeout_seconds: Option<f64>,
    pub max_retries: Option<u32>,
    pub probe: Option<String>,
    /// Wire format: "openai" (default), "azure", "anthropic" (or berry-api's
    /// "claude"), "gemini".
    pub backend_type: Option<String>,
    /// Azure: the `api-version` of the deployment URLs; without it, Azure's v1 API.
    pub api_version: Option<String>,
    /// Forward the caller's `OpenAI-Organization` and `OpenAI-Project` headers.
    pub forward_organization_headers: Option<bool>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// An HTTP proxy for this provider (`http://[user:password@]host:port`); "": none,
    /// whatever the environment says; absent: `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`.
    pub proxy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub name: Option<String>,
    pub strategy: Option<String>,
    pub enabled: Option<bool>,
    #[serde(default)]
    pub backends: Vec<RawBackend>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub provider: String,
    pub model: String,
    pub weight: Option<f64>,
    pub priority: Option<u32>,
    pub enabled: Option<bool>,
    pub billing_mode: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Prices (any currency; the ledger sums what it is given), per million tokens.
    pub input_cost_per_mtok: Option<f64>,
    pub output_cost_per_mtok: Option<f64>,
    /// Default: the input price.
    pub cached_input_cost_per_mtok: Option<f64>,
    /// `per_request` backends: the price of one request.
    pub cost_per_request: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub name: Option<String>,
    pub token: Option<String>,
    pub token_sha256: Option<String>,
    #[serde(default)]
    pub allowed_models: Vec<String>,
    pub enabled: Option<bool>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub rate_limit: RawRateLimit,
    #[serde(default)]
    pub budget: RawBudget,
}

#[derive(Debug, Deserialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub requests_per_minute: Option<u32>,
    pub requests_per_hour: Option<u32>,
    pub requests_per_day: Option<u32>,
    pub tokens_per_minute: Option<u64>,
}

/// Spend limits (UTC days and months), each optional.
#[derive(Debug, Deserialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    pub max_cost_per_day: Option<f64>,
    pub max_cost_per_month: Option<f64>,
    pub max_tokens_per_day: Option<u64>,
    pub max_tokens_per_month: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlugin {
    /// The component file; absent for a stock plugin (an entry that tunes its limits).
    pub path: Option<String>,
    pub kind: Option<String>,
    /// Lowercase hex SHA-256 the plugin's bytes must have (file or upload).
    pub sha256: Option<String>,
    pub config: Option<toml::Value>,
    pub fuel: Option<u64>,
    pub memory_mb: Option<u32>,
    pub timeout_ms: Option<u64>,
    pub quarantine_after: Option<u32>,
    pub quarantine_seconds: Option<f64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub policy: Option<String>,
    pub config: Option<toml::Value>,
    /// How long an admitted caller is remembered (0: the policy judges every request).
    pub cache_seconds: Option<f64>,
}
