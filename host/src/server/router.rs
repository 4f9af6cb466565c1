//! Dispatch by method and path; every response gets the request id and one log line.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;

use super::X_REQUEST_ID;
use super::body::BerryBody;
use super::context::{RequestLog, request_id};
use super::{admin, chat, info, plugins, scrape, status};
use crate::adapter::Dialect;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::relay::Endpoint;
use crate::telemetry::clean::clip;

const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("request-id");
/// Time spent in Berry itself on this answer (upstream time and deliberate waits
/// excluded), in milliseconds; for streams, up to the first chunk.
const X_BERRY_OVERHEAD_MS: http::HeaderName = http::HeaderName::from_static("x-berry-overhead-ms");

pub async fn handle(
    gateway: Arc<Gateway>,
    client: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<BerryBody>, Infallible> {
    let id = request_id(request.headers());
    let snapshot = gateway.snapshot();
    let dialect = endpoint_of(request.uri().path()).map_or(Dialect::OpenAi, Endpoint::dialect);
    let mut log =
        RequestLog::new(id.clone(), client, request.method().clone(), request.uri().clone(), snapshot.metrics.clone());
    let result = if request.uri().path().starts_with("/admin/") {
        plugins::handle(&gateway, request).await
    } else {
        dispatch(&snapshot, request, &mut log).await
    };
    let mut response = result.unwrap_or_else(|e| {
        log.error = Some(e.code);
        e.into_response_as(dialect)
    });
    // Anthropic's SDKs read the request id from `request-id`.
    if dialect == Dialect::Anthropic {
        response.headers_mut().insert(REQUEST_ID, id.clone());
    }
    response.headers_mut().insert(X_REQUEST_ID, id);
    let overhead = log.overhead_now();
    log.overhead = Some(overhead);
    response.headers_mut().insert(X_BERRY_OVERHEAD_MS, milliseconds(overhead));
    log.count(response.status().as_u16());
    // A stream took its own line (written when it ends); this writes nothing then.
    log.emit(response.status().as_u16());
    Ok(response)
}

/// `d` in milliseconds with three decimals ("0.087"), written without float
/// formatting (it is on every answer).
fn milliseconds(d: std::time::Duration) -> http::HeaderValue {
    let micros = d.as_micros().min(u128::from(u64::MAX)) as u64;
    let mut digits = [0u8; 24];
    let mut at = digits.len();
    let mut rest = micros;
    for i in 0.. {
        if i == 3 {
            at -= 1;
            digits[at] = b'.';
        }
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 && i >= 3 {
            break;
        }
    }
    http::HeaderValue::from_bytes(&digits[at..]).unwrap_or(http::HeaderValue::from_static("0.000"))
}

async fn dispatch(
    snapshot: &Arc<crate::gateway::Snapshot>,
    request: Request<Incoming>,
    log: &mut RequestLog,
) -> Result<Response<BerryBody>, GatewayError> {
    let method = request.method().clone();
    if let Some(endpoint) = endpoint_of(request.uri().path()) {
        if method != Method::POST {
            return Err(GatewayError::method_not_allowed());
        }
        return chat::relay(snapshot, request, endpoint, log).await;
    }
    let path = request.uri().path();
    if let Some(rest) = path.strip_prefix("/smart-ai/") {
        if method != Method::GET {
            return Err(GatewayError::method_not_allowed());
        }
        let model = match rest {
            "weights" => None,
            _ => match rest.strip_prefix("models/").and_then(|r| r.strip_suffix("/weights")) {
                Some(model) if !model.is_empty() => Some(model),
                _ => {
                    return Err(GatewayError::not_found("unknown_url", format!("Unknown request URL: {}", clip(path))));
                }
            },
        };
        return admin::weights(snapshot, request.headers(), model);
    }
    if let Some(id) = path.strip_prefix("/v1/models/").filter(|id| !id.is_empty()) {
        if method != Method::GET {
            return Err(GatewayError::method_not_allowed());
        }
        return info::model(snapshot, request.headers(), id, log);
    }
    match (request.uri().path(), method) {
        ("/v1/models" | "/models", Method::GET) => info::models(snapshot, request.headers(), log),
        ("/v1/health", Method::GET) => Ok(info::short_health(snapshot)),
        ("/status", Method::GET) => Ok(status::page()),
        ("/status.json", Method::GET) => {
            if snapshot.config.settings.protect_status {
                admin::require_admin(snapshot, request.headers())?;
            }
            Ok(status::data(snapshot).await)
        }
        ("/status/history.json", Method::GET) => {
            if snapshot.config.settings.protect_status {
                admin::require_admin(snapshot, request.headers())?;
            }
            Ok(status::history(snapshot))
        }
        ("/metrics", Method::GET) => {
            if snapshot.config.settings.protect_metrics {
                admin::require_admin(snapshot, request.headers())?;
            }
            Ok(scrape::metrics(snapshot, request.headers().get(http::header::ACCEPT)))
        }
        ("/health", Method::GET) => {
            // The layout of every provider is the admin's to see; load balancers only
            // need the status code, which both forms carry.
            let protected = snapshot.config.settings.protect_health;
            if protected && admin::require_admin(snapshot, request.headers()).is_err() {
                Ok(info::short_health(snapshot))
            } else {
                Ok(info::health(snapshot))
            }
        }
        ("/v1/models" | "/models" | "/v1/health" | "/health", _) => Err(GatewayError::method_not_allowed()),
        (path, _) => Err(GatewayError::not_found("unknown_url", format!("Unknown request URL: {}", clip(path)))),
    }
}

/// The relayed API a path names, if any.
fn endpoint_of(path: &str) -> Option<Endpoint> {
    let path = path.strip_prefix("/v1").unwrap_or(path);
    Some(match path {
        "/chat/completions" => Endpoint::ChatCompletions,
        "/completions" => Endpoint::Completions,
        "/embeddings" => Endpoint::Embeddings,
        "/responses" => Endpoint::Responses,
        "/messages" => Endpoint::Messages,
        "/messages/count_tokens" => Endpoint::CountTokens,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn overhead_is_written_in_milliseconds_with_three_decimals() {
        let ms = |us| super::milliseconds(std::time::Duration::from_micros(us));
        assert_eq!(ms(0), "0.000");
        assert_eq!(ms(87), "0.087");
        assert_eq!(ms(1_234), "1.234");
        assert_eq!(ms(123_456_789), "123456.789");
    }
}
