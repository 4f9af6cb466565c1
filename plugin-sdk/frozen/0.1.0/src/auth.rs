//! Auth policies: implement [`AuthPolicy`], then call
//! [`export_auth!`](crate::export_auth).

use std::cell::RefCell;

use crate::bindings::auth::exports::berry::gateway::auth as wit;

pub use wit::{AuthRequest, Denial, Principal, RateLimits, UserInfo};

/// An authentication and authorization policy.
///
/// [`AuthPolicy::new`] runs with the plugin's own configuration (JSON text) and the
/// configured users once per instance the host makes (one per core when a
/// configuration is loaded); [`AuthPolicy::authorize`] runs once per request not
/// answered from the host's principal cache. The host itself checks the principal's allowed models
/// against the requested model and enforces its rate limits.
pub trait AuthPolicy: Sized + 'static {
    fn new(config: &str, users: Vec<UserInfo>) -> Result<Self, String>;

    fn authorize(&self, request: &AuthRequest) -> Result<Principal, Denial>;

    /// The request headers `authorize` reads from [`AuthRequest::headers`]. The host
    /// sends only these (asked once, after `new`), so headers cost nothing per
    /// request to a policy that needs none. Credential headers are never sent.
    fn headers(&self) -> Vec<String> {
        Vec::new()
    }
}

impl Denial {
    /// A 401 denial with the given code and message.
    pub fn unauthorized(code: &str, message: &str) -> Self {
        Denial { status: 401, code: code.to_string(), message: message.to_string() }
    }

    /// A 403 denial with the given code and message.
    pub fn forbidden(code: &str, message: &str) -> Self {
        Denial { status: 403, code: code.to_string(), message: message.to_string() }
    }
}

impl Principal {
    /// The principal of a configured user: its id, models, tags and limits; admin
    /// when tagged `admin` (as the stock `token_auth` decides).
    pub fn of(user: &UserInfo) -> Principal {
        Principal {
            id: user.id.clone(),
            allowed_models: user.allowed_models.clone(),
            tags: user.tags.clone(),
            limits: user.limits,
            admin: user.tags.iter().any(|t| t == "admin"),
        }
    }
}

/// The configured users, found by the token a caller presents: plaintext `token`
/// and `token_sha256` users alike. Tokens are compared by their SHA-256 digests,
/// never byte by byte, so response times say nothing about a token's bytes.
pub struct UserIndex {
    by_digest: std::collections::BTreeMap<[u8; 32], UserInfo>,
}

impl UserIndex {
    /// Index `users`; an error names a user whose `token_sha256` is not 64 hex
    /// digits, or whose token another user has too.
    pub fn new(users: Vec<UserInfo>) -> Result<Self, String> {
        let mut by_digest = std::collections::BTreeMap::new();
        for user in users {
            let digest = if !user.token.is_empty() {
                crate::sha256::sha256(user.token.as_bytes())
            } else {
                parse_hex32(&user.token_sha256)
                    .ok_or_else(|| format!("users.{}: token_sha256 is not 64 hex digits", user.id))?
            };
            if by_digest.contains_key(&digest) {
                return Err(format!("users.{}: token is already used by another user", user.id));
            }
            by_digest.insert(digest, user);
        }
        Ok(UserIndex { by_digest })
    }

    /// The user whose token `token` is, enabled or not.
    pub fn find(&self, token: &str) -> Option<&UserInfo> {
        if token.is_empty() {
            return None;
        }
        self.by_digest.get(&crate::sha256::sha256(token.as_bytes()))
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
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

/// Compare two byte strings in time that depends only on their lengths, so a caller
/// cannot learn a token byte by byte from response times.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // `black_box` keeps the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

// === glue called by `export_auth!` ===

thread_local! {
    static LOADED: RefCell<Option<Box<dyn std::any::Any>>> = const { RefCell::new(None) };
}

#[doc(hidden)]
pub fn __configure<T: AuthPolicy>(config: String, users: Vec<UserInfo>) -> Result<Vec<String>, String> {
    crate::install_panic_hook();
    let policy = T::new(&config, users)?;
    let headers = policy.headers().into_iter().map(|h| h.to_ascii_lowercase()).collect();
    LOADED.with(|cell| *cell.borrow_mut() = Some(Box::new(policy)));
    Ok(headers)
}

#[doc(hidden)]
pub fn __authorize<T: AuthPolicy>(request: AuthRequest) -> Result<Principal, Denial> {
    LOADED.with(|cell| match cell.borrow().as_ref().and_then(|b| b.downcast_ref::<T>()) {
        Some(policy) => policy.authorize(&request),
        None => Err(Denial {
            status: 503,
            code: "auth_not_configured".into(),
            message: "auth policy is not configured".into(),
        }),
    })
}

/// Export an [`AuthPolicy`] implementation as the plugin's auth policy.
///
/// ```no_run
/// use berry_plugin_sdk::auth::{AuthPolicy, AuthRequest, Denial, Principal, RateLimits, UserInfo};
///
/// /// Admits one shared key, for every model.
/// struct SharedKey(String);
///
/// impl AuthPolicy for SharedKey {
///     fn new(config: &str, _users: Vec<UserInfo>) -> Result<Self, String> {
///         Ok(SharedKey(config.to_string()))
///     }
///     fn authorize(&self, request: &AuthRequest) -> Result<Principal, Denial> {
///         if !berry_plugin_sdk::auth::constant_time_eq(request.token.as_bytes(), self.0.as_bytes()) {
///             return Err(Denial::unauthorized("invalid_api_key", "Incorrect API key provided."));
///         }
///         let limits = RateLimits { per_minute: None, per_hour: None, per_day: None };
///         Ok(Principal { id: "shared".into(), allowed_models: vec![], tags: vec![], limits, admin: false })
///     }
/// }
///
/// berry_plugin_sdk::export_auth!(SharedKey);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_auth {
    ($ty:ty) => {
        #[doc(hidden)]
        pub struct __BerryAuthExport;

        impl $crate::bindings::auth::exports::berry::gateway::auth::Guest for __BerryAuthExport {
            fn configure(
                config: ::std::string::String,
                users: ::std::vec::Vec<$crate::auth::UserInfo>,
            ) -> ::std::result::Result<::std::vec::Vec<::std::string::String>, ::std::string::String> {
                $crate::auth::__configure::<$ty>(config, users)
            }
            fn authorize(
                request: $crate::auth::AuthRequest,
            ) -> ::std::result::Result<$crate::auth::Principal, $crate::auth::Denial> {
                $crate::auth::__authorize::<$ty>(request)
            }
        }

        $crate::bindings::auth::__export_auth_world!(__BerryAuthExport);
        $crate::__stamp_version!();
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, token: &str, sha: &str, tags: &[&str]) -> UserInfo {
        UserInfo {
            id: id.into(),
            name: id.into(),
            token: token.into(),
            token_sha256: sha.into(),
            allowed_models: vec![],
            enabled: true,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            limits: RateLimits { per_minute: None, per_hour: None, per_day: None },
        }
    }

    #[test]
    fn users_are_found_by_plaintext_or_hashed_tokens() {
        let hashed = crate::sha256::sha256_hex(b"tok-b");
        let index =
            UserIndex::new(vec![user("a", "tok-a", "", &[]), user("b", "", &hashed, &["admin"])]).expect("valid");
        assert_eq!(index.find("tok-a").map(|u| u.id.as_str()), Some("a"));
        assert_eq!(index.find("tok-b").map(|u| u.id.as_str()), Some("b"));
        assert!(index.find("tok-c").is_none() && index.find("").is_none());
        assert!(Principal::of(index.find("tok-b").expect("b")).admin);
        assert!(!Principal::of(index.find("tok-a").expect("a")).admin);
        assert!(UserIndex::new(vec![user("x", "", "zz", &[])]).is_err());
        assert!(UserIndex::new(vec![user("x", "t", "", &[]), user("y", "t", "", &[])]).is_err());
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"berry-token", b"berry-token"));
        assert!(!constant_time_eq(b"berry-token", b"berry-tokem"));
        assert!(!constant_time_eq(b"berry-token", b"berry-toke"));
        assert!(constant_time_eq(b"", b""));
    }
}
