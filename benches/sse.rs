//! The stream-back phase per chunk: upstream SSE frames handed to the client as
//! they arrive (with the on-the-side scan for `usage`), fed from memory so only
//! Berry's own work is measured, not a socket.

#![allow(clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use berry::health::now_ms;
use berry::relay::stream::{Finish, relay_stream};
use berry::server::context::RequestLog;
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt, StreamBody};

/// One OpenAI-style delta event, as providers send them (~200 bytes).
fn chunk(i: usize) -> Bytes {
    Bytes::from(format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\
         \"model\":\"mock\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"token {i} \"}},\
         \"finish_reason\":null}}]}}\n\n"
    ))
}

fn sse(c: &mut Criterion) {
    let rt = common::runtime();
    let gateway = common::gateway(&rt);
    let snapshot = gateway.snapshot();
    let route = snapshot.routes[&common::route_name("smart_ai", 8)].clone();
    let mut group = c.benchmark_group("sse_relay");
    for chunks in [16usize, 256] {
        let frames: Vec<Bytes> = (0..chunks).map(chunk).chain([Bytes::from_static(b"data: [DONE]\n\n")]).collect();
        group.throughput(Throughput::Elements(frames.len() as u64));
        group.bench_with_input(BenchmarkId::new("chunks", chunks), &frames, |b, frames| {
            b.to_async(&rt).iter(|| async {
                let frames: Vec<_> = frames.iter().map(|f| Ok::<_, Infallible>(http_body::Frame::data(f.clone()))).collect();
                let upstream = StreamBody::new(futures_util::stream::iter(frames));
                let finish = Finish::new(
                    route.clone(),
                    0,
                    route.request(true, &[], now_ms()),
                    snapshot.policy,
                    3.0,
                    route.backends[0].health.start(),
                    RequestLog::new(
                        http::HeaderValue::from_static("req_bench"),
                        ([127, 0, 0, 1], 9).into(),
                        http::Method::POST,
                        "/v1/chat/completions".into(),
                        snapshot.metrics.clone(),
                    ),
                );
                let closing = tokio_util::sync::CancellationToken::new();
                let mut body = relay_stream(None, upstream, finish, Duration::from_secs(30), closing);
                let mut bytes = 0;
                while let Some(frame) = body.frame().await {
                    bytes += frame.expect("infallible").into_data().map_or(0, |d| d.len());
                }
                black_box(bytes)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, sse);
criterion_main!(benches);
