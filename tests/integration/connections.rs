//! Hardening round 2, connections (issue 17, items 1 and 5): idle HTTP/2
//! connections cannot hold the gateway's slots, and stalled HTTP/2 streams are reset.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::{TcpSocket, TcpStream};

use crate::hardening::{
    closed_within, connect, h2_chat_stream, metric, raw_status, scripted_config, scripted_upstream,
};
use crate::harness::*;

/// An HTTP/2 connection that sent its preface and settings and answers the server's
/// pings (its connection task runs), but opens no stream. Resolves when it closes.
async fn idle_h2(gw: &TestGateway) -> tokio::task::JoinHandle<()> {
    let (_h2, connection) = h2::client::handshake(connect(gw).await).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _keep_sender = _h2;
        let _ = connection.await;
    })
}

#[tokio::test]
async fn an_idle_h2_connection_that_answers_pings_is_closed() {
    let up = mock("up").await;
    let gw =
        TestGateway::start(&config("weighted_random", &[("up", &up)], &[], "client_header_timeout_seconds = 1")).await;
    let started = Instant::now();
    let idle = idle_h2(&gw).await;
    tokio::time::timeout(Duration::from_secs(6), idle)
        .await
        .expect("an HTTP/2 connection with no stream must be closed after the idle limit")
        .expect("join");
    assert!(started.elapsed() >= Duration::from_millis(900), "not before the idle limit: {:?}", started.elapsed());

    // A connection with a stream open is not idle, however long the stream lasts.
    let slow = mock_with(berry::mock::MockSettings {
        name: "slow".into(),
        chunks: 3,
        chunk_delay_ms: 1_000,
        ..Default::default()
    })
    .await;
    let gw =
        TestGateway::start(&config("weighted_random", &[("slow", &slow)], &[], "client_header_timeout_seconds = 1"))
            .await;
    let (mut h2, connection) = h2::client::handshake(connect(&gw).await).await.expect("h2 handshake");
    tokio::spawn(connection);
    let (mut stream, _send) = h2_chat_stream(&mut h2).await;
    let mut text = Vec::new();
    while let Some(chunk) = stream.data().await {
        let chunk = chunk.expect("the stream runs to its end (3 s) on a connection with a 1 s idle limit");
        let _ = stream.flow_control().release_capacity(chunk.len());
        text.extend_from_slice(&chunk);
    }
    assert!(String::from_utf8_lossy(&text).ends_with("data: [DONE]\n\n"));
}

/// As an attacker would: every slot held by an idle HTTP/2 connection that answers
/// pings. Each valid user's new connection still gets through, by closing the
/// longest-idle one.
#[tokio::test]
async fn idle_connections_cannot_hold_every_slot() {
    const CAP: usize = 200;
    let up = mock("up").await;
    let gw = TestGateway::start(&config(
        "weighted_random",
        &[("up", &up)],
        &[],
        &format!("max_connections = {CAP}\nclient_header_timeout_seconds = 60"),
    ))
    .await;
    let mut attacker = Vec::new();
    for _ in 0..CAP {
        attacker.push(idle_h2(&gw).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let body = serde_json::json!({ "model": "m", "messages": [{ "role": "user", "content": "hi" }] }).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // Each user keeps its connection open: every one of them needs a slot.
    let mut users = Vec::new();
    for i in 0..20 {
        let mut user = connect(&gw).await;
        let status = raw_status(&mut user, request.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(
            status.as_deref(),
            Some("HTTP/1.1 200 OK"),
            "valid user {i} with every slot held by idle connections"
        );
        users.push(user);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let closed = attacker.iter().filter(|c| c.is_finished()).count();
    assert!(closed >= 20, "idle connections were closed to make room ({closed})");
    let text = String::from_utf8_lossy(&gw.get("/metrics", None).await.body).to_string();
    assert!(metric(&text, "berry_client_connections_evicted_total", "") >= 20.0, "{text}");
}

/// A connection from 127.0.0.x on the gateway's port.
async fn connect_from(gw: &TestGateway, source: [u8; 4]) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind((std::net::Ipv4Addr::from(source), 0).into()).expect("bind the source address");
    socket.connect(gw.base.trim_start_matches("http://").parse().expect("addr")).await.expect("connect")
}

#[tokio::test]
async fn one_address_holds_at_most_max_connections_per_ip() {
    let up = mock("up").await;
    let gw = TestGateway::start(&config(
        "weighted_random",
        &[("up", &up)],
        &[],
        "max_connections_per_ip = 3\nclient_header_timeout_seconds = 30",
    ))
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(&gw, [127, 0, 0, 1]).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fourth = connect_from(&gw, [127, 0, 0, 1]).await;
    assert!(closed_within(&mut fourth, Duration::from_secs(2)).await, "the address's fourth connection is closed");
    let mut other = connect_from(&gw, [127, 0, 0, 2]).await;
    let status = raw_status(&mut other, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n", Duration::from_secs(5)).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"), "another address is served");
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = connect_from(&gw, [127, 0, 0, 1]).await;
    let status = raw_status(&mut again, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n", Duration::from_secs(5)).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"), "a freed share admits the address again");
}

/// Item 5: a stream the client grants no window is reset (RST_STREAM) after
/// `client_write_timeout`, and a connection whose streams keep stalling is closed.
#[tokio::test]
async fn stalled_h2_streams_are_reset_and_their_connection_closed() {
    let event = Bytes::from(format!("data: {{\"pad\":\"{}\"}}\n\n", "z".repeat(16 * 1024)));
    let (url, _) = scripted_upstream(vec![], Some(event)).await;
    let gw = TestGateway::start(&scripted_config(&url, "client_write_timeout_seconds = 1")).await;
    let (mut h2, connection) = h2::client::Builder::new()
        .initial_window_size(4096)
        .handshake::<_, Bytes>(connect(&gw).await)
        .await
        .expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let mut streams = Vec::new();
    for _ in 0..4 {
        streams.push(h2_chat_stream(&mut h2).await);
    }
    for (i, (stream, _)) in streams.iter_mut().enumerate() {
        let _ = stream.data().await.expect("the stream starts");
        // The window stays shut: the client never releases capacity.
        let next = tokio::time::timeout(Duration::from_secs(10), stream.data())
            .await
            .unwrap_or_else(|_| panic!("stream {i}: still open 10 s after it stalled"));
        let reason = match next {
            Some(Err(e)) => e.reason(),
            other => panic!("stream {i}: expected a reset, got {other:?}"),
        };
        assert_eq!(reason, Some(h2::Reason::CANCEL), "stream {i}");
    }
    tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("a connection whose streams keep stalling is closed")
        .expect("join")
        .ok();
    // Everyone else is served as before.
    assert_eq!(gw.get("/v1/health", None).await.status, 200);
}
