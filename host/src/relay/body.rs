//! The request body, parsed only as far as routing needs, and rewritten for the
//! upstream with every byte preserved except the `model` value (mapped to the
//! provider's name) and the debug `backend` field (removed).

use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::GatewayError;

/// What the gateway reads from a request body.
#[derive(Debug)]
pub struct RequestBody {
    bytes: Bytes,
    /// Shared with the request's log line, which may outlive the body.
    pub model: std::sync::Arc<str>,
    pub stream: bool,
    /// `stream_options.include_usage`: the client wants a usage chunk at the end.
    pub include_usage: bool,
    /// The debug `backend` pin, as written ("provider" or "provider:model").
    pub backend: Option<String>,
    /// The output cap the client asked for (`max_tokens`, `max_completion_tokens`,
    /// `max_output_tokens`): what a budget reserves for the answer.
    pub max_output_tokens: Option<u64>,
    /// Byte range of the `model` value (including its quotes) in `bytes`.
    model_span: (usize, usize),
    /// Byte range of the `backend` member, with the comma that separated it.
    backend_span: Option<(usize, usize)>,
}

impl RequestBody {
    /// Parse a JSON object body. Only top-level members are looked at; nested
    /// values stay raw and are never re-encoded.
    pub fn parse(bytes: Bytes) -> Result<RequestBody, GatewayError> {
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| GatewayError::bad_request("invalid_json", "Request body is not valid UTF-8."))?;
        let members = parse_members(text).map_err(|e| {
            GatewayError::bad_request("invalid_json", format!("Request body is not a valid JSON object: {e}"))
        })?;
        // Parsers disagree on which of two equal keys wins: the gateway would route on
        // one `model` and the provider read another. Refuse the ambiguity.
        if let Some(key) = duplicate_key(&members) {
            return Err(GatewayError::bad_request(
                "duplicate_key",
                format!("Request body has the key {key:?} more than once."),
            ));
        }
        let mut model = None;
        let mut stream = false;
        let mut include_usage = false;
        let mut backend = None;
        let mut backend_member = None;
        let mut max_output_tokens = None;
        for (i, m) in members.iter().enumerate() {
            match &*m.key {
                "max_tokens" | "max_completion_tokens" | "max_output_tokens" => {
                    // Validation is the provider's: a value that is not a count reserves nothing.
                    if let Ok(n) = serde_json::from_str::<u64>(m.value.get()) {
                        max_output_tokens = Some(max_output_tokens.map_or(n, |o: u64| o.max(n)));
                    }
                }
                "model" => {
                    let name: String = serde_json::from_str(m.value.get()).map_err(|_| {
                        GatewayError::bad_request("invalid_model", "'model' must be a string.").with_param("model")
                    })?;
                    model = Some((name, span_of(text, m.value.get())));
                }
                "stream" => {
                    stream = serde_json::from_str::<Option<bool>>(m.value.get())
                        .map_err(|_| {
                            GatewayError::bad_request("invalid_stream", "'stream' must be a boolean.")
                                .with_param("stream")
                        })?
                        .unwrap_or(false);
                }
                "stream_options" => {
                    include_usage = serde_json::from_str::<serde_json::Value>(m.value.get())
                        .ok()
                        .and_then(|v| v.get("include_usage")?.as_bool())
                        .unwrap_or(false);
                }
                "backend" => {
                    let pin: String = serde_json::from_str(m.value.get()).map_err(|_| {
                        GatewayError::bad_request("invalid_backend", "'backend' must be a string.")
                            .with_param("backend")
                    })?;
                    backend = Some(pin);
                    backend_member = Some(i);
                }
                _ => {}
            }
        }
        let Some((model, model_span)) =
            model.map(|(name, span): (String, _)| (std::sync::Arc::<str>::from(name), span))
        else {
            return Err(
                GatewayError::bad_request("missing_model", "Request body must include 'model'.").with_param("model")
            );
        };
        let backend_span = backend_member.map(|i| member_span(text, &members, i));
        Ok(RequestBody { bytes, model, stream, include_usage, backend, max_output_tokens, model_span, backend_span })
    }

    /// The body as the client sent it.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The body to send upstream: the same bytes with `model` set to `upstream_model`
    /// and the `backend` member cut out.
    pub fn for_upstream(&self, upstream_model: &str) -> Bytes {
        let mut cuts = [(self.model_span, true), self.backend_span.map_or(((0, 0), false), |span| (span, false))];
        if self.backend_span.is_none() {
            cuts[1] = cuts[0];
        }
        cuts.sort_by_key(|((start, _), _)| *start);
        let mut out = Vec::with_capacity(self.bytes.len() + upstream_model.len() + 2);
        let mut pos = 0;
        for ((start, end), is_model) in cuts {
            if start < pos {
                continue; // the same cut twice (no backend member)
            }
            out.extend_from_slice(&self.bytes[pos..start]);
            if is_model {
                // A JSON string, escaped; writing into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut out, upstream_model);
            }
            pos = end;
        }
        out.extend_from_slice(&self.bytes[pos..]);
        Bytes::from(out)
    }
}

struct Member<'a> {
    key: std::borrow::Cow<'a, str>,
    value: &'a RawValue,
}

/// Byte range of `inner` (a slice borrowed from `outer`) within `outer`.
fn span_of(outer: &str, inner: &str) -> (usize, usize) {
    let start = inner.as_ptr() as usize - outer.as_ptr() as usize;
    (start, start + inner.len())
}

/// The span to delete to remove member `i`: from the end of the previous value (so
/// its separating comma goes too) to the end of this value; for the first member,
/// from the opening brace to the start of the next key.
fn member_span(text: &str, members: &[Member], i: usize) -> (usize, usize) {
    let (_, value_end) = span_of(text, members[i].value.get());
    if i > 0 {
        let (_, prev_end) = span_of(text, members[i - 1].value.get());
        (prev_end, value_end)
    } else {
        let open = text.find('{').map_or(0, |p| p + 1);
        match members.get(1) {
            // Up to the next key's opening quote: the text between is `, ` or similar.
            Some(next) => {
                let (next_start, _) = span_of(text, next.value.get());
                let key_start = text[value_end..next_start].find('"').map_or(value_end, |p| value_end + p);
                (open, key_start)
            }
            None => (open, value_end),
        }
    }
}

/// A top-level key that appears twice, if any.
fn duplicate_key<'a>(members: &'a [Member]) -> Option<&'a str> {
    // Bodies have a handful of keys: compare pairwise; a hostile body with thousands
    // of keys gets a hash set instead of quadratic work.
    if members.len() <= 16 {
        return members
            .iter()
            .enumerate()
            .find(|(i, m)| members[..*i].iter().any(|earlier| earlier.key == m.key))
            .map(|(_, m)| &*m.key);
    }
    let mut seen = std::collections::HashSet::with_capacity(members.len());
    members.iter().find(|m| !seen.insert(&*m.key)).map(|m| &*m.key)
}

/// A key, borrowed from the body unless it had escapes to decode.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

fn parse_members(text: &str) -> Result<Vec<Member<'_>>, serde_json::Error> {
    struct MembersVisitor;
    impl<'de> Visitor<'de> for MembersVisitor {
        type Value = Vec<Member<'de>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut members = Vec::with_capacity(8);
            while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                let value: &'de RawValue = map.next_value()?;
                members.push(Member { key, value });
            }
            Ok(members)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let members = (&mut de).deserialize_map(MembersVisitor)?;
    de.end()?;
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> RequestBody {
        match RequestBody::parse(Bytes::from(s.to_string())) {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn replaces_only_the_model_value() {
        let body = parse(
            r#"{ "z": 1.50, "model" : "gpt-4", "messages":[{"role":"user","content":"hi"}], "a": {"model":"x"} }"#,
        );
        assert_eq!(&*body.model, "gpt-4");
        assert!(!body.stream);
        let out = body.for_upstream("real-model");
        assert_eq!(
            std::str::from_utf8(&out).ok(),
            Some(
                r#"{ "z": 1.50, "model" : "real-model", "messages":[{"role":"user","content":"hi"}], "a": {"model":"x"} }"#
            )
        );
    }

    #[test]
    fn removes_backend_wherever_it_is() {
        for (input, expected) in [
            (r#"{"backend":"p","model":"m","x":1}"#, r#"{"model":"u","x":1}"#),
            (r#"{"model":"m","backend":"p:q","x":1}"#, r#"{"model":"u","x":1}"#),
            (r#"{"model":"m","x":1,"backend":"p"}"#, r#"{"model":"u","x":1}"#),
            (r#"{"backend":"p","model":"m"}"#, r#"{"model":"u"}"#),
        ] {
            let body = parse(input);
            assert!(body.backend.is_some());
            let out = body.for_upstream("u");
            assert_eq!(std::str::from_utf8(&out).ok(), Some(expected), "input {input}");
            assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok());
        }
    }

    #[test]
    fn duplicate_keys_are_found_in_small_and_large_bodies() {
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let large = format!("{{\"model\":\"m\",{},\"k7\":0}}", many.join(","));
        let err = RequestBody::parse(Bytes::from(large)).err().map(|e| e.code);
        assert_eq!(err, Some("duplicate_key"));
        let fine = format!("{{\"model\":\"m\",{}}}", many.join(","));
        assert!(RequestBody::parse(Bytes::from(fine)).is_ok());
    }

    #[test]
    fn reads_stream_and_rejects_bad_bodies() {
        assert!(parse(r#"{"model":"m","stream":true}"#).stream);
        assert!(!parse(r#"{"model":"m","stream":null}"#).stream);
        for bad in [
            r#"{"model":"m""#,
            "[]",
            r#"{"messages":[]}"#,
            r#"{"model":5}"#,
            "{} {}",
            "",
            r#"{"model":"a","model":"b"}"#,
            r#"{"model":"a","stream":true,"x":1,"stream":false}"#,
        ] {
            let err = RequestBody::parse(Bytes::from(bad.to_string())).err();
            assert_eq!(err.map(|e| e.status.as_u16()), Some(400), "input {bad:?}");
        }
    }
}
