//! `tenant_auth`: API keys per tenant, each tenant with its own model list.
//!
//! ```toml
//! [plugins.tenant_auth]
//! path = "examples/target/wasm32-wasip2/release/tenant_auth.wasm"
//! kind = "auth"
//! [plugins.tenant_auth.config.tenants.acme]
//! keys_sha256 = ["<sha256 hex of the key>"]
//! models = ["gpt-4o"]
//! tags = ["enterprise"]
//!
//! [auth]
//! policy = "tenant_auth"
//! ```
//!
//! The caller's key is hashed and looked up; the principal is `tenant:<name>` with
//! the tenant's models and tags. Keys are configured only as hashes.
//!
//! With `tenant_header = "x-tenant"` in the config, callers must also name their
//! tenant in that header, and a key used under another tenant's name is refused
//! (403): a leaked key cannot be used by mistake against the wrong account. The
//! policy asks the host for that one header (`AuthPolicy::headers`).

use std::collections::BTreeMap;

use berry_plugin_sdk::auth::{AuthPolicy, AuthRequest, Denial, Principal, RateLimits, UserInfo};
use serde::Deserialize;
use berry_plugin_sdk::sha256::sha256_hex;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    tenants: BTreeMap<String, Tenant>,
    #[serde(default)]
    tenant_header: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Tenant {
    keys_sha256: Vec<String>,
    models: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    requests_per_minute: Option<u32>,
}

struct TenantAuth {
    /// SHA-256 of a key → tenant name.
    keys: BTreeMap<String, String>,
    tenants: BTreeMap<String, Tenant>,
    /// The header callers name their tenant in, lowercase; `None`: not required.
    tenant_header: Option<String>,
}

impl AuthPolicy for TenantAuth {
    fn new(config: &str, _users: Vec<UserInfo>) -> Result<Self, String> {
        let config: Config = serde_json::from_str(config).map_err(|e| format!("tenant_auth config: {e}"))?;
        let mut keys = BTreeMap::new();
        for (name, tenant) in &config.tenants {
            for key in &tenant.keys_sha256 {
                let key = key.to_ascii_lowercase();
                if key.len() != 64 || !key.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return Err(format!("tenant {name}: keys_sha256 entries must be 64 hex digits"));
                }
                if keys.insert(key, name.clone()).is_some() {
                    return Err(format!("tenant {name}: a key is listed twice"));
                }
            }
        }
        let tenant_header = config.tenant_header.map(|h| h.to_ascii_lowercase());
        Ok(TenantAuth { keys, tenants: config.tenants, tenant_header })
    }

    fn authorize(&self, request: &AuthRequest) -> Result<Principal, Denial> {
        if request.token.is_empty() {
            return Err(Denial::unauthorized("missing_api_key", "No API key provided."));
        }
        let hash = sha256_hex(request.token.as_bytes());
        let Some(name) = self.keys.get(&hash) else {
            return Err(Denial::unauthorized("invalid_api_key", "Incorrect API key provided."));
        };
        if let Some(header) = &self.tenant_header {
            let named = request.headers.iter().find(|(k, _)| k == header).map(|(_, v)| v.as_str());
            if named != Some(name.as_str()) {
                return Err(Denial::forbidden("tenant_mismatch", "This API key does not belong to the tenant named."));
            }
        }
        let tenant = &self.tenants[name];
        Ok(Principal {
            id: format!("tenant:{name}"),
            allowed_models: tenant.models.clone(),
            tags: tenant.tags.clone(),
            limits: RateLimits { per_minute: tenant.requests_per_minute, per_hour: None, per_day: None },
            admin: false,
        })
    }

    fn headers(&self) -> Vec<String> {
        self.tenant_header.iter().cloned().collect()
    }
}

berry_plugin_sdk::export_auth!(TenantAuth);
