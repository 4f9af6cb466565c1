//! Secrets out of provider text: a provider that echoes Berry's key back (in an
//! error body, an SSE error event, a header) must not hand it to the client or to
//! the log. Every configured provider key, user token and the admin token is
//! replaced by `[redacted]` in what Berry relays or logs of a provider's failures:
//! error bodies, SSE error events, relayed headers, error messages.
//!
//! Successful answers pass through byte for byte: a 2xx body, and every stream
//! event that is not an error, are never rewritten (they are the model's output,
//! and rewriting them would cost every request).

use std::borrow::Cow;

use aho_corasick::AhoCorasick;
use bytes::Bytes;

/// Shorter values are not treated as secrets: redacting them would mangle ordinary
/// text, and no real key is that short.
const MIN_SECRET_BYTES: usize = 8;

pub const REDACTED: &str = "[redacted]";

#[derive(Default)]
pub struct Redactor {
    /// `None` when there is nothing to look for.
    secrets: Option<AhoCorasick>,
}

impl Redactor {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut patterns: Vec<&str> = secrets.into_iter().filter(|s| s.len() >= MIN_SECRET_BYTES).collect();
        // Longest first, so a key that contains another is replaced whole.
        patterns.sort_by_key(|p| std::cmp::Reverse(p.len()));
        patterns.dedup();
        let secrets = (!patterns.is_empty())
            .then(|| {
                aho_corasick::AhoCorasick::builder()
                    .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                    .build(&patterns)
                    .ok()
            })
            .flatten();
        Redactor { secrets }
    }

    /// `text` with every secret replaced.
    pub fn text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match &self.secrets {
            Some(ac) if ac.is_match(text) => Cow::Owned(ac.replace_all(text, &vec![REDACTED; ac.patterns_len()])),
            _ => Cow::Borrowed(text),
        }
    }

    /// `bytes` with every secret replaced (the same bytes, uncopied, when none is in them).
    pub fn bytes(&self, bytes: Bytes) -> Bytes {
        match &self.secrets {
            Some(ac) if ac.is_match(&bytes[..]) => {
                Bytes::from(ac.replace_all_bytes(&bytes, &vec![REDACTED.as_bytes(); ac.patterns_len()]))
            }
            _ => bytes,
        }
    }

    /// A stream chunk: only the lines of error events (those that say "error") are
    /// looked at (see the module comment).
    pub fn stream_chunk(&self, chunk: Bytes) -> Bytes {
        let Some(ac) = &self.secrets else { return chunk };
        if memchr::memmem::find(&chunk, b"error").is_none() || !ac.is_match(&chunk[..]) {
            return chunk;
        }
        let mut out = Vec::with_capacity(chunk.len());
        for line in chunk.split_inclusive(|&b| b == b'\n') {
            if memchr::memmem::find(line, b"error").is_some() {
                out.extend_from_slice(&ac.replace_all_bytes(line, &vec![REDACTED.as_bytes(); ac.patterns_len()]));
            } else {
                out.extend_from_slice(line);
            }
        }
        Bytes::from(out)
    }

    /// A header value with every secret replaced.
    pub fn header(&self, value: &http::HeaderValue) -> http::HeaderValue {
        match &self.secrets {
            Some(ac) if ac.is_match(value.as_bytes()) => {
                let cleaned = ac.replace_all_bytes(value.as_bytes(), &vec![REDACTED.as_bytes(); ac.patterns_len()]);
                http::HeaderValue::from_bytes(&cleaned).unwrap_or_else(|_| http::HeaderValue::from_static(REDACTED))
            }
            _ => value.clone(),
        }
    }
}

/// The secrets of a configuration: provider keys (and provider headers that carry
/// credentials), user tokens, the admin token.
pub fn of_config(config: &crate::config::Config) -> Redactor {
    let credential = |name: &str| ["key", "token", "auth", "secret"].iter().any(|w| name.contains(w));
    let providers = config.providers.values().flat_map(|p| {
        std::iter::once(p.api_key.expose())
            .chain(p.headers.iter().filter(|(n, _)| credential(n.as_str())).filter_map(|(_, v)| v.to_str().ok()))
            // A proxy's password (`http://user:password@host`).
            .chain(match &p.proxy {
                crate::config::Proxy::Via(url) => url_password(url.expose()),
                _ => None,
            })
    });
    let users = config.users.iter().filter_map(|u| u.token.as_ref().map(|t| t.expose()));
    let admin = config.settings.admin_token.iter().map(|t| t.expose());
    // The Redis password (`redis://user:password@host`), should an error quote the URL.
    let redis = config.cluster.iter().filter_map(|c| url_password(c.redis_url.expose()));
    Redactor::new(providers.chain(users).chain(admin).chain(redis))
}

/// The password of a `scheme://user:password@host…` URL.
fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.split_once('@')?.0;
    Some(userinfo.rsplit_once(':').map_or(userinfo, |(_, password)| password)).filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redis_password_is_found_in_its_url() {
        assert_eq!(url_password("redis://:hunter2-long@host:6379"), Some("hunter2-long"));
        assert_eq!(url_password("rediss://user:pa:ss@host:6379/0"), Some("ss"));
        assert_eq!(url_password("redis://tokenonly@host"), Some("tokenonly"));
        assert_eq!(url_password("redis://host:6379"), None);
        assert_eq!(url_password("redis://user:@host"), None);
    }

    #[test]
    fn secrets_are_replaced_wherever_they_appear() {
        let r = Redactor::new(["sk-live-abcdef123456", "sk-live-abcdef", "short"]);
        assert_eq!(r.text("key sk-live-abcdef123456 is bad"), "key [redacted] is bad");
        assert_eq!(r.text("key sk-live-abcdef is bad"), "key [redacted] is bad");
        assert_eq!(r.text("a short word"), "a short word", "values under 8 bytes are not secrets");
        let clean = Bytes::from_static(b"data: {\"x\":1}\n\n");
        assert_eq!(r.stream_chunk(clean.clone()).as_ptr(), clean.as_ptr(), "untouched and uncopied");
        let leaky = Bytes::from_static(b"data: {\"content\":\"sk-live-abcdef123456\"}\n\n");
        assert_eq!(r.stream_chunk(leaky.clone()), leaky, "a successful event passes byte for byte");
        let error = Bytes::from_static(b"data: {\"error\":{\"message\":\"bad key sk-live-abcdef123456\"}}\n\n");
        assert_eq!(&r.stream_chunk(error)[..], b"data: {\"error\":{\"message\":\"bad key [redacted]\"}}\n\n");
        let both = Bytes::from_static(
            b"data: {\"c\":\"sk-live-abcdef123456\"}\n\ndata: {\"error\":\"sk-live-abcdef123456\"}\n\n",
        );
        assert_eq!(
            &r.stream_chunk(both)[..],
            b"data: {\"c\":\"sk-live-abcdef123456\"}\n\ndata: {\"error\":\"[redacted]\"}\n\n",
            "only the error event's lines"
        );
        let header = http::HeaderValue::from_static("req sk-live-abcdef123456");
        assert_eq!(r.header(&header), "req [redacted]");
        assert_eq!(Redactor::default().text("sk-live-abcdef123456"), "sk-live-abcdef123456");
    }
}
