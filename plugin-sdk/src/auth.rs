//! Auth policies: implement [`AuthPolicy`], then call
//! [`export_auth!`](crate::export_auth).

use std::cell::RefCell;

use crate::bindings::auth::exports::berry::gateway::auth as wit;

pub use wit::{AuthRequest, Denial, Principal, RateLimits, UserInfo};

/// An authentication and authorization policy.
///
/// [`AuthPolicy::new`] runs once per configuration change with the plugin's own
/// configuration (JSON text) and the configured users; [`AuthPolicy::authorize`]
/// runs once per request. The host itself checks the principal's allowed models
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
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"berry-token", b"berry-token"));
        assert!(!constant_time_eq(b"berry-token", b"berry-tokem"));
        assert!(!constant_time_eq(b"berry-token", b"berry-toke"));
        assert!(constant_time_eq(b"", b""));
    }
}
