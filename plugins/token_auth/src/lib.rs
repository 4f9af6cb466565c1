//! `token_auth`: the stock auth policy. A caller presents a bearer token (or
//! `x-api-key`); it is matched against the `[users.*]` table by its SHA-256, so
//! no comparison ever touches the token itself (timing cannot leak it byte by byte)
//! and configs may hold only `token_sha256`. A user tagged `admin` may pin backends
//! and read admin data.

use berry_plugin_sdk::auth::{AuthPolicy, AuthRequest, Denial, Principal, UserIndex, UserInfo};

struct TokenAuth {
    users: UserIndex,
}

impl AuthPolicy for TokenAuth {
    fn new(_config: &str, users: Vec<UserInfo>) -> Result<Self, String> {
        Ok(TokenAuth { users: UserIndex::new(users)? })
    }

    fn authorize(&self, request: &AuthRequest) -> Result<Principal, Denial> {
        if request.token.is_empty() {
            return Err(Denial::unauthorized(
                "missing_api_key",
                "No API key provided. Send it as 'Authorization: Bearer <key>' or 'x-api-key'.",
            ));
        }
        let Some(user) = self.users.find(&request.token) else {
            return Err(Denial::unauthorized("invalid_api_key", "Incorrect API key provided."));
        };
        if !user.enabled {
            return Err(Denial::unauthorized("user_disabled", "This API key belongs to a disabled user."));
        }
        Ok(Principal::of(user))
    }
}

berry_plugin_sdk::export_auth!(TokenAuth);
