//! The official `openai` and `anthropic` Python SDKs as real clients, against an
//! in-process gateway. The test installs both SDKs from PyPI into a virtualenv under
//! `target/` (once).

use std::path::PathBuf;
use std::process::Command;

use berry::mock::{MockServer, MockSettings};

use crate::harness::*;

/// The SDKs, with the versions they must be at least.
const SDKS: [(&str, &str); 2] = [("openai", "openai>=1.66,<3"), ("anthropic", "anthropic>=0.40,<1")];

fn python_with_sdks() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = root.join("target").join("e2e-venv");
    let python = venv.join("bin").join("python");
    let has = |py: &PathBuf, module: &str| {
        Command::new(py).args(["-c", &format!("import {module}")]).status().is_ok_and(|s| s.success())
    };
    if !python.exists() {
        let made = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().expect("python3 -m venv");
        assert!(made.success(), "creating the virtualenv failed");
    }
    let missing: Vec<&str> = SDKS.iter().filter(|(m, _)| !has(&python, m)).map(|(_, spec)| *spec).collect();
    if !missing.is_empty() {
        let installed = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .args(&missing)
            .status()
            .expect("pip install");
        assert!(installed.success(), "installing {missing:?} from PyPI failed");
    }
    for (module, _) in SDKS {
        assert!(has(&python, module), "the {module} SDK is not importable");
    }
    python
}

async fn mock_named(name: &str) -> MockServer {
    MockServer::start(
        "127.0.0.1:0",
        MockSettings { name: name.into(), chunks: 4, split_bytes: 7, ..Default::default() },
    )
    .await
    .expect("mock")
}

fn run(python: PathBuf, script: &str, env: Vec<(&'static str, String)>) -> std::process::Output {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e").join(script);
    Command::new(python).arg(script).envs(env).output().expect("run the SDK script")
}

#[tokio::test]
async fn the_official_openai_and_anthropic_sdks_work_through_berry() {
    let (up, oa, an, ge) =
        (mock_named("up").await, mock_named("oa").await, mock_named("an").await, mock_named("ge").await);
    // The usage ledger on: what the SDKs report is compared with it below.
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("usage.db");
    let mut toml =
        config("weighted_random", &[("up", &up)], &[], &format!("usage_db = {:?}", db.display().to_string()));
    for (name, mock, kind) in [("oa", &oa, "openai"), ("an", &an, "anthropic"), ("ge", &ge, "gemini")] {
        toml.push_str(&format!(
            "[providers.{name}]\nbase_url = \"{}\"\napi_key = \"sk-{name}\"\nmodels = [\"up-model\"]\nbackend_type = \"{kind}\"\n",
            mock.base_url()
        ));
    }
    toml.push_str("[models.mixed]\nname = \"mixed\"\nstrategy = \"round_robin\"\n");
    for name in ["oa", "an", "ge"] {
        toml.push_str(&format!("[[models.mixed.backends]]\nprovider = \"{name}\"\nmodel = \"up-model\"\n"));
    }
    toml.push_str(
        "[models.claude]\nname = \"claude\"\n[[models.claude.backends]]\nprovider = \"an\"\nmodel = \"up-model\"\n",
    );
    toml.push_str(
        "[users.limited]\ntoken = \"berry-limited-token\"\n[users.limited.rate_limit]\nrequests_per_minute = 1\n",
    );
    let gw = TestGateway::start(&toml).await;
    let python = tokio::task::spawn_blocking(python_with_sdks).await.expect("join");

    let openai_env = vec![
        ("BERRY_BASE_URL", gw.url("/v1")),
        ("BERRY_TOKEN", TOKEN.to_string()),
        ("BERRY_MODEL", "m".to_string()),
        ("BERRY_MIXED_MODEL", "mixed".to_string()),
    ];
    let anthropic_env = vec![
        ("BERRY_BASE_URL", gw.base.clone()),
        ("BERRY_TOKEN", TOKEN.to_string()),
        ("BERRY_MODEL", "mixed".to_string()),
        ("BERRY_NATIVE_MODEL", "claude".to_string()),
        ("BERRY_LIMITED_TOKEN", "berry-limited-token".to_string()),
    ];
    let mut reported = Vec::new();
    for (script, env, ok) in [
        ("openai_client.py", openai_env, "openai SDK end-to-end: OK"),
        ("anthropic_client.py", anthropic_env, "anthropic SDK end-to-end: OK"),
    ] {
        let python = python.clone();
        let output = tokio::task::spawn_blocking(move || run(python, script, env)).await.expect("join");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains(ok),
            "{script} failed:\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        reported.extend(stdout.lines().filter_map(|l| l.strip_prefix("USAGE ")).map(str::to_string));
    }

    // Issue 20: the ledger's tokens are what each SDK reported, request by request
    // (OpenAI plain, streamed with include_usage, translated; Anthropic native and
    // translated, plain and streamed).
    let ledger = gw.gateway.accounting.ledger.as_ref().expect("ledger");
    assert!(ledger.flush(std::time::Duration::from_secs(10)));
    let db = berry::usage::ledger::connect(&db).expect("open the ledger");
    assert!(reported.len() >= 19, "{reported:?}");
    for line in &reported {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (id, input, output): (&str, i64, i64) =
            (fields[0], fields[1].parse().expect("input"), fields[2].parse().expect("output"));
        let row: (i64, i64) = db
            .query_row("SELECT input_tokens, output_tokens FROM requests WHERE request_id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap_or_else(|e| panic!("{id} is not in the ledger: {e}"));
        assert_eq!(row, (input, output), "{id}: the ledger says {row:?}, the SDK reported ({input}, {output})");
    }
}
