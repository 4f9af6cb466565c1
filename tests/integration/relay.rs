//! What the provider receives and what the client gets back.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn provider_receives_the_body_unchanged_but_model_and_backend() {
    let up = mock("up").await;
    let toml = config("weighted_random", &[("up", &up)], &[], "");
    let gw = TestGateway::start(&toml).await;
    // Odd key order, unknown fields, nested "model", exotic numbers and spacing.
    let sent = r#"{"zeta": 1.50e3, "messages":[{"role":"user","content":"h\u00e9llo"}],  "model" : "m", "backend": "up", "x_unknown": {"model": "keep", "n": [1, 2.0]}, "temperature": 0.70}"#;
    let request = Request::builder()
        .method(Method::POST)
        .uri(gw.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("x-request-id", "test-req-42")
        .body(Full::new(Bytes::from(sent)))
        .expect("request");
    let reply = send_request(request).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.headers.get("x-request-id").map(|v| v.to_str().ok()), Some(Some("test-req-42")));

    let received = up.state.last_request().expect("the provider got a request");
    let expected = r#"{"zeta": 1.50e3, "messages":[{"role":"user","content":"h\u00e9llo"}],  "model" : "up-model", "x_unknown": {"model": "keep", "n": [1, 2.0]}, "temperature": 0.70}"#;
    assert_eq!(String::from_utf8_lossy(&received.body), expected);

    let header = |name: &str| received.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert_eq!(header("authorization").as_deref(), Some("Bearer sk-up-secret"));
    assert_eq!(header("x-request-id").as_deref(), Some("test-req-42"));
    for (name, value) in &received.headers {
        assert!(!value.contains(ADMIN_TOKEN), "caller token leaked upstream in {name}");
    }
}

#[tokio::test]
async fn provider_headers_are_sent() {
    let up = mock("up").await;
    let mut toml = config("weighted_random", &[("up", &up)], &[], "");
    toml.push_str("\n[providers.up.headers]\n\"X-Custom-Header\" = \"custom-value\"\n");
    let gw = TestGateway::start(&toml).await;
    assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200);
    let received = up.state.last_request().expect("request");
    assert!(
        received.headers.iter().any(|(k, v)| k == "x-custom-header" && v == "custom-value"),
        "{:?}",
        received.headers
    );
}

#[tokio::test]
async fn non_admin_cannot_pin_a_backend() {
    let up = mock("up").await;
    let gw = TestGateway::start(&config("weighted_random", &[("up", &up)], &[], "")).await;
    let mut body = chat_body("m");
    body["backend"] = json!("up");
    gw.chat(TOKEN, &body).await.assert_error(403, "backend_pin_forbidden");
    body["backend"] = json!("nope");
    gw.chat(ADMIN_TOKEN, &body).await.assert_error(400, "unknown_backend");
}

#[tokio::test]
async fn sse_is_passed_through_byte_for_byte() {
    let up = mock_with(berry::mock::MockSettings { name: "up".into(), sse_ids: true, chunks: 4, ..Default::default() })
        .await;
    let gw = TestGateway::start(&config("weighted_random", &[("up", &up)], &[], "")).await;
    let mut body = chat_body("m");
    body["stream"] = json!(true);
    let through_berry = stream(&gw.url("/v1/chat/completions"), TOKEN, &body).await;
    assert_eq!(through_berry.status, 200);
    let text = through_berry.text();
    assert!(text.contains("id: 0\nevent: message\ndata: {"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    // The same request straight to the mock gives the same events (ids and
    // timestamps aside, which the mock varies per request).
    body["model"] = json!("up-model");
    let direct = stream(&format!("{}/chat/completions", up.base_url()), "x", &body).await.text();
    let shape = |s: &str| s.lines().map(|l| l.split(':').next().unwrap_or("").to_string()).collect::<Vec<_>>();
    assert_eq!(shape(&text), shape(&direct));
}

/// An HTTP/2 (h2c) client's stream is relayed by a task of its own (so that a
/// client withholding flow-control window can be timed out); what it gets is the
/// same stream an HTTP/1 client gets.
#[tokio::test]
async fn an_http2_client_gets_the_same_stream() {
    let up =
        mock_with(berry::mock::MockSettings { name: "up".into(), sse_ids: true, chunks: 40, ..Default::default() })
            .await;
    let gw = TestGateway::start(&config("weighted_random", &[("up", &up)], &[], "")).await;
    let mut body = chat_body("m");
    body["stream"] = json!(true);
    let over_h1 = stream(&gw.url("/v1/chat/completions"), TOKEN, &body).await.text();

    let tcp = tokio::net::TcpStream::connect(gw.base.trim_start_matches("http://")).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.expect("h2 handshake");
    tokio::spawn(connection);
    let request = Request::post(gw.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let over_h2 = response.into_body().collect().await.expect("the whole stream").to_bytes();
    let over_h2 = String::from_utf8(over_h2.to_vec()).expect("utf-8");
    assert!(over_h2.ends_with("data: [DONE]\n\n"), "{over_h2}");
    let shape = |s: &str| s.lines().map(|l| l.split(':').next().unwrap_or("").to_string()).collect::<Vec<_>>();
    assert_eq!(shape(&over_h2), shape(&over_h1));
}

/// A one-off upstream whose stream sends a first chunk, then waits until the test
/// says the client has received it before sending the rest. A buffering gateway
/// would deadlock here (and the test would time out and fail).
#[tokio::test]
async fn stream_chunks_reach_the_client_before_the_upstream_finishes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let release = release_rx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let release = release.clone();
                    async move {
                        let frames = futures_util::stream::unfold(0u8, move |step| {
                            let mut release = release.clone();
                            async move {
                                match step {
                                    0 => Some((
                                        Ok::<_, Infallible>(Frame::data(Bytes::from_static(
                                            b"data: {\"first\":true}\n\n",
                                        ))),
                                        1,
                                    )),
                                    1 => {
                                        let _ = release.wait_for(|r| *r).await;
                                        Some((
                                            Ok(Frame::data(Bytes::from_static(
                                                b"data: {\"second\":true}\n\ndata: [DONE]\n\n",
                                            ))),
                                            2,
                                        ))
                                    }
                                    _ => None,
                                }
                            }
                        });
                        let response = http::Response::builder()
                            .header("content-type", "text/event-stream")
                            .body(StreamBody::new(frames))
                            .expect("response");
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let toml = format!(
        "[settings]\nfirst_byte_timeout_seconds = 5\n[providers.gated]\nbase_url = \"http://{addr}/v1\"\napi_key = \"sk-gated\"\nmodels = [\"up-model\"]\n\
         [models.m]\nname = \"m\"\n[[models.m.backends]]\nprovider = \"gated\"\nmodel = \"up-model\"\n\
         [models.other]\nname = \"other\"\n[[models.other.backends]]\nprovider = \"gated\"\nmodel = \"up-model\"\n{}",
        users_toml()
    );
    let gw = TestGateway::start(&toml).await;
    let mut body = chat_body("m");
    body["stream"] = json!(true);
    let (status, mut incoming) = open_stream(&gw.url("/v1/chat/completions"), TOKEN, &body).await;
    assert_eq!(status, 200);
    let first = tokio::time::timeout(Duration::from_secs(10), incoming.frame())
        .await
        .expect("first chunk never arrived while the upstream was still open: the gateway buffers")
        .expect("stream ended")
        .expect("frame");
    assert_eq!(first.into_data().ok().as_deref(), Some(&b"data: {\"first\":true}\n\n"[..]));
    release_tx.send(true).expect("release");
    let rest = tokio::time::timeout(Duration::from_secs(10), incoming.collect())
        .await
        .expect("rest")
        .expect("body")
        .to_bytes();
    assert_eq!(&rest[..], b"data: {\"second\":true}\n\ndata: [DONE]\n\n");
}

#[tokio::test]
async fn mid_stream_failure_ends_with_an_error_event_and_is_recorded() {
    let up = mock_with(berry::mock::MockSettings {
        name: "up".into(),
        chunks: 6,
        // Spaced chunks, so the first ones are on the wire before the break.
        chunk_delay_ms: 20,
        fail: berry::mock::FailMode::MidStream,
        ..Default::default()
    })
    .await;
    let gw = TestGateway::start(&config("weighted_random", &[("up", &up)], &[], "")).await;
    let mut body = chat_body("m");
    body["stream"] = json!(true);
    let reply = stream(&gw.url("/v1/chat/completions"), TOKEN, &body).await;
    assert_eq!(reply.status, 200);
    let text = reply.text();
    assert!(text.contains("\"content\""), "some chunks arrived first: {text}");
    assert!(text.contains("stream_interrupted"), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    let health = gw.get("/health", None).await.json();
    assert_eq!(health["models"][0]["backends"][0]["errors"]["network"], 1, "{health}");
}

#[tokio::test]
async fn streaming_failure_before_first_byte_moves_to_the_next_backend() {
    let (bad, good) = (mock("bad").await, mock("good").await);
    set(&bad, berry::mock::MockUpdate { fail: Some(berry::mock::FailMode::Status(500)), ..Default::default() });
    let gw = TestGateway::start(&config(
        "failover",
        &[("bad", &bad), ("good", &good)],
        &["priority = 1", "priority = 2"],
        "",
    ))
    .await;
    let mut body = chat_body("m");
    body["stream"] = json!(true);
    let reply = stream(&gw.url("/v1/chat/completions"), TOKEN, &body).await;
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains("\"system_fingerprint\":\"good\""), "{}", reply.text());
    assert!(reply.text().ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn hung_upstream_is_cut_by_the_timeout_and_the_next_backend_answers() {
    let (hung, good) = (mock("hung").await, mock("good").await);
    set(&hung, berry::mock::MockUpdate { fail: Some(berry::mock::FailMode::Hang), ..Default::default() });
    let toml = config(
        "failover",
        &[("hung", &hung), ("good", &good)],
        &["priority = 1", "priority = 2"],
        "request_timeout_seconds = 5\nattempt_timeout_seconds = 0.5\nfirst_byte_timeout_seconds = 0.5",
    );
    let gw = TestGateway::start(&toml).await;
    let reply = gw.chat(TOKEN, &chat_body("m")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.answered_by(), "good");
    let mut body = chat_body("m");
    body["stream"] = json!(true);
    let streamed = stream(&gw.url("/v1/chat/completions"), TOKEN, &body).await;
    assert!(streamed.text().contains("\"system_fingerprint\":\"good\""));
    let health = gw.get("/health", None).await.json();
    assert_eq!(health["models"][0]["backends"][0]["errors"]["timeout"], 2, "{health}");
}

#[tokio::test]
async fn only_upstream_timeouts_give_504() {
    let hung = mock("hung").await;
    set(&hung, berry::mock::MockUpdate { fail: Some(berry::mock::FailMode::Hang), ..Default::default() });
    let toml = config("weighted_random", &[("hung", &hung)], &[], "max_retries = 0\nrequest_timeout_seconds = 0.3");
    let gw = TestGateway::start(&toml).await;
    gw.chat(TOKEN, &chat_body("m")).await.assert_error(504, "upstream_timeout");
}

#[tokio::test]
async fn the_callers_own_bad_request_is_passed_back_not_retried() {
    let (a, b) = (mock("a").await, mock("b").await);
    set(&a, berry::mock::MockUpdate { fail: Some(berry::mock::FailMode::Status(400)), ..Default::default() });
    let gw =
        TestGateway::start(&config("failover", &[("a", &a), ("b", &b)], &["priority = 1", "priority = 2"], "")).await;
    let reply = gw.chat(TOKEN, &chat_body("m")).await;
    reply.assert_error(400, "mock_failure");
    assert_eq!(b.state.chat.load(std::sync::atomic::Ordering::Relaxed), 0);
    let health = gw.get("/health", None).await.json();
    assert_eq!(health["models"][0]["backends"][0]["consecutive_failures"], 0, "a 400 is not the backend's fault");
}

#[tokio::test]
async fn completions_and_embeddings_are_routed_too() {
    let up = mock("up").await;
    let gw = TestGateway::start(&config("weighted_random", &[("up", &up)], &[], "")).await;
    let reply = send(
        Method::POST,
        &gw.url("/v1/embeddings"),
        Some(TOKEN),
        Some(json!({"model":"m","input":["a","b"]}).to_string()),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["data"].as_array().map(Vec::len), Some(2));
    let reply = send(
        Method::POST,
        &gw.url("/v1/completions"),
        Some(TOKEN),
        Some(json!({"model":"m","prompt":"x"}).to_string()),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["object"], "text_completion");
    assert_eq!(up.state.embeddings.load(std::sync::atomic::Ordering::Relaxed), 1);
}
