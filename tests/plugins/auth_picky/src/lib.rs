//! An auth policy with a bug one caller can hit: it panics on tokens that start with
//! "boom" and judges every other token correctly. One hostile client must not get
//! it quarantined for everyone.

use berry_plugin_sdk::auth::{AuthPolicy, AuthRequest, Denial, Principal, RateLimits, UserInfo, constant_time_eq};

struct AuthPicky {
    users: Vec<UserInfo>,
}

impl AuthPolicy for AuthPicky {
    fn new(_config: &str, users: Vec<UserInfo>) -> Result<Self, String> {
        Ok(AuthPicky { users })
    }

    fn authorize(&self, request: &AuthRequest) -> Result<Principal, Denial> {
        if request.token.starts_with("boom") {
            panic!("auth_picky: cannot parse this token");
        }
        let user = self
            .users
            .iter()
            .find(|u| u.enabled && constant_time_eq(u.token.as_bytes(), request.token.as_bytes()))
            .ok_or_else(|| Denial::unauthorized("invalid_api_key", "Incorrect API key provided."))?;
        Ok(Principal {
            id: user.id.clone(),
            allowed_models: user.allowed_models.clone(),
            tags: user.tags.clone(),
            limits: RateLimits { per_minute: None, per_hour: None, per_day: None },
            admin: user.tags.iter().any(|t| t == "admin"),
        })
    }
}

berry_plugin_sdk::export_auth!(AuthPicky);
