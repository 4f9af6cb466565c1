//! Outbound proxies (issue 22): a provider's own `proxy`, and the environment's
//! `HTTP_PROXY`/`NO_PROXY`, through a real tinyproxy process on loopback.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// A tinyproxy on a free loopback port, logging every connection it makes.
struct Tinyproxy {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Tinyproxy {
    fn start() -> Tinyproxy {
        let dir = tempfile::tempdir().expect("dir");
        let port = free_port();
        let log = dir.path().join("tinyproxy.log");
        // No ConnectPort line: CONNECT is allowed to any port (the mocks' too).
        let conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\nLogFile \"{}\"\nLogLevel Connect\nMaxClients 64\n",
            log.display()
        );
        let conf_path = dir.path().join("tinyproxy.conf");
        std::fs::write(&conf_path, conf).expect("conf");
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy (scripts/test installs it: apt-get install tinyproxy)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tinyproxy did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Tinyproxy { child, port, log, _dir: dir }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The CONNECT destinations tinyproxy logged.
    fn connects(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_provider_with_a_proxy_is_reached_through_it_and_the_others_directly() {
    let proxy = Tinyproxy::start();
    let (via, direct) = (mock("via").await, mock("direct").await);
    let mut toml = config("round_robin", &[("via", &via), ("direct", &direct)], &[], "");
    toml = toml.replacen("[providers.via]\n", &format!("[providers.via]\nproxy = \"{}\"\n", proxy.url()), 1);
    let gw = TestGateway::start(&toml).await;
    for _ in 0..4 {
        let reply = gw.chat(TOKEN, &chat_body("m")).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    }
    let via_port = via.addr().port().to_string();
    let direct_port = direct.addr().port().to_string();
    let log = proxy.connects();
    assert!(log.contains(&format!("127.0.0.1:{via_port}")), "via went through the proxy: {log}");
    assert!(!log.contains(&format!("127.0.0.1:{direct_port}")), "direct did not: {log}");
    assert!(via.state.last_request().is_some() && direct.state.last_request().is_some());
}

#[tokio::test]
async fn a_dead_proxy_is_a_network_failure_that_fails_over() {
    let (via, direct) = (mock("via").await, mock("direct").await);
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut toml = config("failover", &[("via", &via), ("direct", &direct)], &["priority = 1", "priority = 2"], "");
    toml = toml.replacen("[providers.via]\n", &format!("[providers.via]\nproxy = \"{dead}\"\n"), 1);
    let gw = TestGateway::start(&toml).await;
    let reply = gw.chat(TOKEN, &chat_body("m")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.answered_by(), "direct");
    assert!(via.state.last_request().is_none(), "nothing reached the provider behind the dead proxy");
    let health = gw.get("/health", None).await.json();
    assert_eq!(health["models"][0]["backends"][0]["errors"]["network"], 1, "{health}");
}

#[tokio::test]
async fn the_environment_proxies_apply_and_no_proxy_is_respected() {
    let proxy = Tinyproxy::start();
    let (a, b) = (mock("a").await, mock("b").await);
    // b is named `localhost`, which NO_PROXY exempts; a (127.0.0.1) goes through the proxy.
    let toml = config("round_robin", &[("a", &a), ("b", &b)], &[], "")
        .replace(&format!("http://127.0.0.1:{}", b.addr().port()), &format!("http://localhost:{}", b.addr().port()));
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("berry.toml");
    std::fs::write(&path, toml).expect("config");
    let (child, base, _log) = spawn_berry(&path, &[("HTTP_PROXY", &proxy.url()), ("NO_PROXY", "localhost")]);
    for _ in 0..4 {
        let reply = send(
            http::Method::POST,
            &format!("{base}/v1/chat/completions"),
            Some(TOKEN),
            Some(chat_body("m").to_string()),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    }
    sigterm(&child);
    let _ = exit_of(child).await;
    let log = proxy.connects();
    assert!(log.contains(&format!("127.0.0.1:{}", a.addr().port())), "a went through HTTP_PROXY: {log}");
    assert!(!log.contains(&format!(":{}", b.addr().port())), "b is in NO_PROXY: {log}");
    assert!(b.state.last_request().is_some());
}
