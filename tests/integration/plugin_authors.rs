//! Writing a plugin with only the binary (issue 18): the SDK inside `berry`, broken
//! plugins refused before they serve, `berry plugin test`, `println!` into the log,
//! what a plugin really does made visible, pinned versions, which source serves.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;

use crate::hardening::{metric, variant};
use crate::harness::*;

const ADMIN: &str = "berry-authors-admin";

fn berry() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berry"));
    cmd.env("BERRY_CACHE_DIR", "");
    cmd
}

/// A stock plugin as built into the binary, as a file.
fn stock_file(name: &str) -> PathBuf {
    repo_root().join("target/wasm-plugins/wasm32-wasip2/release").join(format!("{name}.wasm"))
}

/// A config with model `m` on two mocks and `[plugins.<name>]` = `file`, used as the
/// strategy (or, for `kind = "auth"`, as the auth policy).
fn config_with(
    a: &berry::mock::MockServer,
    b: &berry::mock::MockServer,
    name: &str,
    file: &Path,
    kind: &str,
) -> String {
    let strategy = if kind == "strategy" { name } else { "weighted_random" };
    let mut toml = config(strategy, &[("a", a), ("b", b)], &[], &format!("admin_token = \"{ADMIN}\""));
    toml.push_str(&format!("\n[plugins.{name}]\npath = {:?}\nkind = \"{kind}\"\n", file.display().to_string()));
    if kind == "auth" {
        toml.push_str(&format!("\n[auth]\npolicy = \"{name}\"\n"));
    }
    toml
}

/// The table of broken plugins: what each one gets at load, and the message its
/// author reads. (What the ones that load do at run time: `misbehaviour_is_visible`,
/// `sandbox::*`, `hardening::a_policy_failing_on_one_callers_input_keeps_serving_everyone_else`.)
#[tokio::test]
async fn broken_plugins_are_refused_at_load_with_the_reason() {
    let (a, b) = (mock("a").await, mock("b").await);
    // (plugin, kind, None = loads, Some(every part of the refusal))
    let table: [(&str, &str, Option<&[&str]>); 13] = [
        ("trapping", "strategy", Some(&["failed its trial", "panicked", "trapping plugin: refusing route"])),
        ("panics_sometimes", "strategy", Some(&["failed its trial", "sequence 3", "is one too many"])),
        ("looping", "strategy", Some(&["failed its trial", "[plugins.looping] "])),
        // Allocating 1 MiB at a time, it runs out of fuel first…
        ("hungry", "strategy", Some(&["failed its trial", "fuel exhausted", "[plugins.hungry] fuel raises it"])),
        // …and, given fuel, of memory.
        (
            "hungry:fuel = 1000000000",
            "strategy",
            Some(&["failed its trial", "memory cap reached", "[plugins.hungry] memory_mb raises it"]),
        ),
        ("empty_answer", "strategy", Some(&["failed its trial", "answered nothing usable"])),
        ("bad_indices", "strategy", Some(&["failed its trial", "answered nothing usable"])),
        ("wrong_version", "strategy", Some(&["berry:gateway@0.9.0", "rebuild the plugin against berry-plugin-sdk"])),
        ("configure_trap", "strategy", Some(&["failed while loading"])),
        ("auth_trapping", "auth", Some(&["failed its trial", "no credentials", "cannot judge a token"])),
        // It prints: that is ordinary Rust, and it loads.
        ("printing", "strategy", None),
        // It panics on tokens starting "boom" only: one caller's problem, not the policy's.
        ("auth_picky", "auth", None),
        ("pick_first", "strategy", None),
    ];
    for (entry, kind, refusal) in table {
        let (plugin, extra) = entry.split_once(':').unwrap_or((entry, ""));
        let toml = config_with(&a, &b, plugin, &test_plugin(plugin), kind)
            .replace(&format!("kind = \"{kind}\"\n"), &format!("kind = \"{kind}\"\n{extra}\n"));
        let config = berry::config::parse(&toml, &|_| None).expect("config parses");
        let started = berry::gateway::Gateway::start(config).await;
        match (refusal, started) {
            (None, Ok(_)) => {}
            (None, Err(e)) => panic!("{plugin} must load: {e}"),
            (Some(_), Ok(_)) => panic!("{plugin} must be refused at load"),
            (Some(parts), Err(e)) => {
                for part in parts {
                    assert!(e.contains(part), "{plugin}: the refusal should say {part:?}:\n{e}");
                }
            }
        }
    }
    // The same refusal from check-config (exit 1) and from an upload (422), where the
    // running version keeps serving.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("berry.toml");
    std::fs::write(&path, config_with(&a, &b, "router", &test_plugin("panics_sometimes"), "strategy")).expect("write");
    let out = berry().arg("check-config").arg(&path).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sequence 3"), "{}", String::from_utf8_lossy(&out.stderr));
    let gw = TestGateway::start(&config_with(&a, &b, "router", &test_plugin("pick_first"), "strategy")).await;
    for broken in ["trapping", "empty_answer"] {
        let bytes = std::fs::read(test_plugin(broken)).expect("wasm");
        let reply = gw.admin(Method::PUT, "/admin/plugins/router", ADMIN, bytes).await;
        reply.assert_error(422, "plugin_rejected");
        assert!(String::from_utf8_lossy(&reply.body).contains("failed its trial"), "{broken}");
    }
    assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.answered_by(), "a", "the running version kept serving");
}

#[tokio::test]
async fn berry_plugin_test_reports_every_situation() {
    let good = berry().args(["plugin", "test"]).arg(stock_file("weighted_random")).output().expect("run");
    let text = String::from_utf8_lossy(&good.stdout);
    assert!(good.status.success(), "{text}\n{}", String::from_utf8_lossy(&good.stderr));
    assert!(text.contains("pass  route \"sample-four\", every backend down, sequence 3"), "{text}");
    assert!(text.contains("pass  determinism:"), "{text}");
    assert!(text.trim_end().ends_with("0 warnings, 0 failed"), "{text}");

    let broken = berry().args(["plugin", "test"]).arg(test_plugin("panics_sometimes")).output().expect("run");
    let text = String::from_utf8_lossy(&broken.stdout);
    assert_eq!(broken.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL  route \"sample-four\", every backend healthy, sequence 3"), "{text}");
    assert!(text.contains("panics_sometimes: sequence 3 is one too many"), "{text}");
    assert!(text.contains("pass  route \"sample-four\", every backend healthy, sequence 2"), "passes are shown too");

    // Auth, on the users of a config of the author's.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("berry.toml");
    let (a, b) = (mock("a").await, mock("b").await);
    std::fs::write(&path, config_with(&a, &b, "token_auth_copy", &stock_file("token_auth"), "auth")).expect("write");
    let auth = berry().args(["plugin", "test"]).arg(stock_file("token_auth")).arg("--config").arg(&path).output();
    let auth = auth.expect("run");
    let text = String::from_utf8_lossy(&auth.stdout);
    assert!(auth.status.success(), "{text}");
    assert!(text.contains("pass  user admin's token → admitted as \"admin\" (admin)"), "{text}");
    assert!(text.contains("pass  user disabled's token → refused 401 user_disabled"), "{text}");

    // A plugin that answers disabled backends: served, with warnings, exit 1.
    let warned = berry().args(["plugin", "test"]).arg(test_plugin("pick_first")).output().expect("run");
    let text = String::from_utf8_lossy(&warned.stdout);
    assert_eq!(warned.status.code(), Some(1), "{text}");
    assert!(text.contains("WARN") && text.contains("0 failed"), "{text}");
}

#[tokio::test]
async fn println_in_a_plugin_goes_to_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("berry.toml");
    let (a, b) = (mock("a").await, mock("b").await);
    std::fs::write(&path, config_with(&a, &b, "printing", &test_plugin("printing"), "strategy")).expect("write");
    let (child, base, log) = spawn_berry(&path, &[]);
    let mut pinned = chat_body("m");
    pinned["messages"][0]["content"] = "print".into();
    let reply =
        send(Method::POST, &format!("{base}/v1/chat/completions"), Some(ADMIN_TOKEN), Some(pinned.to_string())).await;
    assert_eq!(reply.status, 200);
    sigterm(&child);
    assert_eq!(exit_of(child).await.code(), Some(0));
    let lines: Vec<String> = log.try_iter().collect();
    let printed = |text: &str, stream: &str| {
        lines.iter().any(|l| {
            l.contains(text) && l.contains("plugin=\"printing\"") && l.contains(&format!("stream=\"{stream}\""))
        })
    };
    assert!(printed("printing: configured with {}", "stdout"), "{lines:#?}");
    assert!(printed("printing: route 0 sequence", "stdout"), "{lines:#?}");
    assert!(printed("printing: an admin asked", "stderr"), "{lines:#?}");
}

#[tokio::test]
async fn pinned_plugins_load_only_with_their_hash() {
    let (a, b) = (mock("a").await, mock("b").await);
    let file = test_plugin("pick_first");
    let hash = berry::plugin::sha256_hex(&std::fs::read(&file).expect("wasm"));
    let pinned = |hash: &str| {
        let toml = config_with(&a, &b, "router", &file, "strategy");
        toml.replace("kind = \"strategy\"\n", &format!("kind = \"strategy\"\nsha256 = \"{hash}\"\n"))
    };
    let wrong = "0".repeat(64);
    let config = berry::config::parse(&pinned(&wrong), &|_| None).expect("parses");
    let refused = berry::gateway::Gateway::start(config).await.err().expect("another hash is refused");
    assert!(refused.contains("plugins.router.sha256") && refused.contains(&hash), "{refused}");

    let gw = TestGateway::start(&pinned(&hash)).await;
    assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.answered_by(), "a");
    let other = std::fs::read(test_plugin("pick_last")).expect("wasm");
    let reply = gw.admin(Method::PUT, "/admin/plugins/router", ADMIN, other).await;
    reply.assert_error(422, "plugin_rejected");
    assert!(String::from_utf8_lossy(&reply.body).contains("pins"), "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.answered_by(), "a", "the pinned version keeps serving");
}

/// A strategy that starts answering only indices the route lacks: every request is
/// served in the host's order, and the log line, the metrics and the admin API say so.
#[tokio::test]
async fn misbehaviour_is_visible() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("berry.toml");
    let (a, b) = (mock("a").await, mock("b").await);
    let mut toml = config("misbehave", &[("a", &a), ("b", &b)], &[], &format!("admin_token = \"{ADMIN}\""));
    let (entry, from_ms) = misbehave_later("misbehave", "bad_indices", Duration::from_secs(4), "");
    toml.push_str(&entry);
    std::fs::write(&path, toml).expect("write");
    let (child, base, log) = spawn_berry(&path, &[]);
    until_epoch_ms(from_ms).await;
    let url = format!("{base}/v1/chat/completions");
    for _ in 0..5 {
        let reply = send(Method::POST, &url, Some(TOKEN), Some(chat_body("m").to_string())).await;
        assert_eq!(reply.status, 200, "served in the host's order");
    }
    let plugins = send(Method::GET, &format!("{base}/admin/plugins"), Some(ADMIN), None).await.json();
    let entry = plugins["plugins"].as_array().and_then(|p| p.iter().find(|p| p["name"] == "misbehave")).cloned();
    let entry = entry.expect("listed");
    assert!(entry["invalid_answers"].as_u64() >= Some(5), "{entry}");
    assert!(entry["fallbacks"].as_u64() >= Some(5), "{entry}");
    assert!(entry["last_invalid_answer"].as_str().is_some_and(|l| l.contains("dropped 2")), "{entry}");
    assert!(entry["trial"][0].as_str().is_some_and(|t| t.ends_with("0 failed")), "{entry}");
    let metrics = String::from_utf8_lossy(&send(Method::GET, &format!("{base}/metrics"), Some(ADMIN), None).await.body)
        .to_string();
    let labels = "plugin=\"misbehave\",reason=\"strategy_answered_nothing\"";
    assert!(metric(&metrics, "berry_strategy_fallbacks_total", labels) >= 5.0, "{metrics}");
    sigterm(&child);
    assert_eq!(exit_of(child).await.code(), Some(0));
    let lines: Vec<String> = log.try_iter().collect();
    let fallback_lines = lines
        .iter()
        .filter(|l| l.contains("berry::request") && l.contains("error=\"strategy_answered_nothing\""))
        .count();
    assert!(fallback_lines >= 5, "each fallback request says so in its line: {lines:#?}");
    assert!(lines.iter().any(|l| l.contains("dropped 2 of its indices")), "the correction is logged: {lines:#?}");
}

/// A strategy that does not explain itself (`pick_last` sends everything to the
/// last backend): the status page and the weights endpoint show what it really does,
/// marked as estimated.
#[tokio::test]
async fn the_figures_of_a_plugin_without_explain_are_estimated_from_its_select() {
    let (a, b) = (mock("a").await, mock("b").await);
    let gw = TestGateway::start(&config_with(&a, &b, "router", &test_plugin("pick_last"), "strategy")).await;
    let status = gw.get("/status.json", Some(ADMIN)).await.json();
    let model = status["models"].as_array().and_then(|m| m.iter().find(|m| m["model"] == "m")).cloned();
    let model = model.expect("model m");
    assert_eq!(model["estimated"], true, "{model}");
    assert_eq!(model["backends"][0]["probability"], 0.0, "{model}");
    assert_eq!(model["backends"][1]["probability"], 1.0, "{model}");
    let weights = gw.get("/smart-ai/models/m/weights", Some(ADMIN)).await.json();
    assert_eq!(weights["models"][0]["estimated"], true, "{weights}");
    assert_eq!(weights["models"][0]["backends"][1]["probability"], 1.0, "{weights}");
    // A stock strategy explains itself: exact figures.
    let stock = gw.get("/smart-ai/models/other/weights", Some(ADMIN)).await.json();
    assert_eq!(stock["models"][0]["estimated"], false, "{stock}");
    for _ in 0..4 {
        assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.answered_by(), "b", "what the estimate says");
    }
}

#[tokio::test]
async fn uploads_name_a_known_plugin_and_the_newest_source_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("router.wasm");
    std::fs::copy(test_plugin("pick_first"), &file).expect("copy");
    let (a, b) = (mock("a").await, mock("b").await);
    let config_path = dir.path().join("berry.toml");
    std::fs::write(&config_path, config_with(&a, &b, "router", &file, "strategy")).expect("write");
    let gw = TestGateway::start_file(&config_path).await;
    let last = std::fs::read(test_plugin("pick_last")).expect("wasm");

    let unknown = gw.admin(Method::PUT, "/admin/plugins/no_such_plugin", ADMIN, last.clone()).await;
    unknown.assert_error(404, "unknown_plugin");

    let router = |gw: &TestGateway| {
        let url = gw.url("/admin/plugins");
        async move {
            let list = send(Method::GET, &url, Some(ADMIN), None).await.json();
            list["plugins"]
                .as_array()
                .and_then(|p| p.iter().find(|p| p["name"] == "router"))
                .cloned()
                .unwrap_or(Value::Null)
        }
    };
    assert_eq!(gw.admin(Method::PUT, "/admin/plugins/router", ADMIN, last).await.status, 200);
    let entry = router(&gw).await;
    assert_eq!(entry["source"], "upload", "{entry}");
    assert_eq!(entry["file"], file.display().to_string(), "the file the upload stands in for: {entry}");
    assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.answered_by(), "b");

    // A rebuilt file is newer than the upload: it serves, and DELETE says there is
    // nothing to revert, and why.
    let staged = dir.path().join("router.wasm.new");
    let rebuilt = variant(&std::fs::read(test_plugin("pick_first")).expect("wasm"), 1);
    std::fs::write(&staged, rebuilt).expect("write");
    std::fs::rename(&staged, &file).expect("rename");
    let deadline = Instant::now() + Duration::from_secs(10);
    while router(&gw).await["source"] == "upload" {
        assert!(Instant::now() < deadline, "the rebuilt file was not swapped in");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(router(&gw).await["source"], file.display().to_string());
    assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.answered_by(), "a");
    let reverted = gw.admin(Method::DELETE, "/admin/plugins/router", ADMIN, vec![]).await.json();
    assert_eq!(reverted["reverted"], false, "{reverted}");
    assert!(reverted["reason"].as_str().is_some_and(|r| r.contains("a changed file replaces an upload")), "{reverted}");
    assert_eq!(reverted["serving"]["source"], file.display().to_string(), "{reverted}");
}

/// The doc's example, read from docs/plugins.md: the Cargo.toml and src/lib.rs of
/// "A strategy in about 20 lines".
fn docs_example() -> (String, String) {
    let doc = std::fs::read_to_string(repo_root().join("docs/plugins.md")).expect("docs/plugins.md");
    let section = doc.split("## A strategy in about 20 lines").nth(1).expect("the example's section");
    let block = |lang: &str| {
        let start = section.find(&format!("```{lang}\n")).expect("a code block") + lang.len() + 4;
        section[start..].split("```").next().expect("its end").to_string()
    };
    (block("toml"), block("rust"))
}

/// The journey of issue 18 with nothing but the binary: copy `berry` alone into an
/// empty folder (no checkout reachable), scaffold, build, load, route, edit (the
/// doc's example, verbatim), rebuild, and see the swap. Then the doc's crate itself,
/// verbatim, with `berry plugin sdk`.
#[tokio::test]
async fn a_plugin_written_with_only_the_binary() {
    let home = tempfile::tempdir().expect("tempdir");
    let bin = home.path().join("bin/berry");
    std::fs::create_dir_all(bin.parent().expect("bin")).expect("mkdir");
    std::fs::copy(env!("CARGO_BIN_EXE_berry"), &bin).expect("copy the binary");
    let work = home.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    let run = |cmd: &mut Command| {
        let out = cmd.output().expect("run");
        assert!(
            out.status.success(),
            "{cmd:?}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    // cargo, as a plugin author's machine has it: no target dir or flags of ours, and
    // offline (the SDK needs nothing from the registry).
    let cargo = |dir: &Path| {
        let mut cmd = Command::new(option_env!("CARGO").unwrap_or("cargo"));
        cmd.current_dir(dir)
            .args(["build", "--release"])
            .env("CARGO_NET_OFFLINE", "true")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET");
        cmd
    };

    run(Command::new(&bin).current_dir(&work).args(["plugin", "new", "my_router", "--kind", "strategy"]));
    let crate_dir = work.join("my_router");
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).expect("Cargo.toml");
    assert!(manifest.contains("berry-plugin-sdk = { path = \"berry-plugin-sdk\" }"), "{manifest}");
    assert!(!manifest.contains(&repo_root().display().to_string()), "nothing points into a checkout");
    let started = Instant::now();
    run(&mut cargo(&crate_dir));
    eprintln!("first build of a scaffolded plugin: {:?}", started.elapsed());
    let wasm = crate_dir.join("target/wasm32-wasip2/release/my_router.wasm");
    assert!(wasm.exists());

    // Load it: `b` is tagged cheap, for the edit below.
    let config_path = work.join("berry.toml");
    std::fs::write(
        &config_path,
        format!(
            "[settings]\nadmin_token = \"{ADMIN}\"\n\
             [providers.a]\nbase_url = \"mock://a\"\nmodels = [\"up\"]\n[providers.b]\nbase_url = \"mock://b\"\nmodels = [\"up\"]\n\
             [models.m]\nname = \"m\"\nstrategy = \"my_router\"\n\
             [[models.m.backends]]\nprovider = \"a\"\nmodel = \"up\"\nweight = 3\n\
             [[models.m.backends]]\nprovider = \"b\"\nmodel = \"up\"\ntags = [\"cheap\"]\n\
             [plugins.my_router]\npath = \"my_router/target/wasm32-wasip2/release/my_router.wasm\"\nkind = \"strategy\"\n{}",
            users_toml()
        ),
    )
    .expect("write");
    let tried = run(Command::new(&bin)
        .current_dir(&work)
        .args(["plugin", "test"])
        .arg(&wasm)
        .arg("--config")
        .arg(&config_path));
    assert!(String::from_utf8_lossy(&tried.stdout).contains("0 failed"));
    let (child, base, _log) = spawn_berry_with(Command::new(&bin), &config_path, &[]);
    let url = format!("{base}/v1/chat/completions");
    let ask = || async { send(Method::POST, &url, Some(TOKEN), Some(chat_body("m").to_string())).await.answered_by() };
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        seen.insert(ask().await);
    }
    assert_eq!(seen.len(), 2, "the scaffold's weighted choice uses both backends: {seen:?}");

    // Edit: the doc's example, verbatim (backends tagged "cheap" first); rebuild.
    let (doc_manifest, doc_source) = docs_example();
    std::fs::write(crate_dir.join("src/lib.rs"), &doc_source).expect("write");
    let started = Instant::now();
    run(&mut cargo(&crate_dir));
    eprintln!("rebuild after the edit: {:?}", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answers: Vec<String> = futures_util::future::join_all((0..10).map(|_| ask())).await;
        if answers.iter().all(|a| a == "b") {
            break;
        }
        assert!(Instant::now() < deadline, "the rebuilt plugin was not swapped in: {answers:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("swap seen {:?} after the rebuild", started.elapsed());
    sigterm(&child);
    assert_eq!(exit_of(child).await.code(), Some(0));

    // The doc's crate itself, verbatim, with the SDK written out by the binary.
    let doc_crate = work.join("prefer_cheap");
    std::fs::create_dir_all(doc_crate.join("src")).expect("mkdir");
    std::fs::write(doc_crate.join("Cargo.toml"), doc_manifest).expect("write");
    std::fs::write(doc_crate.join("src/lib.rs"), doc_source).expect("write");
    run(Command::new(&bin).current_dir(&doc_crate).args(["plugin", "sdk", "--out", "berry-plugin-sdk"]));
    let mut build = cargo(&doc_crate);
    build.args(["--target", "wasm32-wasip2"]);
    run(&mut build);
    assert!(doc_crate.join("target/wasm32-wasip2/release/prefer_cheap.wasm").exists());
}
