//! The stream-back phase per chunk: upstream SSE frames handed to the client as
//! they arrive (with the on-the-side scan for `usage`), fed from memory so only
//! Berry's own work is measured, not a socket.

#![allow(clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use berry::relay::stream::{Finish, Relay, Upstream, relay_stream};
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
                let frames: Vec<_> =
                    frames.iter().map(|f| Ok::<_, Infallible>(http_body::Frame::data(f.clone()))).collect();
                let upstream = StreamBody::new(futures_util::stream::iter(frames));
                let finish = Finish::new(
                    route.clone(),
                    0,
                    snapshot.policy,
                    Upstream {
                        first_byte_ms: 3.0,
                        started: std::time::Instant::now(),
                        operation: Some(berry::metrics::genai::Operation::Chat),
                    },
                    route.backends[0].health.start(),
                    RequestLog::new(
                        http::HeaderValue::from_static("req_bench"),
                        ([127, 0, 0, 1], 9).into(),
                        http::Method::POST,
                        http::Uri::from_static("/v1/chat/completions"),
                        snapshot.metrics.clone(),
                    ),
                );
                let relay = Relay {
                    first: None,
                    translator: None,
                    usage: Default::default(),
                    idle_timeout: Duration::from_secs(30),
                    closing: tokio_util::sync::CancellationToken::new(),
                    dialect: berry::adapter::Dialect::OpenAi,
                    h2_write_timeout: None,
                    redactor: snapshot.redactor.clone(),
                };
                let mut body = relay_stream(upstream, finish, relay);
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

/// Stream translation per event, fed from memory: a typical text delta in each
/// provider's format, through the translator a request to it uses.
fn translate(c: &mut Criterion) {
    use berry::adapter::StreamTranslator;
    let anthropic = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\
                     \"delta\":{\"type\":\"text_delta\",\"text\":\"token of a streamed answer \"}}\n\n";
    let gemini = "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\
                  \"token of a streamed answer \"}]},\"index\":0}],\"modelVersion\":\"gemini-x\",\"responseId\":\"r1\"}\r\n\r\n";
    let openai = "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\
                  \"model\":\"mock\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"token of a streamed answer \"},\
                  \"finish_reason\":null}]}\n\n";
    let mut group = c.benchmark_group("stream_translate");
    group.throughput(Throughput::Elements(1));
    type Make = fn() -> Box<dyn StreamTranslator>;
    let cases: [(&str, &str, Make); 3] = [
        ("anthropic_to_openai", anthropic, || Box::new(berry::adapter::anthropic::stream::ToChat::new("m", false))),
        ("gemini_to_openai", gemini, || Box::new(berry::adapter::gemini::stream::ToChat::new("m", false))),
        ("openai_to_anthropic", openai, || Box::new(berry::adapter::inbound::stream::FromChat::new("m"))),
    ];
    for (name, event, make) in cases {
        let mut translator = make();
        let mut out = Vec::with_capacity(1024);
        group.bench_function(BenchmarkId::new(name, "per_event"), |b| {
            b.iter(|| {
                out.clear();
                let _ = translator.feed(black_box(event.as_bytes()), &mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, sse, translate);
criterion_main!(benches);
