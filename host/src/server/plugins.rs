//! `/admin/plugins` and `/admin/reload`: see what is loaded, swap a plugin live,
//! reload the config. All behind the admin token.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::UNIX_EPOCH;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::admin::require_admin;
use super::body::{BerryBody, json_response};
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::health::now_ms;
use crate::plugin::{CompiledPlugin, Limits};
use crate::telemetry::clean::clip;

/// Largest plugin upload accepted.
const MAX_PLUGIN_BYTES: usize = 64 << 20;

pub async fn handle(gateway: &Arc<Gateway>, request: Request<Incoming>) -> Result<Response<BerryBody>, GatewayError> {
    let snapshot = gateway.snapshot();
    require_admin(&snapshot, request.headers())?;
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    match (path.as_str(), &method) {
        ("/admin/plugins", &Method::GET) => Ok(list(gateway)),
        ("/admin/usage", &Method::GET) => super::usage::report(&snapshot, request.uri().query().unwrap_or("")).await,
        ("/admin/reload", &Method::POST) => match gateway.reload_from_disk().await {
            Ok(()) => Ok(json_response(StatusCode::OK, &json!({ "reloaded": true }))),
            Err(e) => Err(GatewayError::unprocessable("reload_rejected", e)),
        },
        (p, m) if p.starts_with("/admin/plugins/") => {
            let name = p.trim_start_matches("/admin/plugins/").to_string();
            if name.is_empty() || name.contains('/') {
                return Err(GatewayError::not_found("unknown_url", format!("Unknown request URL: {}", clip(p))));
            }
            if !gateway.knows_plugin(&name) {
                return Err(GatewayError::not_found(
                    "unknown_plugin",
                    format!(
                        "No plugin named '{}': name a stock plugin or a [plugins.X] entry of the configuration.",
                        clip(&name)
                    ),
                ));
            }
            match *m {
                Method::PUT | Method::POST => {
                    let bytes = Limited::new(request.into_body(), MAX_PLUGIN_BYTES)
                        .collect()
                        .await
                        .map_err(|_| GatewayError::payload_too_large(MAX_PLUGIN_BYTES))?
                        .to_bytes();
                    match gateway.swap_plugin(&name, bytes.to_vec()).await {
                        Ok(()) => {
                            let mut answer = json!({ "swapped": name, "plugin": describe_named(gateway, &name) });
                            if let Some(cluster) = &gateway.cluster {
                                answer["fleet"] = fleet_answer(cluster.publish_plugin(&name, Some(&bytes)).await);
                            }
                            Ok(json_response(StatusCode::OK, &answer))
                        }
                        Err(e) => Err(GatewayError::unprocessable("plugin_rejected", e)),
                    }
                }
                Method::DELETE => match gateway.revert_plugin(&name).await {
                    Ok(reverted) => {
                        let serving = describe_named(gateway, &name);
                        let mut answer = json!({ "reverted": reverted, "plugin": name, "serving": serving });
                        // The fleet reverts too, even when this replica served no upload.
                        if let Some(cluster) = &gateway.cluster {
                            answer["fleet"] = fleet_answer(cluster.publish_plugin(&name, None).await);
                        }
                        if !reverted {
                            answer["reason"] = json!(
                                "no uploaded version is in service (a changed file replaces an upload): nothing to revert"
                            );
                        }
                        Ok(json_response(StatusCode::OK, &answer))
                    }
                    Err(e) => Err(GatewayError::unprocessable("plugin_rejected", e)),
                },
                _ => Err(GatewayError::method_not_allowed()),
            }
        }
        _ => Err(GatewayError::not_found("unknown_url", format!("Unknown request URL: {}", clip(&path)))),
    }
}

fn list(gateway: &Gateway) -> Response<BerryBody> {
    let snapshot = gateway.snapshot();
    let mut plugins: Vec<Value> = snapshot
        .strategies
        .iter()
        .map(|(name, p)| {
            let used_by: Vec<&str> = snapshot
                .route_order
                .iter()
                .filter(|r| **r.strategy.name() == **name)
                .map(|r| r.name.as_str())
                .collect();
            let mut v = describe(p.compiled(), p.contract(), "strategy", &limits_of(&snapshot.config, name));
            v["used_by"] = json!(used_by);
            v["file"] = json!(file_of(&snapshot.config, name));
            v
        })
        .collect();
    let mut auth =
        describe(
            snapshot.auth.compiled(),
            snapshot.auth.contract(),
            "auth",
            &limits_of(&snapshot.config, &snapshot.config.auth.policy),
        );
    auth["file"] = json!(file_of(&snapshot.config, &snapshot.config.auth.policy));
    plugins.push(auth);
    // Stock plugins this configuration does not use: a strategy or policy away.
    let in_use = |name: &str| snapshot.strategies.contains_key(name) || **snapshot.auth.name() == *name;
    let available: Vec<Value> = crate::plugin::STOCK_STRATEGIES
        .iter()
        .map(|name| (name, "strategy"))
        .chain(crate::plugin::STOCK_AUTH.iter().map(|name| (name, "auth")))
        .filter(|(name, _)| !in_use(name))
        .map(|(name, kind)| json!({ "name": name, "kind": kind, "source": "stock" }))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "plugins": plugins,
            "available": available,
            "uploaded": gateway.uploaded_plugins(),
            "swaps": gateway.swaps.load(Ordering::Relaxed),
            // The fleet's versions and what this replica did with each.
            "fleet": gateway.cluster.as_ref().map(|c| c.plugins_report()),
        }),
    )
}

fn fleet_answer(published: crate::cluster::Published) -> Value {
    match published {
        crate::cluster::Published::Fleet => json!({ "published": true }),
        crate::cluster::Published::Pending(why) => json!({
            "published": false,
            "reason": format!("Redis: {why}; serving here, published to the fleet when Redis answers"),
        }),
    }
}

fn describe_named(gateway: &Gateway, name: &str) -> Value {
    let snapshot = gateway.snapshot();
    let limits = limits_of(&snapshot.config, name);
    match snapshot.strategies.get(name) {
        Some(p) => describe(p.compiled(), p.contract(), "strategy", &limits),
        None if **snapshot.auth.name() == *name => {
            describe(snapshot.auth.compiled(), snapshot.auth.contract(), "auth", &limits)
        }
        None => Value::Null,
    }
}

/// Which source serves a plugin: the newest of its file (or the stock build) and an
/// upload. An upload takes the place of the file until `DELETE` or until the file
/// changes (a rebuilt file is newer intent); `file` names the configured file, so
/// an upload that shadows it is plain to see.
fn file_of(config: &crate::config::Config, name: &str) -> Option<String> {
    config.plugins.get(name).and_then(|spec| spec.path.as_ref()).map(|p| p.display().to_string())
}

fn limits_of(config: &crate::config::Config, name: &str) -> Limits {
    config.plugins.get(name).map_or_else(Limits::default, |spec| spec.limits)
}

/// `contract`: the `berry:gateway` version the plugin exports (0.1 ones are adapted).
fn describe(c: &CompiledPlugin, contract: &str, kind: &str, limits: &Limits) -> Value {
    let stats = &c.stats;
    let loaded_ms = c.loaded_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    json!({
        "name": &*c.name,
        "kind": kind,
        "source": &*c.source,
        "sha256": &*c.hash,
        "sdk_version": c.sdk_version.as_deref(),
        "contract": contract,
        "loaded_at_ms": loaded_ms,
        "calls": stats.calls.load(Ordering::Relaxed),
        "failures": stats.failures.load(Ordering::Relaxed),
        "input_failures": stats.input_failures.load(Ordering::Relaxed),
        "consecutive_failures": stats.consecutive_failures.load(Ordering::Relaxed),
        "quarantined": stats.quarantined(now_ms()),
        "quarantines": stats.quarantines.load(Ordering::Relaxed),
        "last_error": stats.last_error(),
        "invalid_answers": stats.invalid_answers.load(Ordering::Relaxed),
        "last_invalid_answer": stats.last_invalid_answer.lock().map(|l| l.clone()).unwrap_or_default(),
        "fallbacks": stats.fallbacks.load(Ordering::Relaxed),
        "trial": stats.trial.lock().map(|t| t.clone()).unwrap_or_default(),
        "limits": {
            "fuel": limits.fuel,
            "memory_bytes": limits.memory_bytes,
            "deadline_ms": limits.deadline.as_millis() as u64,
            "quarantine_after": limits.quarantine_after,
            "quarantine_seconds": limits.quarantine.as_secs_f64(),
        },
    })
}
