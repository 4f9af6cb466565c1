//! Stage two of config loading: raw TOML values → the typed [`Config`], with every
//! default applied here and every problem reported with its key path. All problems
//! are collected, so an operator fixes a config in one pass.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawCluster, RawConfig, RawPlugin, RawProvider, RawSettings, RawTelemetry, RawUser};
use super::{
    AuthSettings, Backend, BackendType, BillingMode, Budget, ClusterSettings, Config, ConfigError, Model,
    OnUnavailable, PluginKind, PluginSpec, Prices, Probe, Provider, Proxy, RateLimit, Secret, Settings,
    TelemetrySettings, User,
};
use crate::plugin::{Limits, STOCK_AUTH, STOCK_STRATEGIES};

/// Parse and validate config text. `env` resolves `${NAME}` references.
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| one(format!("config: {}", e.message())))?;
    let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().message().to_string();
        one(if path == "." { format!("config: {message}") } else { format!("{path}: {message}") })
    })?;
    let mut v = Validator { errors: Vec::new(), warnings: Vec::new(), env };
    let mut config = v.config(raw);
    config.warnings = v.warnings;
    if v.errors.is_empty() { Ok(config) } else { Err(ConfigError { errors: v.errors }) }
}

fn kind_name(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::Strategy => "strategy",
        PluginKind::Auth => "auth",
    }
}

fn one(message: String) -> ConfigError {
    ConfigError { errors: vec![message] }
}

struct Validator<'a> {
    errors: Vec<String>,
    warnings: Vec<String>,
    env: &'a dyn Fn(&str) -> Option<String>,
}

/// Strategy names from berry-api, and the stock strategy that does what they did
/// (weighted choice among healthy backends, failing over to the rest, recovering
/// backends at a reduced share).
const SEED_STRATEGIES: &[(&str, &str)] =
    &[("weighted_failover", "weighted_random"), ("smart_weighted_failover", "weighted_random")];

impl Validator<'_> {
    fn error(&mut self, path: &str, message: impl AsRef<str>) {
        self.errors.push(format!("{path}: {}", message.as_ref()));
    }

    fn warn(&mut self, path: &str, message: impl AsRef<str>) {
        self.warnings.push(format!("{path}: {}", message.as_ref()));
    }

    /// A setting that berry-api spelt differently: either name works, not both.
    fn alias<T: PartialEq + Copy + std::fmt::Display>(
        &mut self,
        path: &str,
        (name, value): (&str, Option<T>),
        (seed_name, seed_value): (&str, Option<T>),
    ) -> Option<T> {
        match (value, seed_value) {
            (Some(a), Some(b)) if a != b => {
                self.error(&format!("{path}.{seed_name}"), format!("is berry-api's name for {name}, which says {a}"));
                Some(a)
            }
            (a, b) => a.or(b),
        }
    }

    /// Expand `${NAME}` references. A missing variable is an error only where the
    /// value is needed (`required`); otherwise it expands to "".
    fn interpolate(&mut self, path: &str, value: &str, required: bool) -> String {
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                self.error(path, "unterminated ${...} reference");
                return out;
            };
            let name = &after[..end];
            match (self.env)(name) {
                Some(v) => out.push_str(&v),
                None if required => self.error(path, format!("environment variable {name} is not set")),
                None => {}
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn seconds(&mut self, path: &str, value: Option<f64>, default: f64) -> Duration {
        let secs = value.unwrap_or(default);
        if !secs.is_finite() || secs <= 0.0 || secs > 365.0 * 86400.0 {
            self.error(path, format!("must be a positive number of seconds, got {secs}"));
            return Duration::from_secs_f64(default);
        }
        Duration::from_secs_f64(secs)
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let settings = self.settings(raw.settings);
        let providers: BTreeMap<String, Provider> =
            raw.providers.into_iter().map(|(k, p)| (k.clone(), self.provider(&k, p))).collect();
        let plugins: BTreeMap<String, PluginSpec> =
            raw.plugins.into_iter().filter_map(|(k, p)| self.plugin(&k, p).map(|spec| (k, spec))).collect();
        let models = self.models(raw.models, &providers, &plugins);
        let users = self.users(raw.users, &models);
        let policy = raw.auth.policy.unwrap_or_else(|| "token_auth".to_string());
        let auth_is_plugin = plugins.get(&policy).is_some_and(|p| p.kind == PluginKind::Auth);
        if !STOCK_AUTH.contains(&policy.as_str()) && !auth_is_plugin {
            self.error(
                "auth.policy",
                format!("unknown auth policy {policy:?} (stock: token_auth, or a [plugins.X] with kind = \"auth\")"),
            );
        }
        let auth_config = self.json("auth.config", raw.auth.config);
        let cache_ttl = match raw.auth.cache_seconds {
            Some(0.0) => Duration::ZERO,
            seconds => self.seconds("auth.cache_seconds", seconds, 10.0),
        };
        self.serves_someone(&models, &users, &policy);
        self.hung_backends_can_fail_over(&settings, &providers);
        let cluster = raw.cluster.map(|c| self.cluster(c));
        let telemetry = self.telemetry(raw.telemetry, &|name| std::env::var(name).ok());
        Config {
            settings,
            providers,
            models,
            users,
            plugins,
            auth: AuthSettings { policy, config_json: auth_config, cache_ttl },
            cluster,
            telemetry,
            source: None,
            warnings: Vec::new(),
        }
    }

    /// Retries are only worth something if an attempt on a hung backend ends before
    /// the request's budget does: without a per-attempt cap, the first attempt may
    /// take all of `request_timeout_seconds`, and the request gets 504 instead of
    /// failing over.
    fn hung_backends_can_fail_over(&mut self, settings: &Settings, providers: &BTreeMap<String, Provider>) {
        if settings.max_retries == 0 || settings.attempt_timeout.is_some() {
            return;
        }
        let uncapped: Vec<&str> =
            providers.values().filter(|p| p.enabled && p.timeout.is_none()).map(|p| p.key.as_str()).collect();
        if uncapped.is_empty() {
            return;
        }
        self.warn(
            "settings.attempt_timeout_seconds",
            format!(
                "not set, with max_retries = {}: a request that picks a hung backend ({}) waits all of \
                 request_timeout_seconds ({}s) on it and gets 504 instead of failing over; set \
                 attempt_timeout_seconds (or providers.X.timeout_seconds) below request_timeout_seconds",
                settings.max_retries,
                uncapped.join(", "),
                settings.request_timeout.as_secs_f64()
            ),
        );
    }

    /// A config that would answer every request with an error is never what the
    /// operator meant (usually an empty or half-written file): it is rejected, so a
    /// reload keeps the running config instead.
    fn serves_someone(&mut self, models: &[Model], users: &[User], policy: &str) {
        if models.is_empty() {
            self.error("models", "no model is defined: the gateway would serve nothing (an empty or truncated file?)");
        } else if !models.iter().any(|m| m.enabled) {
            self.error("models", "every model is disabled: the gateway would serve nothing");
        }
        if policy == "token_auth" && !users.iter().any(|u| u.enabled) {
            self.error(
                "users",
                "no enabled user: with auth.policy = \"token_auth\" nobody could authenticate (an empty or truncated file?)",
            );
        }
    }

    fn json(&mut self, path: &str, value: Option<toml::Value>) -> String {
        match value {
            None => "{}".to_string(),
            Some(v @ toml::Value::Table(_)) => serde_json::to_string(&v).unwrap_or_else(|_| "{}".to_string()),
            Some(_) => {
                self.error(path, "must be a table");
                "{}".to_string()
            }
        }
    }

    fn cluster(&mut self, raw: RawCluster) -> ClusterSettings {
        let p = "cluster";
        let url = self.interpolate(&format!("{p}.redis_url"), &raw.redis_url, true);
        // The URL may hold a password: errors name its scheme, never the URL itself.
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            self.error(&format!("{p}.redis_url"), "must start with redis:// or rediss:// (TLS)");
        } else if redis::Client::open(url.as_str()).is_err() {
            self.error(&format!("{p}.redis_url"), "is not a valid Redis URL (redis://[user:password@]host:port[/db])");
        }
        let timeout_ms = raw.timeout_ms.unwrap_or(50);
        if !(1..=10_000).contains(&timeout_ms) {
            self.error(&format!("{p}.timeout_ms"), "must be between 1 and 10000");
        }
        let sync_ms = raw.sync_interval_ms.unwrap_or(200);
        if !(20..=10_000).contains(&sync_ms) {
            self.error(&format!("{p}.sync_interval_ms"), "must be between 20 and 10000");
        }
        let on_unavailable = match raw.on_unavailable.as_deref().unwrap_or("local") {
            "local" => OnUnavailable::Local,
            "allow" => OnUnavailable::Allow,
            "deny" => OnUnavailable::Deny,
            other => {
                self.error(
                    &format!("{p}.on_unavailable"),
                    format!("must be \"local\", \"allow\" or \"deny\", got {other:?}"),
                );
                OnUnavailable::Local
            }
        };
        let key_prefix = raw.key_prefix.unwrap_or_else(|| "berry:".to_string());
        if key_prefix.is_empty() || key_prefix.len() > 64 {
            self.error(&format!("{p}.key_prefix"), "must be 1 to 64 bytes");
        }
        let replica_name = raw.replica_name.unwrap_or_else(default_replica_name);
        if replica_name.is_empty() || replica_name.len() > 64 || replica_name.contains(['\u{1f}', ',']) {
            self.error(&format!("{p}.replica_name"), "must be 1 to 64 bytes, without commas");
        }
        let lease_max = raw.lease_max.unwrap_or(256);
        if !(1..=65_536).contains(&lease_max) {
            self.error(&format!("{p}.lease_max"), "must be between 1 and 65536");
        }
        ClusterSettings {
            lease_max,
            redis_url: Secret::new(url),
            key_prefix,
            timeout: Duration::from_millis(timeout_ms),
            on_unavailable,
            sync_interval: Duration::from_millis(sync_ms),
            replica_name,
        }
    }

    /// `env` reads the environment (a parameter so tests need not set variables).
    fn telemetry(&mut self, raw: Option<RawTelemetry>, env: &dyn Fn(&str) -> Option<String>) -> TelemetrySettings {
        let p = "telemetry";
        let raw = raw.unwrap_or(RawTelemetry {
            otlp_endpoint: None,
            sampling_ratio: None,
            service_name: None,
            queue_size: None,
        });
        let env = |name: &str| env(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        // The signal's own URL is used as is; a base URL gets `/v1/traces` (OTLP/HTTP).
        let url = match raw.otlp_endpoint {
            Some(e) => Some(self.interpolate(&format!("{p}.otlp_endpoint"), &e, true)).filter(|e| !e.is_empty()),
            None if disabled => None,
            None => env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT")),
        };
        let url = url.map(|u| {
            let u = u.trim_end_matches('/').to_string();
            if u.ends_with("/v1/traces") { u } else { format!("{u}/v1/traces") }
        });
        if let Some(u) = &url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            self.error(&format!("{p}.otlp_endpoint"), "must be an http:// or https:// URL (OTLP over HTTP)");
        }
        let env_ratio = || {
            let sampler = env("OTEL_TRACES_SAMPLER").unwrap_or_default();
            match sampler.as_str() {
                "always_off" | "parentbased_always_off" => Some(0.0),
                "always_on" | "parentbased_always_on" => Some(1.0),
                _ => env("OTEL_TRACES_SAMPLER_ARG").and_then(|v| v.parse().ok()),
            }
        };
        let sampling_ratio = raw.sampling_ratio.or_else(env_ratio).unwrap_or(1.0);
        if !(0.0..=1.0).contains(&sampling_ratio) {
            self.error(&format!("{p}.sampling_ratio"), "must be between 0 and 1");
        }
        let service_name = raw.service_name.or_else(|| env("OTEL_SERVICE_NAME")).unwrap_or_else(|| "berry".into());
        let queue_size = raw.queue_size.unwrap_or(4096);
        if !(1..=1 << 20).contains(&queue_size) {
            self.error(&format!("{p}.queue_size"), "must be between 1 and 1048576");
        }
        TelemetrySettings { otlp_traces_url: url, sampling_ratio, service_name, queue_size }
    }

    fn settings(&mut self, raw: RawSettings) -> Settings {
        let p = "settings";
        let max_body = raw.max_request_body_bytes.unwrap_or(10 * 1024 * 1024);
        if max_body == 0 || max_body > 1 << 30 {
            self.error(&format!("{p}.max_request_body_bytes"), "must be between 1 and 1073741824");
        }
        let threshold = self
            .alias(
                p,
                ("circuit_breaker_threshold", raw.circuit_breaker_threshold),
                ("circuit_breaker_failure_threshold", raw.circuit_breaker_failure_threshold),
            )
            .unwrap_or(5);
        let cooldown = self.alias(
            p,
            ("circuit_breaker_cooldown_seconds", raw.circuit_breaker_cooldown_seconds),
            ("circuit_breaker_timeout_seconds", raw.circuit_breaker_timeout_seconds),
        );
        if let Some(n) = raw.max_internal_retries {
            self.warn(
                &format!("{p}.max_internal_retries"),
                format!(
                    "has no effect (berry-api): Berry retries on the next backend within each request, \
                     up to max_retries ({}); {n} is ignored",
                    raw.max_retries.unwrap_or(3)
                ),
            );
        }
        if raw.smart_ai.lightweight_check_interval_seconds.is_some() {
            self.warn(
                &format!("{p}.smart_ai.lightweight_check_interval_seconds"),
                "has no effect (berry-api): per_token backends are probed every health_check_interval_seconds \
                 (recovering ones every recovery_check_interval_seconds); per_request ones recover through traffic",
            );
        }
        if threshold == 0 {
            self.error(&format!("{p}.circuit_breaker_threshold"), "must be at least 1");
        }
        if let Some(listen) = &raw.listen
            && listen.parse::<std::net::SocketAddr>().is_err()
        {
            self.error(&format!("{p}.listen"), format!("not a socket address: {listen:?}"));
        }
        let admin_token = raw.admin_token.map(|t| Secret::new(self.interpolate(&format!("{p}.admin_token"), &t, true)));
        let admin_set = admin_token.as_ref().is_some_and(|t| !t.is_empty());
        let buffered = raw.max_buffered_body_bytes.unwrap_or((256u64 << 20).max(max_body));
        if buffered < max_body || buffered > 1 << 40 {
            self.error(
                &format!("{p}.max_buffered_body_bytes"),
                format!("must be at least max_request_body_bytes ({max_body}) and at most 1099511627776"),
            );
        }
        // A quarter: one user can never take more than that from everyone else.
        let per_user = raw.max_buffered_body_bytes_per_user.unwrap_or((buffered / 4).max(max_body));
        if per_user < max_body || per_user > buffered {
            self.error(
                &format!("{p}.max_buffered_body_bytes_per_user"),
                format!("must be at least max_request_body_bytes ({max_body}) and at most max_buffered_body_bytes ({buffered})"),
            );
        }
        let max_connections = raw.max_connections.unwrap_or(16_384);
        if !(1..=1_000_000).contains(&max_connections) {
            self.error(&format!("{p}.max_connections"), "must be between 1 and 1000000");
        }
        let backoff = raw.retry_backoff_ms.unwrap_or(20);
        let backoff_max = raw.retry_backoff_max_ms.unwrap_or(1_000);
        if backoff > 60_000 || backoff_max > 60_000 {
            self.error(&format!("{p}.retry_backoff_ms"), "backoff values must be at most 60000 ms");
        }
        let smart_ai = &raw.smart_ai;
        for (key, value) in [
            ("initial_confidence", smart_ai.initial_confidence),
            ("min_confidence", smart_ai.min_confidence),
            ("exploration_ratio", smart_ai.exploration_ratio),
        ] {
            if let Some(v) = value
                && !(0.0..=1.0).contains(&v)
            {
                self.error(&format!("{p}.smart_ai.{key}"), "must be within [0, 1]");
            }
        }
        let usage_db = match raw.usage_db.as_deref() {
            Some("") => None,
            Some(path) => Some(PathBuf::from(self.interpolate(&format!("{p}.usage_db"), path, true))),
            None => default_usage_db(),
        };
        let retention_days = raw.usage_retention_days.unwrap_or(400);
        if retention_days == 0 {
            self.error(&format!("{p}.usage_retention_days"), "must be at least 1");
        }
        Settings {
            usage_db,
            usage_retention: Duration::from_secs(u64::from(retention_days) * 86_400),
            listen: raw.listen,
            health_check_interval: self.seconds(
                &format!("{p}.health_check_interval_seconds"),
                raw.health_check_interval_seconds,
                30.0,
            ),
            recovery_check_interval: self.seconds(
                &format!("{p}.recovery_check_interval_seconds"),
                raw.recovery_check_interval_seconds,
                120.0,
            ),
            request_timeout: self.seconds(&format!("{p}.request_timeout_seconds"), raw.request_timeout_seconds, 30.0),
            attempt_timeout: raw
                .attempt_timeout_seconds
                .map(|s| self.seconds(&format!("{p}.attempt_timeout_seconds"), Some(s), 30.0)),
            retry_backoff: Duration::from_millis(backoff),
            retry_backoff_max: Duration::from_millis(backoff_max.max(backoff)),
            connection_timeout: self.seconds(
                &format!("{p}.connection_timeout_seconds"),
                raw.connection_timeout_seconds,
                10.0,
            ),
            first_byte_timeout: self.seconds(
                &format!("{p}.first_byte_timeout_seconds"),
                raw.first_byte_timeout_seconds,
                30.0,
            ),
            drain_timeout: self.seconds(&format!("{p}.drain_timeout_seconds"), raw.drain_timeout_seconds, 30.0),
            max_retries: match raw.max_retries.unwrap_or(3) {
                n @ 0..=16 => n,
                n => {
                    self.error(&format!("{p}.max_retries"), format!("must be at most 16, got {n}"));
                    16
                }
            },
            circuit_breaker_threshold: threshold,
            circuit_breaker_window: self.seconds(
                &format!("{p}.circuit_breaker_window_seconds"),
                raw.circuit_breaker_window_seconds,
                60.0,
            ),
            circuit_breaker_cooldown: self.seconds(&format!("{p}.circuit_breaker_cooldown_seconds"), cooldown, 30.0),
            recovery_successes_per_stage: match raw.recovery_successes_per_stage.unwrap_or(3) {
                0 => {
                    self.error(&format!("{p}.recovery_successes_per_stage"), "must be at least 1");
                    1
                }
                n => n,
            },
            health_check_timeout: self.seconds(
                &format!("{p}.health_check_timeout_seconds"),
                raw.health_check_timeout_seconds,
                5.0,
            ),
            max_request_body_bytes: max_body as usize,
            max_buffered_body_bytes: buffered as usize,
            max_buffered_body_bytes_per_user: per_user as usize,
            max_connections,
            max_connections_per_ip: raw.max_connections_per_ip.unwrap_or(0),
            client_header_timeout: self.seconds(
                &format!("{p}.client_header_timeout_seconds"),
                raw.client_header_timeout_seconds,
                10.0,
            ),
            client_write_timeout: self.seconds(
                &format!("{p}.client_write_timeout_seconds"),
                raw.client_write_timeout_seconds,
                30.0,
            ),
            admin_token,
            // With an admin token set, operational data is the admin's by default.
            protect_metrics: raw.protect_metrics.unwrap_or(admin_set),
            protect_status: raw.protect_status.unwrap_or(admin_set),
            protect_health: raw.protect_health.unwrap_or(admin_set),
            smart_ai_json: serde_json::to_string(&raw.smart_ai).unwrap_or_else(|_| "{}".to_string()),
        }
    }

    fn provider(&mut self, key: &str, raw: RawProvider) -> Provider {
        let p = format!("providers.{key}");
        let enabled = raw.enabled.unwrap_or(true);
        let base_url = self.interpolate(&format!("{p}.base_url"), &raw.base_url, enabled);
        let base_url = base_url.trim_end_matches('/').to_string();
        let scheme_ok = ["http://", "https://", "mock://"].iter().any(|s| base_url.starts_with(s));
        if enabled && base_url.starts_with("mock://") {
            if let Err(e) = crate::mock::MockSettings::from_mock_url(&base_url) {
                self.error(&format!("{p}.base_url"), e);
            }
        } else if enabled && !scheme_ok {
            self.error(
                &format!("{p}.base_url"),
                format!("must start with http://, https:// or mock://, got {base_url:?}"),
            );
        } else if enabled && !base_url.starts_with("mock://") && base_url.parse::<http::Uri>().is_err() {
            self.error(&format!("{p}.base_url"), format!("not a valid URL: {base_url:?}"));
        }
        let errors_before = self.errors.len();
        let api_key = Secret::new(self.interpolate(&format!("{p}.api_key"), &raw.api_key, enabled));
        // An unset variable was reported already; do not report the key twice.
        let interpolation_failed = self.errors.len() > errors_before;
        if enabled && api_key.is_empty() && !interpolation_failed && !base_url.starts_with("mock://") {
            self.error(&format!("{p}.api_key"), "is empty (a disabled provider may leave it empty)");
        }
        if enabled && raw.models.is_empty() {
            self.error(&format!("{p}.models"), "lists no models");
        }
        let mut headers = Vec::new();
        for (name, value) in raw.headers {
            let path = format!("{p}.headers.{name:?}");
            let value = self.interpolate(&path, &value, enabled);
            match (http::HeaderName::try_from(name.as_str()), http::HeaderValue::try_from(value)) {
                (Ok(n), Ok(mut v)) => {
                    v.set_sensitive(true);
                    headers.push((n, v));
                }
                _ => self.error(&path, "is not a valid HTTP header"),
            }
        }
        let timeout = raw.timeout_seconds.map(|s| self.seconds(&format!("{p}.timeout_seconds"), Some(s), 30.0));
        let backend = match raw.backend_type.as_deref().unwrap_or("openai") {
            "openai" => BackendType::OpenAi,
            "azure" => BackendType::Azure,
            "anthropic" | "claude" => BackendType::Anthropic,
            "gemini" => BackendType::Gemini,
            other => {
                self.error(
                    &format!("{p}.backend_type"),
                    format!(
                        "must be \"openai\", \"azure\", \"anthropic\" (or \"claude\") or \"gemini\", got {other:?}"
                    ),
                );
                BackendType::OpenAi
            }
        };
        if backend == BackendType::OpenAi && base_url.contains(".openai.azure.com") {
            self.warn(
                &format!("{p}.backend_type"),
                "the base_url is an Azure OpenAI resource: set backend_type = \"azure\" (and api_version) so Berry \
                 builds Azure's URLs and sends the key as `api-key`",
            );
        }
        if raw.api_version.is_some() && backend != BackendType::Azure {
            self.error(&format!("{p}.api_version"), "is only used with backend_type = \"azure\"");
        }
        let forward_organization_headers = raw.forward_organization_headers.unwrap_or(false);
        if forward_organization_headers && !matches!(backend, BackendType::OpenAi | BackendType::Azure) {
            self.error(
                &format!("{p}.forward_organization_headers"),
                "only applies to backend_type \"openai\" or \"azure\"",
            );
        }
        let probe = match raw.probe.as_deref().unwrap_or("models") {
            "models" => Probe::Models,
            "chat" => Probe::Chat,
            "none" => Probe::None,
            other => {
                self.error(&format!("{p}.probe"), format!("must be \"models\", \"chat\" or \"none\", got {other:?}"));
                Probe::None
            }
        };
        let proxy = match raw.proxy {
            // The embedded mocks are on this machine: never through a proxy.
            _ if base_url.starts_with("mock://") => Proxy::Direct,
            None => Proxy::Environment,
            Some(url) => {
                let url = self.interpolate(&format!("{p}.proxy"), &url, enabled);
                if url.is_empty() {
                    Proxy::Direct
                } else {
                    // May hold a password: errors name the problem, never the URL.
                    let parsed = url.parse::<http::Uri>().ok().filter(|u| u.host().is_some());
                    if !url.starts_with("http://") {
                        self.error(
                            &format!("{p}.proxy"),
                            "must be an http:// proxy URL (http://[user:password@]host:port), or \"\" for none",
                        );
                    } else if parsed.is_none() {
                        self.error(&format!("{p}.proxy"), "is not a valid URL (http://[user:password@]host:port)");
                    }
                    Proxy::Via(Secret::new(url))
                }
            }
        };
        Provider {
            proxy,
            key: key.to_string(),
            name: raw.name.unwrap_or_else(|| key.to_string()),
            base_url,
            api_key,
            models: raw.models,
            enabled,
            timeout,
            max_retries: raw.max_retries,
            probe,
            backend,
            api_version: raw.api_version,
            forward_organization_headers,
            headers,
        }
    }

    fn plugin(&mut self, key: &str, raw: RawPlugin) -> Option<PluginSpec> {
        let p = format!("plugins.{key}");
        // An entry named after a stock plugin tunes that plugin (its limits, a pin);
        // its code stays the built-in one.
        let stock = if STOCK_STRATEGIES.contains(&key) {
            Some(PluginKind::Strategy)
        } else if STOCK_AUTH.contains(&key) {
            Some(PluginKind::Auth)
        } else {
            None
        };
        if stock.is_some() && raw.path.is_some() {
            self.error(
                &format!("{p}.path"),
                "this name belongs to a stock plugin, which is built in: remove path to tune its limits, \
                 or give your plugin another name",
            );
        }
        if stock.is_none() && raw.path.is_none() {
            self.error(&format!("{p}.path"), "missing: the .wasm file of the plugin");
        }
        let kind = match (raw.kind.as_deref(), stock) {
            (Some("strategy"), None) => PluginKind::Strategy,
            (Some("auth"), None) => PluginKind::Auth,
            (None, Some(kind)) => kind,
            (Some(given), Some(kind)) if given == kind_name(kind) => kind,
            (Some(given), Some(kind)) => {
                self.error(&format!("{p}.kind"), format!("{key} is a stock {} plugin, not {given:?}", kind_name(kind)));
                return None;
            }
            (None, None) => {
                self.error(&format!("{p}.kind"), "missing: \"strategy\" or \"auth\"");
                return None;
            }
            (Some(other), None) => {
                self.error(&format!("{p}.kind"), format!("must be \"strategy\" or \"auth\", got {other:?}"));
                return None;
            }
        };
        let sha256 = raw.sha256.map(|h| h.to_ascii_lowercase());
        if let Some(h) = &sha256
            && (h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            self.error(&format!("{p}.sha256"), "must be 64 hex digits (the SHA-256 of the .wasm file)");
        }
        let defaults = Limits::default();
        let limits = Limits {
            fuel: raw.fuel.unwrap_or(defaults.fuel),
            memory_bytes: raw.memory_mb.map_or(defaults.memory_bytes, |mb| mb as usize * 1024 * 1024),
            deadline: raw.timeout_ms.map_or(defaults.deadline, Duration::from_millis),
            quarantine_after: raw.quarantine_after.unwrap_or(defaults.quarantine_after).max(1),
            quarantine: self.seconds(
                &format!("{p}.quarantine_seconds"),
                raw.quarantine_seconds,
                defaults.quarantine.as_secs_f64(),
            ),
        };
        if limits.memory_bytes == 0 || limits.memory_bytes > Limits::MAX_MEMORY_BYTES {
            self.error(&format!("{p}.memory_mb"), format!("must be between 1 and {}", Limits::MAX_MEMORY_BYTES >> 20));
        }
        if limits.fuel == 0 {
            self.error(&format!("{p}.fuel"), "must be at least 1");
        }
        if limits.deadline.is_zero() || limits.deadline > Duration::from_secs(1) {
            self.error(&format!("{p}.timeout_ms"), "must be between 1 and 1000");
        }
        Some(PluginSpec {
            name: key.to_string(),
            path: raw.path.map(PathBuf::from),
            kind,
            sha256,
            config_json: self.json(&format!("{p}.config"), raw.config),
            limits,
        })
    }

    fn models(
        &mut self,
        raw: BTreeMap<String, super::raw::RawModel>,
        providers: &BTreeMap<String, Provider>,
        plugins: &BTreeMap<String, PluginSpec>,
    ) -> Vec<Model> {
        let mut names = BTreeSet::new();
        let mut models = Vec::new();
        for (key, m) in raw {
            let p = format!("models.{key}");
            let name = m.name.unwrap_or_else(|| key.clone());
            let enabled = m.enabled.unwrap_or(true);
            if !names.insert(name.clone()) {
                self.error(&format!("{p}.name"), format!("model name {name:?} is used by another model"));
            }
            let mut strategy = m.strategy.unwrap_or_else(|| "weighted_random".to_string());
            if let Some((seed, stock)) = SEED_STRATEGIES.iter().find(|(seed, _)| *seed == strategy)
                && !plugins.contains_key(&strategy)
            {
                self.warn(
                    &format!("{p}.strategy"),
                    format!("{seed:?} is berry-api's name; Berry serves it with the stock {stock:?} (same behaviour)"),
                );
                strategy = (*stock).to_string();
            }
            let is_plugin = plugins.get(&strategy).is_some_and(|s| s.kind == PluginKind::Strategy);
            if !STOCK_STRATEGIES.contains(&strategy.as_str()) && !is_plugin {
                self.error(
                    &format!("{p}.strategy"),
                    format!(
                        "unknown strategy {strategy:?} (stock: {}; or a [plugins.X] with kind = \"strategy\")",
                        STOCK_STRATEGIES.join(", ")
                    ),
                );
            }
            let mut backends = Vec::new();
            for (i, b) in m.backends.into_iter().enumerate() {
                let bp = format!("{p}.backends[{i}]");
                let b_enabled = b.enabled.unwrap_or(true);
                // Disabled backends are checked leniently: they may point at a
                // provider that is being set up.
                if b_enabled && enabled {
                    match providers.get(&b.provider) {
                        None => self.error(&format!("{bp}.provider"), format!("unknown provider {:?}", b.provider)),
                        Some(prov) if !prov.models.contains(&b.model) => self.error(
                            &format!("{bp}.model"),
                            format!("provider {:?} does not list model {:?} in its models", b.provider, b.model),
                        ),
                        Some(_) => {}
                    }
                }
                let weight = b.weight.unwrap_or(1.0);
                if !weight.is_finite() || weight < 0.0 {
                    self.error(&format!("{bp}.weight"), format!("must be a finite number >= 0, got {weight}"));
                }
                let billing_mode = match b.billing_mode.as_deref().unwrap_or("per_token") {
                    "per_token" => BillingMode::PerToken,
                    "per_request" => BillingMode::PerRequest,
                    other => {
                        self.error(
                            &format!("{bp}.billing_mode"),
                            format!("must be \"per_token\" or \"per_request\", got {other:?}"),
                        );
                        BillingMode::PerToken
                    }
                };
                let mut price = |key: &str, value: Option<f64>| {
                    let v = value.unwrap_or(0.0);
                    if !v.is_finite() || v < 0.0 {
                        self.error(&format!("{bp}.{key}"), format!("must be a finite number >= 0, got {v}"));
                    }
                    v
                };
                let input = price("input_cost_per_mtok", b.input_cost_per_mtok);
                let prices = Prices {
                    input_per_mtok: input,
                    output_per_mtok: price("output_cost_per_mtok", b.output_cost_per_mtok),
                    cached_input_per_mtok: price(
                        "cached_input_cost_per_mtok",
                        b.cached_input_cost_per_mtok.or(Some(input)),
                    ),
                    per_request: price("cost_per_request", b.cost_per_request),
                };
                if billing_mode == BillingMode::PerToken && b.cost_per_request.is_some() {
                    self.warn(
                        &format!("{bp}.cost_per_request"),
                        "applies to billing_mode = \"per_request\" backends only",
                    );
                }
                backends.push(Backend {
                    provider: b.provider,
                    model: b.model,
                    weight,
                    priority: b.priority.unwrap_or(1),
                    enabled: b_enabled,
                    billing_mode,
                    tags: b.tags,
                    prices,
                });
            }
            if enabled {
                let live: Vec<&Backend> = backends
                    .iter()
                    .filter(|b| b.enabled && providers.get(&b.provider).is_some_and(|p| p.enabled))
                    .collect();
                if backends.is_empty() {
                    self.error(&format!("{p}.backends"), "has no backends");
                } else if live.iter().map(|b| b.weight).sum::<f64>() <= 0.0 {
                    self.error(
                        &format!("{p}.backends"),
                        "total weight of enabled backends (on enabled providers) is 0",
                    );
                }
            }
            models.push(Model { key, name, strategy, enabled, backends });
        }
        models
    }

    fn users(&mut self, raw: BTreeMap<String, RawUser>, models: &[Model]) -> Vec<User> {
        let mut users = Vec::new();
        for (key, u) in raw {
            let p = format!("users.{key}");
            let enabled = u.enabled.unwrap_or(true);
            let token = u.token.map(|t| Secret::new(self.interpolate(&format!("{p}.token"), &t, enabled)));
            let token_sha256 = u.token_sha256.map(|h| h.to_ascii_lowercase());
            match (&token, &token_sha256) {
                (Some(_), Some(_)) => self.error(&p, "set token or token_sha256, not both"),
                (None, None) => self.error(&p, "needs token or token_sha256"),
                (Some(t), None) if t.is_empty() && enabled => self.error(&format!("{p}.token"), "is empty"),
                (None, Some(h)) if h.len() != 64 || !h.bytes().all(|c| c.is_ascii_hexdigit()) => {
                    self.error(&format!("{p}.token_sha256"), "must be 64 hex digits")
                }
                _ => {}
            }
            for (i, m) in u.allowed_models.iter().enumerate() {
                // Allowing a model that does not exist grants nothing: worth a warning
                // (a typo?), not a refusal to load.
                if !models.iter().any(|model| &model.name == m) {
                    self.warn(&format!("{p}.allowed_models[{i}]"), format!("no model is named {m:?}"));
                }
            }
            let limits = u.rate_limit;
            for (k, v) in [
                ("requests_per_minute", limits.requests_per_minute),
                ("requests_per_hour", limits.requests_per_hour),
                ("requests_per_day", limits.requests_per_day),
            ] {
                if v == Some(0) {
                    self.error(&format!("{p}.rate_limit.{k}"), "must be at least 1 (omit it for no limit)");
                }
            }
            if limits.tokens_per_minute == Some(0) {
                self.error(&format!("{p}.rate_limit.tokens_per_minute"), "must be at least 1 (omit it for no limit)");
            }
            let b = u.budget;
            for (k, v) in [("max_cost_per_day", b.max_cost_per_day), ("max_cost_per_month", b.max_cost_per_month)] {
                if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                    self.error(&format!("{p}.budget.{k}"), "must be a finite number >= 0");
                }
            }
            let budget = Budget {
                max_cost_per_day: b.max_cost_per_day,
                max_cost_per_month: b.max_cost_per_month,
                max_tokens_per_day: b.max_tokens_per_day,
                max_tokens_per_month: b.max_tokens_per_month,
                tokens_per_minute: limits.tokens_per_minute,
            };
            users.push(User {
                budget,
                key: key.clone(),
                name: u.name.unwrap_or(key),
                token,
                token_sha256,
                allowed_models: u.allowed_models,
                enabled,
                tags: u.tags,
                rate_limit: RateLimit {
                    per_minute: limits.requests_per_minute,
                    per_hour: limits.requests_per_hour,
                    per_day: limits.requests_per_day,
                },
            });
        }
        users
    }
}

/// Where the usage ledger lives when the config does not say: `$BERRY_DATA_DIR`,
/// else `$XDG_DATA_HOME/berry`, else `~/.local/share/berry` (the container sets
/// `BERRY_DATA_DIR=/var/lib/berry`).
fn default_usage_db() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let dir = var("BERRY_DATA_DIR")
        .or_else(|| var("XDG_DATA_HOME").map(|d| d.join("berry")))
        .or_else(|| var("HOME").map(|h| h.join(".local/share/berry")))?;
    Some(dir.join("usage.db"))
}

/// A replica's name when the config gives none: the host name and process id, so
/// two replicas on one machine differ and a restarted one is told apart.
fn default_replica_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.')).collect::<String>())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "berry".to_string());
    format!("{}-{}", &host[..host.len().min(40)], std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[providers.p]
base_url = "https://example.invalid/v1"
api_key = "${P_KEY}"
models = ["up"]

[models.m]
name = "m"
[[models.m.backends]]
provider = "p"
model = "up"
weight = 2

[users.u]
token = "t"
"#;

    fn env(name: &str) -> Option<String> {
        (name == "P_KEY").then(|| "sk-from-env".to_string())
    }

    fn errors(text: &str) -> Vec<String> {
        match parse(text, &env) {
            Ok(_) => Vec::new(),
            Err(e) => e.errors,
        }
    }

    #[test]
    fn a_valid_config_gets_its_defaults_and_env_values() {
        let c = parse(BASE, &env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.providers["p"].api_key.expose(), "sk-from-env");
        assert_eq!(c.settings.max_retries, 3);
        assert_eq!(c.settings.request_timeout, Duration::from_secs(30));
        assert_eq!(c.models[0].strategy, "weighted_random");
        assert_eq!(c.auth.policy, "token_auth");
        assert!(!format!("{c:?}").contains("sk-from-env"), "secrets must not print in Debug");
    }

    #[test]
    fn a_provider_proxy_is_the_environment_by_default_empty_for_none_and_http_only() {
        let with = |line: &str| BASE.replace("models = [\"up\"]", &format!("models = [\"up\"]\n{line}"));
        let c = parse(BASE, &env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.providers["p"].proxy, Proxy::Environment);
        let c = parse(&with("proxy = \"\""), &env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.providers["p"].proxy, Proxy::Direct);
        let c = parse(&with("proxy = \"http://u:hunter2@proxy:3128\""), &env).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(&c.providers["p"].proxy, Proxy::Via(url) if url.expose() == "http://u:hunter2@proxy:3128"));
        assert!(!format!("{c:?}").contains("hunter2"), "the proxy's password must not print");
        let e = errors(&with("proxy = \"socks5://u:hunter2@proxy:1080\""));
        assert!(e.len() == 1 && e[0].starts_with("providers.p.proxy: must be an http://"), "{e:?}");
        assert!(!e[0].contains("hunter2"), "errors never quote the URL: {e:?}");
    }

    #[test]
    fn unknown_keys_are_errors_with_their_path() {
        let e = errors(&format!("{BASE}\n[models.m.extra]\n"));
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("models.m"), "{e:?}");
        let e = errors(&BASE.replace("weight = 2", "weight = 2\nwieght = 3"));
        assert!(e[0].contains("models.m.backends[0]") && e[0].contains("wieght"), "{e:?}");
    }

    #[test]
    fn semantic_errors_are_all_reported() {
        let text = BASE
            .replace("provider = \"p\"", "provider = \"q\"")
            .replace("[users.u]\ntoken = \"t\"", "[users.u]\ntoken = \"t\"\nallowed_models = [\"nope\"]");
        let e = errors(&text);
        assert!(e.contains(&"models.m.backends[0].provider: unknown provider \"q\"".to_string()), "{e:?}");
        assert!(e.iter().all(|x| !x.starts_with("users.u.allowed_models[0]")), "a warning, not an error: {e:?}");
    }

    #[test]
    fn zero_total_weight_and_unlisted_models_are_errors() {
        assert!(errors(&BASE.replace("weight = 2", "weight = 0"))[0].contains("total weight"));
        let e = errors(&BASE.replace("model = \"up\"", "model = \"other\""));
        assert!(e[0].starts_with("models.m.backends[0].model"), "{e:?}");
    }

    #[test]
    fn missing_env_is_an_error_only_where_needed() {
        let e = match parse(BASE, &|_| None) {
            Err(e) => e.errors,
            Ok(_) => Vec::new(),
        };
        assert_eq!(e, ["providers.p.api_key: environment variable P_KEY is not set"]);
        // A disabled provider may lack its key (and its models may point at it, disabled).
        let disabled = BASE.replace("models = [\"up\"]", "models = [\"up\"]\nenabled = false");
        let e = match parse(&disabled, &|_| None) {
            Err(e) => e.errors,
            Ok(_) => Vec::new(),
        };
        assert!(e.iter().all(|x| !x.contains("api_key")), "{e:?}");
    }

    #[test]
    fn a_config_that_serves_nobody_is_an_error() {
        for empty in ["", "\n# just a comment\n", "[settings]\nmax_retries = 1\n"] {
            let e = errors(empty);
            assert!(e.iter().any(|x| x.starts_with("models: no model is defined")), "{e:?}");
            assert!(e.iter().any(|x| x.starts_with("users: no enabled user")), "{e:?}");
        }
        let e = errors(&BASE.replace("[models.m]\nname = \"m\"", "[models.m]\nname = \"m\"\nenabled = false"));
        assert!(e.iter().any(|x| x.starts_with("models: every model is disabled")), "{e:?}");
        let e = errors(&BASE.replace("token = \"t\"", "token = \"t\"\nenabled = false"));
        assert!(e.iter().any(|x| x.starts_with("users: no enabled user")), "{e:?}");
    }

    #[test]
    fn garbage_never_panics() {
        for text in [
            "",
            "[",
            "x = ",
            "[settings]\nlisten = 5",
            "[[models]]",
            "[models.m]\nbackends = 3",
            "\u{0}",
            "[providers.p]\nbase_url=\"mock://x?fail=abc\"",
        ] {
            let _ = parse(text, &env);
        }
    }
}
