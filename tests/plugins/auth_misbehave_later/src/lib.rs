//! An auth policy that admits the configured users by token until the host's clock
//! reaches `from_ms` (its config, `{"from_ms": …}`), then panics on every call.

use berry_plugin_sdk::auth::{AuthPolicy, AuthRequest, Denial, Principal, UserIndex, UserInfo};

struct AuthMisbehaveLater {
    users: UserIndex,
    from_ms: u64,
}

impl AuthPolicy for AuthMisbehaveLater {
    fn new(config: &str, users: Vec<UserInfo>) -> Result<Self, String> {
        let from_ms = config
            .split("\"from_ms\":")
            .nth(1)
            .and_then(|rest| rest.trim_start().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .ok_or("config: from_ms missing")?;
        Ok(AuthMisbehaveLater { users: UserIndex::new(users)?, from_ms })
    }

    fn authorize(&self, request: &AuthRequest) -> Result<Principal, Denial> {
        if berry_plugin_sdk::now_ms() >= self.from_ms {
            panic!("auth_misbehave_later: cannot judge a token of {} bytes", request.token.len());
        }
        let user = self.users.find(&request.token).filter(|u| u.enabled);
        user.map(Principal::of).ok_or_else(|| Denial::unauthorized("invalid_api_key", "Incorrect API key provided."))
    }
}

berry_plugin_sdk::export_auth!(AuthMisbehaveLater);
