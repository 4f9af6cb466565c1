//! The `berry` binary itself: `check-config` and the README's run command.

use std::process::Command;

fn berry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_berry"))
}

fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn check_config_accepts_the_demo_config() {
    let out = berry().arg("check-config").arg(repo().join("config/berry.toml")).output().expect("run berry");
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
}

#[test]
fn check_config_accepts_every_example() {
    let dir = repo().join("config/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("config/examples") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = berry()
                .arg("check-config")
                .arg(&path)
                .env("OPENAI_API_KEY", "sk-example")
                .env("ANTHROPIC_API_KEY", "sk-example")
                .env("BERRY_ADMIN_TOKEN", "admin-example")
                // Nothing listens there: a fleet config checks without its Redis.
                .env("REDIS_URL", "redis://127.0.0.1:1")
                .output()
                .expect("run berry");
            assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("attempt_timeout_seconds"), "{}: sets an attempt cap: {stderr}", path.display());
            checked += 1;
        }
    }
    assert!(checked > 0, "no examples found");
}

#[test]
fn check_config_names_the_key_path_of_an_unknown_provider() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[providers.azure]
base_url = "https://example.invalid/v1"
api_key = "sk-x"
models = ["gpt-4"]

[models.gpt_4]
name = "gpt-4"
[[models.gpt_4.backends]]
provider = "azure"
model = "gpt-4"
[[models.gpt_4.backends]]
provider = "azur"
model = "gpt-4"

[users.a]
token = "t"
"#,
    )
    .expect("write");
    let out = berry().arg("check-config").arg(&path).output().expect("run berry");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("models.gpt_4.backends[1].provider: unknown provider \"azur\""), "{stderr}");
}

#[test]
fn check_config_reports_unknown_keys_and_bad_values_with_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[settings]\nrequest_timeout_secs = 5\n").expect("write");
    let out = berry().arg("check-config").arg(&path).output().expect("run berry");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("settings") && stderr.contains("request_timeout_secs"), "{stderr}");

    std::fs::write(&path, "[settings]\nmax_retries = \"three\"\n").expect("write");
    let out = berry().arg("check-config").arg(&path).output().expect("run berry");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("settings.max_retries"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 17, item 7: with retries on and no cap on one attempt, a hung backend
/// holds its requests for the whole budget; `check-config` says so, and the shipped
/// configs set a cap.
#[test]
fn check_config_warns_when_a_hung_backend_could_not_be_failed_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("berry.toml");
    let config = |settings: &str| {
        format!(
            "[settings]\n{settings}\n[providers.up]\nbase_url = \"mock://up\"\nmodels = [\"m\"]\n\
             [models.m]\nname = \"m\"\n[[models.m.backends]]\nprovider = \"up\"\nmodel = \"m\"\n\
             [users.a]\ntoken = \"berry-a-token\"\n"
        )
    };
    let warning = |settings: &str| {
        std::fs::write(&path, config(settings)).expect("write");
        let out = berry().arg("check-config").arg(&path).env("BERRY_CACHE_DIR", "").output().expect("run berry");
        assert!(out.status.success(), "a warning, not an error: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).lines().find(|l| l.contains("attempt_timeout_seconds")).map(str::to_string)
    };
    let line = warning("max_retries = 2").expect("a warning about the missing attempt cap");
    assert!(line.starts_with("warning: settings.attempt_timeout_seconds") && line.contains("504"), "{line}");
    assert_eq!(warning("max_retries = 2\nattempt_timeout_seconds = 10"), None);
    assert_eq!(warning("max_retries = 0"), None, "no retries: nothing to fail over to");
    let demo = berry().arg("check-config").arg(repo().join("config/berry.toml")).output().expect("run berry");
    assert!(!String::from_utf8_lossy(&demo.stderr).contains("attempt_timeout_seconds"), "the demo config sets a cap");
}

/// The README's run command: `berry` with no arguments, from the repository root,
/// serves the demo config; chat (plain and streamed) and the model list work; SIGTERM
/// stops it with exit code 0.
#[tokio::test]
async fn the_binary_serves_the_demo_config_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let mut child = berry()
        .current_dir(repo())
        .env("BIND_ADDRESS", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env_remove("CONFIG_PATH")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn berry");
    let stdout = child.stdout.take().expect("stdout");
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("berry listening on http://").nth(1) {
                let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                let _ = addr_tx.send(addr);
            }
        }
    });
    let addr = addr_rx.recv_timeout(std::time::Duration::from_secs(60)).expect("berry did not report its address");
    let base = format!("http://{addr}");
    let body = serde_json::json!({ "model": "demo", "messages": [{ "role": "user", "content": "Hello" }] });

    let reply = crate::harness::send(
        http::Method::POST,
        &format!("{base}/v1/chat/completions"),
        Some("berry-demo-token"),
        Some(body.to_string()),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert!(reply.json()["choices"][0]["message"]["content"].as_str().is_some_and(|s| s.contains("Hello")));

    let mut streamed = body.clone();
    streamed["stream"] = serde_json::json!(true);
    let s = crate::harness::stream(&format!("{base}/v1/chat/completions"), "berry-demo-token", &streamed).await;
    assert_eq!(s.status, 200);
    assert!(s.text().ends_with("data: [DONE]\n\n"), "{}", s.text());

    let models =
        crate::harness::send(http::Method::GET, &format!("{base}/v1/models"), Some("berry-demo-token"), None).await;
    assert_eq!(models.status, 200);
    assert!(models.json()["data"].as_array().is_some_and(|d| d.len() >= 2));

    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("wait");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn berry_api_configs_load_unchanged_with_warnings_for_what_has_no_effect() {
    let dir = repo().join("tests/fixtures/berry-api");
    for (file, warnings) in [
        (
            "config-example.toml",
            &[
                "settings.max_internal_retries: has no effect",
                "settings.smart_ai.lightweight_check_interval_seconds: has no effect",
                "users.analyst.allowed_models[1]: no model is named \"haiku-lite\"",
                "providers.azure_east.backend_type: the base_url is an Azure OpenAI resource",
                "models.chat_pro.strategy: \"weighted_failover\" is berry-api's name",
            ][..],
        ),
        (
            "smart_ai_example.toml",
            &[
                "settings.max_internal_retries: has no effect",
                "settings.smart_ai.lightweight_check_interval_seconds: has no effect",
            ][..],
        ),
    ] {
        let out = berry().arg("check-config").arg(dir.join(file)).env("BERRY_CACHE_DIR", "").output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{file}: {stderr}");
        for w in warnings {
            assert!(stderr.contains(&format!("warning: {w}")), "{file}: missing warning {w:?} in\n{stderr}");
        }
    }
    // berry-api's names carry their meaning.
    let text = std::fs::read_to_string(dir.join("config-example.toml")).expect("fixture");
    let config = berry::config::parse(&text, &|_| None).expect("parses");
    assert_eq!(config.settings.circuit_breaker_threshold, 4);
    assert_eq!(config.settings.circuit_breaker_cooldown, std::time::Duration::from_secs(90));
    assert_eq!(config.providers["claude"].backend, berry::config::BackendType::Anthropic);
    assert_eq!(config.model("chat-pro").map(|m| m.strategy.as_str()), Some("weighted_random"));
}
