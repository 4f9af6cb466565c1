//! Traces (issue 21): spans exported over OTLP/HTTP to a real receiver that decodes
//! them with the official OpenTelemetry protobuf definitions; W3C `traceparent`
//! continued from the client to every provider, with export on and off.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berry::mock::{FailMode, MockUpdate};
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use prost::Message;
use serde_json::{Value, json};

use crate::harness::*;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP receiver on 127.0.0.1:0: every span it is sent, decoded, with the
/// resource's `service.name`.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let spans: Arc<Mutex<Vec<(String, Span)>>> = Arc::default();
        let kept = spans.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { return };
                let kept = kept.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let kept = kept.clone();
                        async move {
                            assert_eq!(request.uri().path(), "/v1/traces");
                            assert_eq!(request.headers()["content-type"], "application/x-protobuf");
                            let body = request.into_body().collect().await.expect("body").to_bytes();
                            let export = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                            for resource in export.resource_spans {
                                let attrs = resource.resource.map(|r| r.attributes).unwrap_or_default();
                                let service = attrs
                                    .iter()
                                    .find(|kv| kv.key == "service.name")
                                    .and_then(|kv| text(kv.value.as_ref()))
                                    .unwrap_or_default();
                                for scope in resource.scope_spans {
                                    for span in scope.spans {
                                        kept.lock().expect("spans").push((service.clone(), span));
                                    }
                                }
                            }
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(socket);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Receiver { url, spans }
    }

    /// The spans received, once `n` have arrived (within 10 s).
    async fn wait_for(&self, n: usize) -> Vec<(String, Span)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans = self.spans.lock().expect("spans").clone();
            if spans.len() >= n || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn text(v: Option<&AnyValue>) -> Option<String> {
    match v?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

fn attrs(span: &Span) -> HashMap<String, String> {
    span.attributes.iter().filter_map(|kv| Some((kv.key.clone(), text(kv.value.as_ref())?))).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn header(request: &berry::mock::RecordedRequest, name: &str) -> Option<String> {
    request.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
}

async fn chat_traced(gw: &TestGateway, body: &Value, traceparent: Option<&str>) -> Reply {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(gw.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json");
    if let Some(tp) = traceparent {
        request = request.header("traceparent", tp).header("tracestate", "vendor=opaque");
    }
    send_request(request.body(Full::new(Bytes::from(body.to_string()))).expect("request")).await
}

#[tokio::test]
async fn traces_export_a_span_per_request_and_per_attempt_with_the_genai_attributes() {
    let receiver = Receiver::start().await;
    let (bad, good) = (mock("bad").await, mock("good").await);
    set(&bad, MockUpdate { fail: Some(FailMode::Status(500)), ..Default::default() });
    let mut toml = config("failover", &[("bad", &bad), ("good", &good)], &["priority = 1", "priority = 2"], "");
    toml.push_str(&format!(
        "\n[telemetry]\notlp_endpoint = \"{}\"\nservice_name = \"berry-under-test\"\n",
        receiver.url
    ));
    let gw = TestGateway::start(&toml).await;

    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let reply = chat_traced(&gw, &chat_body("m"), Some(&traceparent)).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let upstream = good.state.last_request().expect("the good backend was asked");
    let sent = header(&upstream, "traceparent").expect("traceparent to the provider");
    assert_eq!(header(&upstream, "tracestate").as_deref(), Some("vendor=opaque"), "tracestate passed on");

    let spans = receiver.wait_for(3).await;
    assert_eq!(spans.len(), 3, "one request span and two attempt spans: {spans:?}");
    assert!(spans.iter().all(|(service, _)| service == "berry-under-test"));
    let spans: Vec<Span> = spans.into_iter().map(|(_, s)| s).collect();
    assert!(spans.iter().all(|s| hex(&s.trace_id) == CLIENT_TRACE), "the client's trace continues");
    let request = spans.iter().find(|s| s.kind == SpanKind::Server as i32).expect("server span");
    assert_eq!(hex(&request.parent_span_id), CLIENT_SPAN, "the request span is the client's child");
    assert_eq!(request.name, "chat m");
    let r = attrs(request);
    assert_eq!(r["gen_ai.operation.name"], "chat");
    assert_eq!(r["gen_ai.request.model"], "m");
    assert_eq!(r["gen_ai.response.model"], "up-model", "{r:?}");
    assert_eq!(r["http.response.status_code"], "200");
    assert_eq!(r["berry.strategy"], "failover");
    assert_eq!(r["berry.fallback_used"], "false");
    assert_eq!(r["berry.attempts"], "2");
    assert_eq!(r["berry.backend"], "good/up-model");
    assert!(r["gen_ai.usage.input_tokens"].parse::<u64>().expect("input tokens") > 0);
    assert!(r["gen_ai.usage.output_tokens"].parse::<u64>().expect("output tokens") > 0);

    let mut attempts: Vec<&Span> = spans.iter().filter(|s| s.kind == SpanKind::Client as i32).collect();
    attempts.sort_by_key(|s| attrs(s)["berry.attempt"].clone());
    assert_eq!(attempts.len(), 2);
    for a in &attempts {
        assert_eq!(a.parent_span_id, request.span_id, "attempts are the request's children");
        let x = attrs(a);
        assert_eq!(x["gen_ai.operation.name"], "chat");
        assert_eq!(x["gen_ai.provider.name"], "openai");
        assert_eq!(x["gen_ai.request.model"], "up-model");
        assert_eq!(x["server.address"], "127.0.0.1");
        assert_eq!(x["berry.strategy"], "failover");
    }
    let (first, second) = (attrs(attempts[0]), attrs(attempts[1]));
    assert_eq!((first["berry.attempt"].as_str(), first["berry.backend"].as_str()), ("1", "bad/up-model"));
    assert_eq!((first["berry.outcome"].as_str(), first["error.type"].as_str()), ("server", "server"));
    assert_eq!((second["berry.attempt"].as_str(), second["berry.outcome"].as_str()), ("2", "success"));
    assert_eq!(second["gen_ai.response.model"], "up-model");
    assert_eq!(second["gen_ai.usage.output_tokens"], r["gen_ai.usage.output_tokens"]);
    // The provider's parent is the attempt that called it.
    assert_eq!(sent, format!("00-{CLIENT_TRACE}-{}-01", hex(&attempts[1].span_id)));
    let bad_sent = header(&bad.state.last_request().expect("bad was asked"), "traceparent").expect("traceparent");
    assert_eq!(bad_sent, format!("00-{CLIENT_TRACE}-{}-01", hex(&attempts[0].span_id)));

    // A stream: its spans end when the stream does, with the usage it reported.
    let body = json!({ "model": "m", "stream": true, "stream_options": { "include_usage": true },
                       "messages": [{ "role": "user", "content": "hi there" }] });
    assert!(stream(&gw.url("/v1/chat/completions"), TOKEN, &body).await.text().contains("[DONE]"));
    let spans = receiver.wait_for(6).await;
    let streamed = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.kind == SpanKind::Server as i32 && hex(&s.trace_id) != CLIENT_TRACE)
        .expect("the stream's request span (a new trace: its client sent none)");
    assert!(streamed.parent_span_id.is_empty(), "a root span");
    let s = attrs(streamed);
    assert!(s["gen_ai.usage.output_tokens"].parse::<u64>().expect("stream usage") > 0, "{s:?}");
    assert!(streamed.end_time_unix_nano > streamed.start_time_unix_nano);
}

#[tokio::test]
async fn traceparent_reaches_the_provider_with_export_off() {
    let (bad, good) = (mock("bad").await, mock("good").await);
    set(&bad, MockUpdate { fail: Some(FailMode::Status(500)), ..Default::default() });
    let gw = TestGateway::start(&config(
        "failover",
        &[("bad", &bad), ("good", &good)],
        &["priority = 1", "priority = 2"],
        "",
    ))
    .await;
    // The caller's context goes on unchanged: the provider's spans hang under the caller's.
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    assert_eq!(chat_traced(&gw, &chat_body("m"), Some(&traceparent)).await.status, 200);
    let sent = |m: &berry::mock::MockServer| header(&m.state.last_request().expect("asked"), "traceparent");
    assert_eq!(sent(&good).as_deref(), Some(traceparent.as_str()));
    assert_eq!(sent(&bad).as_deref(), Some(traceparent.as_str()));
    // Without one, Berry starts a trace: every attempt of the request carries it.
    assert_eq!(chat_traced(&gw, &chat_body("m"), None).await.status, 200);
    let (a, b) = (sent(&bad).expect("traceparent"), sent(&good).expect("traceparent"));
    assert_eq!(a, b, "one trace for the request's attempts");
    assert!(a.starts_with("00-") && a.len() == 55 && !a.contains(CLIENT_TRACE), "{a}");
    // A malformed traceparent is not passed on: a new trace starts.
    assert_eq!(chat_traced(&gw, &chat_body("m"), Some("00-zz-yy-01")).await.status, 200);
    let c = sent(&good).expect("traceparent");
    assert!(c.len() == 55 && c != a && !c.contains("zz"), "{c}");
}

#[tokio::test]
async fn an_unreachable_collector_costs_requests_nothing_and_drops_are_counted() {
    let up = mock("up").await;
    // A port with nothing listening: every export fails at connect.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut toml = config("round_robin", &[("up", &up)], &[], "");
    toml.push_str(&format!("\n[telemetry]\notlp_endpoint = \"{dead}\"\nqueue_size = 8\n"));
    let gw = TestGateway::start(&toml).await;
    let started = Instant::now();
    for _ in 0..40 {
        assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200);
    }
    assert!(started.elapsed() < Duration::from_secs(10), "requests never wait on the collector");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = String::from_utf8_lossy(&gw.get("/metrics", None).await.body).to_string();
        let dropped: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("berry_trace_spans_dropped_total ")?.parse().ok())
            .unwrap_or(0.0);
        // 40 requests × 2 spans: a queue of 8 drops most at once; failed exports drop the rest.
        if dropped >= 80.0 {
            break;
        }
        assert!(Instant::now() < deadline, "dropped {dropped} of 80 spans:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
