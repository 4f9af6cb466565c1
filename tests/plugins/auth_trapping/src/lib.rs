//! An auth policy that traps on every call: requests must be denied, not admitted.

use berry_plugin_sdk::auth::{AuthPolicy, AuthRequest, Denial, Principal, UserInfo};

struct AuthTrapping;

impl AuthPolicy for AuthTrapping {
    fn new(_config: &str, _users: Vec<UserInfo>) -> Result<Self, String> {
        Ok(AuthTrapping)
    }

    fn authorize(&self, request: &AuthRequest) -> Result<Principal, Denial> {
        panic!("auth_trapping: cannot judge a token of {} bytes", request.token.len())
    }
}

berry_plugin_sdk::export_auth!(AuthTrapping);
