//! `GET /metrics`: refresh the scrape-time gauges from the live snapshot, then encode
//! in the format the scraper asked for: OpenMetrics when its `Accept` names it (as
//! Prometheus does), the classic text format otherwise (promtool, curl, agents).

use http::{HeaderValue, Response, header};

use super::body::{BerryBody, full};
use crate::gateway::Snapshot;
use crate::health::{CircuitView, now_ms};
use crate::metrics::{BackendLabels, PluginLabels, WeightLabels};

pub fn metrics(snapshot: &Snapshot, accept: Option<&HeaderValue>) -> Response<BerryBody> {
    let openmetrics = accept.and_then(|a| a.to_str().ok()).is_some_and(asks_for_openmetrics);
    let m = &snapshot.metrics;
    let text = {
        let _one_scrape_at_a_time = m.scrape.lock().unwrap_or_else(|p| p.into_inner());
        // Clear first: a backend removed by a reload stops being reported.
        m.backend_healthy.clear();
        m.backend_circuit.clear();
        m.backend_recovery.clear();
        m.backend_in_flight.clear();
        m.effective_weight.clear();
        m.plugin_quarantined.clear();
        let now = now_ms();
        for route in &snapshot.route_order {
            let weights = route.explain(now, &snapshot.policy).unwrap_or_default();
            for (i, b) in route.backends.iter().enumerate() {
                let labels = BackendLabels { provider: b.config.provider.clone(), model: b.config.model.clone() };
                let view = b.health.view(now, &snapshot.policy);
                m.backend_healthy.get_or_create(&labels).set(i64::from(b.enabled() && view.circuit.healthy()));
                let circuit = match view.circuit {
                    CircuitView::Closed => 0,
                    CircuitView::HalfOpen { .. } => 1,
                    CircuitView::Open => 2,
                };
                m.backend_circuit.get_or_create(&labels).set(circuit);
                m.backend_recovery.get_or_create(&labels).set(view.circuit.recovery_factor());
                m.backend_in_flight.get_or_create(&labels).set(i64::from(view.in_flight));
                if let Some(e) = weights.get(i) {
                    let labels =
                        WeightLabels { route: route.name.clone(), provider: labels.provider, model: labels.model };
                    m.effective_weight.get_or_create(&labels).set(e.weight);
                }
            }
        }
        let now = now_ms();
        let plugins = snapshot.strategies.values().map(|p| p.compiled()).chain([snapshot.auth.compiled()]);
        for p in plugins {
            let labels = PluginLabels { plugin: p.name.to_string() };
            m.plugin_quarantined.get_or_create(&labels).set(i64::from(p.stats.quarantined(now)));
        }
        if let Some(ledger) = &snapshot.accounting.ledger {
            use std::sync::atomic::Ordering::Relaxed;
            let s = &ledger.stats;
            m.ledger_backlog.set(ledger.backlog() as i64);
            m.ledger_written.set(s.written.load(Relaxed) as i64);
            m.ledger_dropped.set(s.dropped.load(Relaxed) as i64);
            m.ledger_write_failures.set(s.write_failures.load(Relaxed) as i64);
        }
        m.encode(openmetrics)
    };
    let mut response = Response::new(full(text));
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Whether an `Accept` header lists OpenMetrics with a non-zero quality.
fn asks_for_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let refused = parts.any(|p| p.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()) == Some(0.0));
        media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
    })
}

#[cfg(test)]
mod tests {
    use super::asks_for_openmetrics;

    #[test]
    fn prometheus_gets_openmetrics_and_everyone_else_classic_text() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(asks_for_openmetrics(prometheus));
        assert!(!asks_for_openmetrics("text/plain;version=0.0.4"));
        assert!(!asks_for_openmetrics("*/*"));
        assert!(!asks_for_openmetrics("application/openmetrics-text;q=0"));
    }
}
