//! `token_auth`: the stock auth policy. A caller presents a bearer token (or
//! `x-api-key`); it is matched against the `[users.*]` table by its SHA-256, so
//! no comparison ever touches the token itself (timing cannot leak it byte by byte)
//! and configs may hold only `token_sha256`. A user tagged `admin` may pin backends and read admin data.

use std::collections::BTreeMap;

use berry_plugin_sdk::auth::{AuthPolicy, AuthRequest, Denial, Principal, UserInfo};
use sha2::{Digest, Sha256};

struct TokenAuth {
    /// SHA-256 of each token → the user it belongs to.
    by_hash: BTreeMap<[u8; 32], UserInfo>,
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

impl AuthPolicy for TokenAuth {
    fn new(_config: &str, users: Vec<UserInfo>) -> Result<Self, String> {
        let mut by_hash = BTreeMap::new();
        for user in users {
            let hash: [u8; 32] = if !user.token.is_empty() {
                Sha256::digest(user.token.as_bytes()).into()
            } else {
                parse_hex32(&user.token_sha256)
                    .ok_or_else(|| format!("users.{}: token_sha256 is not 64 hex digits", user.id))?
            };
            if by_hash.contains_key(&hash) {
                return Err(format!("users.{}: token is already used by another user", user.id));
            }
            by_hash.insert(hash, user);
        }
        Ok(TokenAuth { by_hash })
    }

    fn authorize(&self, request: &AuthRequest) -> Result<Principal, Denial> {
        if request.token.is_empty() {
            return Err(Denial::unauthorized(
                "missing_api_key",
                "No API key provided. Send it as 'Authorization: Bearer <key>' or 'x-api-key'.",
            ));
        }
        let presented: [u8; 32] = Sha256::digest(request.token.as_bytes()).into();
        // The map compares digests, never the token: how long a lookup takes says
        // something about where a digest sorts, nothing about the token's bytes.
        let Some(user) = self.by_hash.get(&presented) else {
            return Err(Denial::unauthorized("invalid_api_key", "Incorrect API key provided."));
        };
        if !user.enabled {
            return Err(Denial::unauthorized("user_disabled", "This API key belongs to a disabled user."));
        }
        Ok(Principal {
            id: user.id.clone(),
            allowed_models: user.allowed_models.clone(),
            tags: user.tags.clone(),
            limits: user.limits,
            admin: user.tags.iter().any(|t| t == "admin"),
        })
    }
}

berry_plugin_sdk::export_auth!(TokenAuth);
