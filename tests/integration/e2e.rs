//! The official `openai` Python SDK as a real client, against an in-process gateway.
//! The test installs the SDK from PyPI into a virtualenv under `target/` (once).

use std::path::PathBuf;
use std::process::Command;

use crate::harness::*;

fn python_with_openai() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = root.join("target").join("e2e-venv");
    let python = venv.join("bin").join("python");
    let has_sdk = |py: &PathBuf| Command::new(py).args(["-c", "import openai"]).status().is_ok_and(|s| s.success());
    if !has_sdk(&python) {
        let made = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().expect("python3 -m venv");
        assert!(made.success(), "creating the virtualenv failed");
        let installed = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "openai>=1.40,<3"])
            .status()
            .expect("pip install openai");
        assert!(installed.success(), "installing the openai SDK from PyPI failed");
    }
    assert!(has_sdk(&python), "the openai SDK is not importable");
    python
}

#[tokio::test]
async fn the_official_openai_sdk_works_through_berry() {
    let up = berry::mock::MockServer::start(
        "127.0.0.1:0",
        berry::mock::MockSettings { name: "up".into(), chunks: 4, ..Default::default() },
    )
    .await
    .expect("mock");
    let gw = TestGateway::start(&config("weighted_random", &[("up", &up)], &[], "")).await;
    let python = tokio::task::spawn_blocking(python_with_openai).await.expect("join");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/openai_client.py");
    let base = gw.url("/v1");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("BERRY_BASE_URL", base)
            .env("BERRY_TOKEN", TOKEN)
            .env("BERRY_MODEL", "m")
            .output()
            .expect("run the SDK script")
    })
    .await
    .expect("join");
    assert!(
        output.status.success(),
        "SDK script failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("OK"));
}
