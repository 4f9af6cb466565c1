//! Prometheus metrics (`GET /metrics`), with `prometheus-client`.
//!
//! Hot-path metrics are counters and histograms updated where things happen. Health,
//! circuit, recovery and effective-weight gauges are read from the live snapshot at
//! scrape time. Labels are bounded: configured model, backend and plugin names, user
//! ids, status classes — never request ids, tokens or client-supplied strings.

use std::sync::Mutex;

pub mod classic;
pub mod genai;
pub mod history;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// A configured model name, or "-" when the request named none we know.
    pub model: String,
    /// "provider/model" of the backend that answered, or "-".
    pub backend: String,
    /// "2xx", "4xx", "5xx".
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// The route (configured model) the attempt served.
    pub model: String,
    pub backend: String,
    /// "success", "client_error", or the error class.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UserLabels {
    pub user: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub user: String,
    pub model: String,
    /// "prompt" or "completion".
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CostLabels {
    pub user: String,
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FallbackLabels {
    pub plugin: String,
    /// "strategy_failed", "strategy_quarantined", "strategy_answered_nothing".
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub provider: String,
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WeightLabels {
    pub route: String,
    pub provider: String,
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// Why a client connection ended before a request completed ("silent",
    /// "header_timeout", "malformed_request", "write_stalled", …).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// "ok" or "rejected".
    pub result: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<ModelLabels, Histogram>,
    pub first_byte_seconds: Family<ModelLabels, Histogram>,
    pub attempts: Family<AttemptLabels, Counter>,
    pub retries: Family<ModelLabels, Counter>,
    pub rate_limited: Family<UserLabels, Counter>,
    pub tokens: Family<TokenLabels, Counter>,
    /// What requests cost at the configured prices, by user and model.
    pub cost: Family<CostLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    pub plugin_calls: Family<PluginLabels, Counter>,
    pub plugin_failures: Family<PluginLabels, Counter>,
    pub plugin_call_seconds: Family<PluginLabels, Histogram>,
    pub reloads: Family<ResultLabels, Counter>,
    pub backend_healthy: Family<BackendLabels, Gauge>,
    /// 0 closed, 1 half-open (recovering), 2 open.
    pub backend_circuit: Family<BackendLabels, Gauge>,
    pub backend_recovery: Family<BackendLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub backend_in_flight: Family<BackendLabels, Gauge>,
    pub effective_weight: Family<WeightLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub plugin_quarantined: Family<PluginLabels, Gauge>,
    /// Plugin calls that failed on one request's input while the plugin itself
    /// answers normal input: the request was refused, the plugin kept serving.
    pub plugin_input_failures: Family<PluginLabels, Counter>,
    pub open_connections: Gauge,
    pub connections_rejected: Counter,
    /// Idle connections closed at the cap to admit a new one.
    pub connections_evicted: Counter,
    /// Requests served in the host's fallback order instead of their strategy's.
    pub strategy_fallbacks: Family<FallbackLabels, Counter>,
    pub connection_errors: Family<ConnectionLabels, Counter>,
    /// Scrapes refresh the gauges; one at a time.
    pub scrape: Mutex<()>,
    /// Registered only with `[cluster]`.
    pub cluster: ClusterMetrics,
    /// The usage ledger's writer, read at scrape time.
    pub ledger_backlog: Gauge,
    pub ledger_written: Gauge,
    pub ledger_dropped: Gauge,
    pub ledger_write_failures: Gauge,
    /// Time spent in Berry itself per relayed request (upstream time and deliberate
    /// waits excluded), by model: `x-berry-overhead-ms`.
    pub overhead_seconds: Family<ModelLabels, Histogram, fn() -> Histogram>,
    /// The OpenTelemetry GenAI client metrics (unprefixed names).
    pub genai: genai::GenAiMetrics,
    /// Spans the trace exporter dropped (queue full or export failed).
    pub spans_dropped: Counter,
    /// The last hour per model and backend, for the status page.
    pub history: history::History,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// "rate_limit", "sync" or "plugin".
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// `cluster.on_unavailable`: "local", "allow" or "deny".
    pub policy: &'static str,
}

/// The fleet's metrics: Redis operations and the fault policy in force.
#[derive(Clone)]
pub struct ClusterMetrics {
    pub op_seconds: Family<OpLabels, Histogram, fn() -> Histogram>,
    pub op_errors: Family<OpLabels, Counter>,
    /// Rate-limit decisions made without Redis, by the policy applied.
    pub fallbacks: Family<PolicyLabels, Counter>,
    pub up: Gauge,
    pub replicas: Gauge,
}

impl ClusterMetrics {
    pub fn seconds(&self, op: &'static str) -> Histogram {
        self.op_seconds.get_or_create(&OpLabels { op }).clone()
    }

    pub fn errors(&self, op: &'static str) -> Counter {
        self.op_errors.get_or_create(&OpLabels { op }).clone()
    }

    fn register(&self, registry: &mut Registry) {
        registry.register("cluster_redis_op_duration_seconds", "Redis operations by kind", self.op_seconds.clone());
        registry.register(
            "cluster_redis_op_errors",
            "Redis operations that failed or timed out",
            self.op_errors.clone(),
        );
        registry.register(
            "cluster_fallbacks",
            "Rate-limit decisions made without Redis, by the on_unavailable policy applied",
            self.fallbacks.clone(),
        );
        registry.register("cluster_redis_up", "1 while Redis answers", self.up.clone());
        registry.register("cluster_replicas", "Replicas seen in the fleet (this one included)", self.replicas.clone());
    }
}

fn redis_histogram() -> Histogram {
    // 50 µs … ~1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl Default for ClusterMetrics {
    fn default() -> Self {
        ClusterMetrics {
            op_seconds: Family::new_with_constructor(redis_histogram as fn() -> Histogram),
            op_errors: Family::default(),
            fallbacks: Family::default(),
            up: Gauge::default(),
            replicas: Gauge::default(),
        }
    }
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn overhead_histogram() -> Histogram {
    // 10 µs … ~0.3 s.
    Histogram::new(exponential_buckets(0.000_01, 2.0, 16))
}

fn plugin_histogram() -> Histogram {
    // 1 µs … ~65 ms: plugin calls are microseconds; the tail is the deadline.
    Histogram::new(exponential_buckets(0.000_001, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(false)
    }
}

impl Metrics {
    /// The gateway's metrics; `cluster`: with the fleet's (`[cluster]` configured).
    pub fn new(cluster: bool) -> Self {
        // Berry's own families are `berry_*`; the GenAI conventions' are not.
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("berry");
        let requests = Family::default();
        let request_seconds = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let first_byte_seconds = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let plugin_call_seconds = Family::new_with_constructor(plugin_histogram as fn() -> Histogram);
        let m = Metrics {
            requests,
            request_seconds: request_seconds.clone(),
            first_byte_seconds: first_byte_seconds.clone(),
            attempts: Family::default(),
            retries: Family::default(),
            rate_limited: Family::default(),
            tokens: Family::default(),
            cost: Family::default(),
            plugin_calls: Family::default(),
            plugin_failures: Family::default(),
            plugin_call_seconds: plugin_call_seconds.clone(),
            reloads: Family::default(),
            backend_healthy: Family::default(),
            backend_circuit: Family::default(),
            backend_recovery: Family::default(),
            backend_in_flight: Family::default(),
            effective_weight: Family::default(),
            plugin_quarantined: Family::default(),
            plugin_input_failures: Family::default(),
            open_connections: Gauge::default(),
            connections_rejected: Counter::default(),
            connections_evicted: Counter::default(),
            strategy_fallbacks: Family::default(),
            connection_errors: Family::default(),
            scrape: Mutex::new(()),
            registry: Registry::default(),
            cluster: ClusterMetrics::default(),
            ledger_backlog: Gauge::default(),
            ledger_written: Gauge::default(),
            ledger_dropped: Gauge::default(),
            ledger_write_failures: Gauge::default(),
            overhead_seconds: Family::new_with_constructor(overhead_histogram as fn() -> Histogram),
            genai: genai::GenAiMetrics::default(),
            spans_dropped: Counter::default(),
            history: history::History::default(),
        };
        if cluster {
            m.cluster.register(registry);
        }
        registry.register(
            "requests",
            "Relayed requests by model, answering backend and status class",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Total request latency (to the last byte for non-streams, to the first for streams)",
            m.request_seconds.clone(),
        );
        registry.register(
            "time_to_first_byte_seconds",
            "Streaming: time until the first upstream byte reached the client",
            m.first_byte_seconds.clone(),
        );
        registry.register("upstream_attempts", "Upstream attempts by backend and outcome", m.attempts.clone());
        registry.register("upstream_retries", "Attempts beyond the first, by model", m.retries.clone());
        registry.register("rate_limit_rejections", "Requests refused by a user's rate limit", m.rate_limited.clone());
        registry.register("tokens", "Tokens reported in upstream usage, by user, model and kind", m.tokens.clone());
        registry.register("cost", "What requests cost at the configured prices, by user and model", m.cost.clone());
        registry.register(
            "usage_ledger_backlog",
            "Usage records waiting for the ledger's writer",
            m.ledger_backlog.clone(),
        );
        registry.register(
            "usage_ledger_written",
            "Usage records written to the ledger since start",
            m.ledger_written.clone(),
        );
        registry.register(
            "usage_ledger_dropped",
            "Usage records dropped since start (queue full, or failed writes beyond the retry buffer)",
            m.ledger_dropped.clone(),
        );
        registry.register(
            "usage_ledger_write_failures",
            "Ledger writes that failed (retried) since start",
            m.ledger_write_failures.clone(),
        );
        registry.register("plugin_calls", "Calls into plugins", m.plugin_calls.clone());
        registry.register(
            "plugin_failures",
            "Plugin calls that trapped, timed out or ran out of memory",
            m.plugin_failures.clone(),
        );
        registry.register("plugin_call_duration_seconds", "Plugin call latency", m.plugin_call_seconds.clone());
        registry.register("reloads", "Configuration reloads and plugin swaps, by result", m.reloads.clone());
        registry.register("backend_healthy", "1 when the backend's circuit is not open", m.backend_healthy.clone());
        registry.register(
            "backend_circuit_state",
            "0 closed, 1 half-open (recovering), 2 open",
            m.backend_circuit.clone(),
        );
        registry.register(
            "backend_recovery_factor",
            "Share of its weight the backend gets (0.1, 0.3, 0.5, 1)",
            m.backend_recovery.clone(),
        );
        registry.register("backend_in_flight", "Requests in flight on the backend", m.backend_in_flight.clone());
        registry.register(
            "effective_weight",
            "The weight the route's strategy uses now for the backend",
            m.effective_weight.clone(),
        );
        registry.register("plugin_quarantined", "1 while the plugin is quarantined", m.plugin_quarantined.clone());
        registry.register(
            "plugin_input_failures",
            "Plugin calls that failed on one request's input (the plugin kept serving)",
            m.plugin_input_failures.clone(),
        );
        registry.register("client_connections", "Client connections open now", m.open_connections.clone());
        registry.register(
            "client_connections_rejected",
            "Client connections closed on accept: max_connections busy, or max_connections_per_ip from one address",
            m.connections_rejected.clone(),
        );
        registry.register(
            "strategy_fallbacks",
            "Requests served in the host's fallback order: the strategy failed, was quarantined or answered nothing usable",
            m.strategy_fallbacks.clone(),
        );
        registry.register(
            "client_connections_evicted",
            "Idle client connections closed at max_connections to admit a new one",
            m.connections_evicted.clone(),
        );
        registry.register(
            "client_connection_errors",
            "Client connections that ended before a request completed, by reason",
            m.connection_errors.clone(),
        );
        registry.register(
            "overhead_seconds",
            "Time spent in Berry per relayed request, upstream time and deliberate waits excluded (x-berry-overhead-ms)",
            m.overhead_seconds.clone(),
        );
        registry.register(
            "trace_spans_dropped",
            "Trace spans dropped by the OTLP exporter: its queue was full or the export failed",
            m.spans_dropped.clone(),
        );
        m.genai.register(&mut root);
        Metrics { registry: root, ..m }
    }

    /// The registry as OpenMetrics text, or (`openmetrics` false) in the classic
    /// Prometheus text format.
    pub fn encode(&self, openmetrics: bool) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        if openmetrics { out } else { classic::from_openmetrics(&out) }
    }
}

/// "2xx", "4xx", "5xx" for a status code.
pub fn status_class(status: u16) -> String {
    format!("{}xx", status / 100)
}
