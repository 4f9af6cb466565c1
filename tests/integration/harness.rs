//! The test harness: in-process gateways and mock providers on 127.0.0.1:0, a small
//! HTTP client, and the misbehaving test plugins built from source.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub use std::path::Path;
use std::time::{Duration, Instant};

use berry::config;
use berry::gateway::Gateway;
use berry::mock::{MockServer, MockSettings, MockUpdate};
use berry::server::Server;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub const TOKEN: &str = "berry-test-token";
pub const ADMIN_TOKEN: &str = "berry-test-admin-user";

/// A gateway serving on an ephemeral loopback port.
pub struct TestGateway {
    pub gateway: std::sync::Arc<Gateway>,
    _server: Server,
    pub base: String,
}

impl TestGateway {
    pub async fn start(toml: &str) -> TestGateway {
        let config = config::parse(toml, &|name| std::env::var(name).ok())
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        Self::start_config(config).await
    }

    /// Serve a config file, with the file watcher on (as `berry serve` does).
    pub async fn start_file(path: &Path) -> TestGateway {
        let config = config::Config::load(path).unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        let gw = Self::start_config(config).await;
        gw.gateway.watch_files();
        gw
    }

    async fn start_config(config: config::Config) -> TestGateway {
        // Logs go to the test's captured output (shown for failing tests).
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "berry=debug".into()),
            )
            .try_init();
        let gateway = Gateway::start(config).await.unwrap_or_else(|e| panic!("gateway did not start: {e}"));
        gateway.join_fleet().await;
        let server = Server::start(gateway.clone(), "127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", server.addr());
        TestGateway { gateway, _server: server, base }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn chat(&self, token: &str, body: &Value) -> Reply {
        send(Method::POST, &self.url("/v1/chat/completions"), Some(token), Some(body.to_string())).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        send(Method::GET, &self.url(path), token, None).await
    }

    /// An admin request with a raw body (plugin uploads).
    pub async fn admin(&self, method: Method, path: &str, token: &str, body: Vec<u8>) -> Reply {
        let request = Request::builder()
            .method(method)
            .uri(self.url(path))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        send_request(request).await
    }
}

/// A mock provider on an ephemeral port, with its name as `system_fingerprint`.
pub async fn mock(name: &str) -> MockServer {
    mock_with(MockSettings { name: name.into(), ..Default::default() }).await
}

pub async fn mock_with(settings: MockSettings) -> MockServer {
    MockServer::start("127.0.0.1:0", settings).await.expect("mock bind")
}

pub fn set(mock: &MockServer, update: MockUpdate) {
    mock.state.update(update);
}

/// `[providers.<name>]` for a mock, keyed `sk-<name>`, serving `model`.
pub fn provider_toml(name: &str, mock: &MockServer) -> String {
    format!(
        "[providers.{name}]\nbase_url = \"{}\"\napi_key = \"sk-{name}-secret\"\nmodels = [\"up-model\"]\n\n",
        mock.base_url()
    )
}

/// The users every test config has: a normal user, an admin, a disabled user, a
/// restricted user.
pub fn users_toml() -> String {
    format!(
        r#"
[users.tester]
token = "{TOKEN}"

[users.admin]
token = "{ADMIN_TOKEN}"
tags = ["admin"]

[users.disabled]
token = "berry-disabled-token"
enabled = false

[users.restricted]
token = "berry-restricted-token"
allowed_models = ["other"]
"#
    )
}

/// A full config: settings, one provider per mock, one model `m` over them with
/// `strategy`, a second model `other` on the first mock, and the test users.
/// `backend_extra[i]` is appended to backend i (weights, priorities…).
pub fn config(strategy: &str, mocks: &[(&str, &MockServer)], backend_extra: &[&str], settings_extra: &str) -> String {
    // Defaults, unless `settings_extra` sets the key itself.
    let mut s = String::from("[settings]\n");
    for (key, value) in [
        ("request_timeout_seconds", "5"),
        ("first_byte_timeout_seconds", "5"),
        ("connection_timeout_seconds", "2"),
        ("max_retries", "3"),
        // No usage ledger unless a test asks for one (the default file is shared).
        ("usage_db", "\"\""),
    ] {
        if !settings_extra.lines().any(|l| l.trim_start().starts_with(key)) {
            s.push_str(&format!("{key} = {value}\n"));
        }
    }
    s.push_str(settings_extra);
    s.push_str("\n\n");
    for (name, m) in mocks {
        s.push_str(&provider_toml(name, m));
    }
    s.push_str(&format!("[models.m]\nname = \"m\"\nstrategy = \"{strategy}\"\n"));
    for (i, (name, _)) in mocks.iter().enumerate() {
        let extra = backend_extra.get(i).copied().unwrap_or("");
        s.push_str(&format!("[[models.m.backends]]\nprovider = \"{name}\"\nmodel = \"up-model\"\n{extra}\n"));
    }
    s.push_str(&format!(
        "\n[models.other]\nname = \"other\"\n[[models.other.backends]]\nprovider = \"{}\"\nmodel = \"up-model\"\n",
        mocks[0].0
    ));
    s.push_str(&users_toml());
    s
}

pub fn chat_body(model: &str) -> Value {
    serde_json::json!({ "model": model, "messages": [{ "role": "user", "content": "hi" }] })
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Which mock answered (the mock's name is its `system_fingerprint`).
    pub fn answered_by(&self) -> String {
        self.json()["system_fingerprint"].as_str().unwrap_or("?").to_string()
    }

    /// Assert an OpenAI-shaped error with this status and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", String::from_utf8_lossy(&self.body));
        let v = self.json();
        let e = &v["error"];
        assert!(e["message"].is_string(), "error.message missing: {v}");
        assert!(e["type"].is_string(), "error.type missing: {v}");
        assert_eq!(e["code"], code, "wrong code: {v}");
        assert!(e.as_object().is_some_and(|o| o.contains_key("param")), "error.param missing: {v}");
    }
}

fn client() -> &'static Client<HttpConnector, Full<Bytes>> {
    static CLIENT: OnceLock<Client<HttpConnector, Full<Bytes>>> = OnceLock::new();
    CLIENT.get_or_init(|| Client::builder(TokioExecutor::new()).build_http())
}

fn build(method: Method, url: &str, token: Option<&str>, body: Option<String>) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(url).header("content-type", "application/json");
    if let Some(t) = token {
        builder = builder.header("authorization", format!("Bearer {t}"));
    }
    builder.body(Full::new(Bytes::from(body.unwrap_or_default()))).expect("request")
}

/// POST `body` to `url` the way the anthropic SDK does (`x-api-key`, `anthropic-version`).
pub async fn post_anthropic(url: &str, key: &str, body: &Value) -> Reply {
    let request = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    send_request(request).await
}

pub async fn send(method: Method, url: &str, token: Option<&str>, body: Option<String>) -> Reply {
    send_request(build(method, url, token, body)).await
}

pub async fn send_request(request: Request<Full<Bytes>>) -> Reply {
    let response = tokio::time::timeout(Duration::from_secs(30), client().request(request))
        .await
        .expect("no response within 30s")
        .expect("request failed");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply { status: parts.status, headers: parts.headers, body }
}

/// A streamed reply, chunk by chunk, with when each chunk arrived.
pub struct StreamReply {
    pub status: StatusCode,
    pub chunks: Vec<(Instant, Bytes)>,
}

impl StreamReply {
    pub fn text(&self) -> String {
        self.chunks.iter().map(|(_, b)| String::from_utf8_lossy(b).into_owned()).collect()
    }
}

/// Start a streaming request; returns the status and the body to read from.
pub async fn open_stream(url: &str, token: &str, body: &Value) -> (StatusCode, hyper::body::Incoming) {
    let request = build(Method::POST, url, Some(token), Some(body.to_string()));
    let response = tokio::time::timeout(Duration::from_secs(30), client().request(request))
        .await
        .expect("no response headers within 30s")
        .expect("request failed");
    let (parts, body) = response.into_parts();
    (parts.status, body)
}

pub async fn stream(url: &str, token: &str, body: &Value) -> StreamReply {
    let (status, mut body) = open_stream(url, token, body).await;
    let mut chunks = Vec::new();
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(30), body.frame()).await.expect("stream stalled") {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    chunks.push((Instant::now(), data));
                }
            }
            Err(_) => break,
        }
    }
    StreamReply { status, chunks }
}

/// The misbehaving test plugins (tests/plugins), built once per test run from source.
pub fn test_plugin(name: &str) -> PathBuf {
    built_workspace("tests/plugins").join(format!("{name}.wasm"))
}

/// Milliseconds since the Unix epoch, now.
pub fn epoch_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A `[plugins.<name>]` entry for `misbehave_later`: a strategy that passes the
/// trial a gateway gives it at load, then, from `after` on, misbehaves `how` ("trap",
/// "loop", "hungry", "empty", "bad_indices") on every call. Returns the entry and
/// the epoch millisecond it starts misbehaving at.
pub fn misbehave_later(name: &str, how: &str, after: Duration, extra: &str) -> (String, u64) {
    let from_ms = epoch_ms() + after.as_millis() as u64;
    let entry = format!(
        "\n[plugins.{name}]\npath = {:?}\nkind = \"strategy\"\nconfig = {{ from_ms = {from_ms}, how = \"{how}\" }}\n{extra}\n",
        test_plugin("misbehave_later").display().to_string()
    );
    (entry, from_ms)
}

/// Sleep until the epoch millisecond `ms`.
pub async fn until_epoch_ms(ms: u64) {
    let now = epoch_ms();
    if ms > now {
        tokio::time::sleep(Duration::from_millis(ms - now + 20)).await;
    }
}

/// The example plugins (examples/), built once per test run from source.
pub fn example_plugin(name: &str) -> PathBuf {
    built_workspace("examples").join(format!("{name}.wasm"))
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Build a wasm plugin workspace of the repository (once per test run), in its own
/// target folder; returns the folder holding its .wasm files.
fn built_workspace(workspace: &'static str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(&'static str, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, dir)) = built.iter().find(|(w, _)| *w == workspace) {
        return dir.clone();
    }
    let target = repo_root().join("target").join(format!("wasm-{}", workspace.replace('/', "-")));
    build_wasm_crate(&repo_root().join(workspace), &target, true);
    let dir = target.join("wasm32-wasip2").join("release");
    built.push((workspace, dir.clone()));
    dir
}

/// `cargo build --release --target wasm32-wasip2` of the crate or workspace in `dir`.
pub fn build_wasm_crate(dir: &std::path::Path, target: &std::path::Path, locked: bool) {
    let mut cmd = std::process::Command::new(option_env!("CARGO").unwrap_or("cargo"));
    cmd.current_dir(dir).args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"]).arg(target);
    if locked {
        cmd.arg("--locked");
    }
    let status = cmd
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("run cargo for wasm plugins");
    assert!(status.success(), "building {} failed", dir.display());
}

/// Start the real binary on `config` (as the container image does: CONFIG_PATH and
/// BIND_ADDRESS), returning the child, its base URL and a handle on its log.
pub fn spawn_berry(
    config: &Path,
    extra_env: &[(&str, &str)],
) -> (std::process::Child, String, std::sync::mpsc::Receiver<String>) {
    spawn_berry_with(Command::new(env!("CARGO_BIN_EXE_berry")), config, extra_env)
}

/// [`spawn_berry`] with a prepared command (a wrapper that sets limits, extra
/// arguments), waiting for the "listening" line.
pub fn spawn_berry_with(
    mut cmd: Command,
    config: &Path,
    extra_env: &[(&str, &str)],
) -> (std::process::Child, String, std::sync::mpsc::Receiver<String>) {
    cmd.env("CONFIG_PATH", config)
        .env("BIND_ADDRESS", "127.0.0.1:0")
        .env("BERRY_CACHE_DIR", "")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn berry");
    let (tx, rx) = std::sync::mpsc::channel();
    for pipe in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let addr = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("berry did not start");
        seen.push(line.clone());
        if let Some(rest) = line.split("berry listening on http://").nth(1) {
            break rest.chars().take_while(|c| !c.is_whitespace() && *c != '"').collect::<String>();
        }
    };
    let (tx2, rx2) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in seen {
            let _ = tx2.send(line);
        }
        while let Ok(line) = rx.recv() {
            let _ = tx2.send(line);
        }
    });
    (child, format!("http://{addr}"), rx2)
}

/// Wait for the process to exit, off the test's runtime thread.
pub async fn exit_of(mut child: std::process::Child) -> std::process::ExitStatus {
    tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("wait")
}

pub fn sigterm(child: &std::process::Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
}

/// A real `redis-server` on a free loopback port, in its own folder, persisting
/// nothing; killed when dropped. (`scripts/test` installs the Debian package.)
pub struct RedisServer {
    child: Option<std::process::Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Self::spawn(port, dir.path());
        RedisServer { child: Some(child), port, dir }
    }

    fn spawn(port: u16, dir: &Path) -> std::process::Child {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (scripts/test installs it: apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !Self::answers(port) {
            assert!(Instant::now() < deadline, "redis-server did not answer on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    /// Whether a PING gets PONG.
    fn answers(port: u16) -> bool {
        use std::io::Write;
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(Command::new("kill").args([signal, &pid]).status().expect("kill").success());
    }

    /// Freeze it (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Kill it (SIGKILL): its data is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Some(Self::spawn(self.port, self.dir.path()));
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port free on loopback now (for servers that cannot be told to take port 0).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

/// Headless Chromium (scripts/test installs it), started as this machine's probe
/// starts it: no sandbox as root, no background networking (the network is closed).
pub fn chromium_command(profile: &Path) -> Command {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("Chromium is needed for this test: apt-get install chromium (scripts/test installs it)");
    let mut cmd = Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

/// Load `url` in headless Chromium off the runtime thread (the gateway under test
/// must keep serving it) with `args`; the DOM when `--dump-dom` is among them.
pub async fn browse(profile: &Path, url: &str, args: Vec<String>) -> std::process::Output {
    let (profile, url) = (profile.to_path_buf(), url.to_string());
    tokio::task::spawn_blocking(move || {
        chromium_command(&profile)
            .args(["--virtual-time-budget=4000", "--window-size=1400,900"])
            .args(args)
            .arg(url)
            .output()
            .expect("run chromium")
    })
    .await
    .expect("join")
}
