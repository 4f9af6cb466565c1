//! Reading a request body: only after the caller is authenticated, bounded in size
//! (413), in time (408) and, all requests together, in memory: every buffered byte
//! holds a permit of the snapshot's body budget until the request is over, and a
//! request that would go over the budget is answered 503 instead of growing the heap.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::GatewayError;

/// A buffered body and its share of the budget (released on drop).
pub struct Upload {
    pub bytes: Bytes,
    _permit: Option<OwnedSemaphorePermit>,
}

/// Read `body` whole. `declared` is its Content-Length, if any (already checked
/// against `limit`): it is reserved up front; a chunked body reserves as it arrives.
pub async fn read(
    body: Incoming,
    declared: Option<u64>,
    limit: usize,
    timeout: Duration,
    budget: &Arc<Semaphore>,
) -> Result<Upload, GatewayError> {
    let mut permit = match declared {
        Some(0) | None => None,
        Some(n) => Some(reserve(budget, n as usize)?),
    };
    let mut reserved = declared.unwrap_or(0) as usize;
    let read = async {
        let mut body = body;
        // One frame (the usual case) is kept as is; more are joined.
        let mut first: Option<Bytes> = None;
        let mut joined: Option<BytesMut> = None;
        let mut total = 0usize;
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|_| GatewayError::bad_request("body_read_error", "Could not read the request body."))?;
            let Ok(data) = frame.into_data() else { continue };
            total += data.len();
            if total > limit {
                return Err(GatewayError::payload_too_large(limit));
            }
            if total > reserved {
                let more = reserve(budget, total - reserved)?;
                match &mut permit {
                    Some(p) => p.merge(more),
                    None => permit = Some(more),
                }
                reserved = total;
            }
            match (&mut first, &mut joined) {
                (None, None) => first = Some(data),
                (Some(f), None) => {
                    let mut j = BytesMut::with_capacity(declared.map_or(f.len() + data.len(), |n| n as usize));
                    j.extend_from_slice(f);
                    j.extend_from_slice(&data);
                    first = None;
                    joined = Some(j);
                }
                (_, Some(j)) => j.extend_from_slice(&data),
            }
        }
        Ok(joined.map(BytesMut::freeze).or(first).unwrap_or_default())
    };
    // A small body usually arrives with the headers: read it without arming a timer,
    // and only a body still on its way gets the deadline.
    let bytes = {
        let mut read = std::pin::pin!(read);
        let first = std::future::poll_fn(|cx| std::task::Poll::Ready(read.as_mut().poll(cx))).await;
        match first {
            std::task::Poll::Ready(result) => result?,
            std::task::Poll::Pending => {
                tokio::time::timeout(timeout, read).await.map_err(|_| GatewayError::timeout_reading_body())??
            }
        }
    };
    Ok(Upload { bytes, _permit: permit })
}

fn reserve(budget: &Arc<Semaphore>, bytes: usize) -> Result<OwnedSemaphorePermit, GatewayError> {
    let n = u32::try_from(bytes).map_err(|_| GatewayError::busy())?;
    budget.clone().try_acquire_many_owned(n).map_err(|_| GatewayError::busy())
}
