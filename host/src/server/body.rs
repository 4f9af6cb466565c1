//! The response body type of every handler.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};

/// Streams are relayed frame by frame; errors inside a stream are turned into an SSE
/// error event by the relay, so the body itself never fails.
pub type BerryBody = UnsyncBoxBody<Bytes, std::convert::Infallible>;

pub fn full(bytes: impl Into<Bytes>) -> BerryBody {
    Full::new(bytes.into()).boxed_unsync()
}

pub fn json_response(status: http::StatusCode, value: &serde_json::Value) -> http::Response<BerryBody> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut response = http::Response::new(full(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}
