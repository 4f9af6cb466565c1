//! Hardening round 2, request bodies (issue 17, item 2): one user cannot take the
//! gateway's body budget from everyone else, with headers alone or by uploading slowly.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::hardening::{connect, raw_status};
use crate::harness::*;

const GREEDY: &str = "berry-greedy-token";

/// 1 MiB bodies, 4 MiB buffered at once (so 1 MiB per user by default); a `greedy`
/// user limited to 5 requests a minute.
async fn gateway() -> (TestGateway, berry::mock::MockServer) {
    let up = mock("up").await;
    let mut toml = config(
        "weighted_random",
        &[("up", &up)],
        &[],
        "max_request_body_bytes = 1048576\nmax_buffered_body_bytes = 4194304\nrequest_timeout_seconds = 20",
    );
    toml.push_str(&format!(
        "\n[users.greedy]\ntoken = \"{GREEDY}\"\n[users.greedy.rate_limit]\nrequests_per_minute = 5\n"
    ));
    (TestGateway::start(&toml).await, up)
}

fn head(token: &str, length: usize) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
}

fn padded(n: usize) -> serde_json::Value {
    json!({ "model": "m", "messages": [{ "role": "user", "content": "x".repeat(n) }] })
}

/// As an attacker would: 26 connections declaring 1 MiB bodies and sending none.
/// The rate limit answers all but the first five before any body; those five hold
/// no budget, since nothing arrived; everyone else is served.
#[tokio::test]
async fn declared_lengths_take_no_budget_and_the_rate_limit_comes_first() {
    let (gw, _up) = gateway().await;
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..26 {
        let mut c = connect(&gw).await;
        match raw_status(&mut c, head(GREEDY, 1 << 20).as_bytes(), Duration::from_millis(500)).await {
            Some(line) => {
                assert_eq!(line, "HTTP/1.1 429 Too Many Requests");
                refused += 1;
            }
            None => held.push(c),
        }
    }
    assert_eq!(refused, 21, "the rate limit is checked before the body is read");
    assert_eq!(held.len(), 5);
    for i in 0..4 {
        let reply = gw.chat(TOKEN, &padded(600_000)).await;
        assert_eq!(reply.status, 200, "request {i}: {}", String::from_utf8_lossy(&reply.body));
    }
}

/// A user that really sends its bytes, slowly, on several connections holds at most
/// its share; the rest of the budget is everyone else's.
#[tokio::test]
async fn one_user_holds_at_most_its_share_of_the_budget() {
    let (gw, _up) = gateway().await;
    let mut slow = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..4 {
        let mut c = connect(&gw).await;
        c.write_all(head(ADMIN_TOKEN, 1 << 20).as_bytes()).await.expect("head");
        // 900 KB of the promised 1 MiB, then silence.
        let partial = format!("{{\"model\":\"m\",\"pad\":\"{}", "y".repeat(900_000));
        match raw_status(&mut c, partial.as_bytes(), Duration::from_millis(500)).await {
            Some(line) => refused.push(line),
            None => slow.push(c),
        }
    }
    assert_eq!(slow.len(), 1, "one 900 KB upload fits the user's 1 MiB share: {refused:?}");
    assert!(refused.iter().all(|l| l == "HTTP/1.1 429 Too Many Requests"), "{refused:?}");
    for i in 0..3 {
        let reply = gw.chat(TOKEN, &padded(600_000)).await;
        assert_eq!(reply.status, 200, "request {i}: {}", String::from_utf8_lossy(&reply.body));
    }
    drop(slow);
}
