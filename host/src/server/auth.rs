//! The authenticate phase: credentials → the auth plugin → a principal or an error.

use std::sync::Arc;

use http::HeaderMap;

use crate::error::GatewayError;
use crate::gateway::Snapshot;
use crate::plugin::auth::wit;

/// Headers a policy never sees, even if it asks: the credentials travel in `token`.
const WITHHELD: &[&str] = &["authorization", "x-api-key", "cookie", "proxy-authorization"];
/// Bounds on what is handed to the policy, so a hostile client cannot make the
/// per-request plugin call expensive.
const MAX_HEADERS: usize = 32;
const MAX_HEADER_VALUE: usize = 1024;
/// Longest credential handed to a policy. Real API keys are under 200 bytes; a
/// longer one is refused here, so no caller can make the policy's work (hashing, in
/// the sandbox, under its fuel budget) as large as it likes.
pub const MAX_CREDENTIAL_BYTES: usize = 4096;

/// The caller's token: `Authorization: Bearer …` (the scheme in any case, as
/// RFC 9110 says), else `x-api-key`.
pub fn token(headers: &HeaderMap) -> &str {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_start().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim)).unwrap_or("")
}

pub fn authenticate(
    snapshot: &Snapshot,
    headers: &HeaderMap,
    model: &str,
) -> Result<Arc<wit::Principal>, GatewayError> {
    let token = token(headers);
    if token.len() > MAX_CREDENTIAL_BYTES {
        return Err(GatewayError::unauthorized("invalid_api_key", "Incorrect API key provided."));
    }
    // Only the headers the policy asked for (none, for token_auth): each one is two
    // strings copied into the sandbox on every request.
    let wanted = snapshot.auth.headers();
    let passed: Vec<(String, String)> = if wanted.is_empty() {
        Vec::new()
    } else {
        headers
            .iter()
            .filter(|(name, value)| {
                let name = name.as_str();
                wanted.iter().any(|w| w == name) && !WITHHELD.contains(&name) && value.len() <= MAX_HEADER_VALUE
            })
            .filter_map(|(name, value)| Some((name.as_str().to_string(), value.to_str().ok()?.to_string())))
            .take(MAX_HEADERS)
            .collect()
    };
    // Everything the policy sees is the cache key: the same input, the same answer.
    let key: std::borrow::Cow<'_, str> = if passed.is_empty() && model.is_empty() {
        token.into()
    } else {
        let mut key = format!("{token}\u{0}{model}");
        for (name, value) in &passed {
            key.push_str(&format!("\u{0}{name}\u{0}{value}"));
        }
        key.into()
    };
    let request = || wit::AuthRequest { token: token.to_string(), model: model.to_string(), headers: passed };
    match snapshot.auth.authorize(&key, request) {
        Ok(Ok(principal)) => Ok(principal),
        Ok(Err(denial)) => Err(GatewayError::denied(denial.status, &denial.code, denial.message)),
        // The policy could not judge these credentials (it judges others): refuse
        // this caller only.
        Err(e @ crate::plugin::PluginError::Input { .. }) => {
            tracing::debug!("auth policy failed on this request, denying it: {e}");
            Err(GatewayError::unauthorized("invalid_api_key", "The credentials could not be verified."))
        }
        Err(e) => {
            tracing::error!("auth policy failed, denying: {e}");
            Err(GatewayError::plugin_unavailable("auth policy"))
        }
    }
}

/// Whether `principal` may use `model` (an empty list allows every model).
pub fn allowed(principal: &wit::Principal, model: &str) -> bool {
    principal.allowed_models.is_empty() || principal.allowed_models.iter().any(|m| m == model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let with = |name: &'static str, value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(name, http::HeaderValue::from_static(value));
            token(&headers).to_string()
        };
        for value in ["Bearer tok", "bearer tok", "BEARER tok", "BeArEr   tok ", " Bearer tok"] {
            assert_eq!(with("authorization", value), "tok", "{value:?}");
        }
        assert_eq!(with("authorization", "Basic dG9r"), "");
        assert_eq!(with("authorization", "Bearertok"), "");
        assert_eq!(with("x-api-key", "tok"), "tok");
    }
}
