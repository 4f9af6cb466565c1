//! Hardening round 2, reloads (issue 17, item 3): a config file goes live only once
//! its write has completed, and every applied reload says what it changed.

use std::io::Write;
use std::time::{Duration, Instant};

use http::Method;

use crate::harness::*;

const RESTRICTED: &str = "berry-restricted-token";

fn config_text(restricted_models: &str, extra_model: bool) -> String {
    let extra = if extra_model {
        "[models.added]\nname = \"added\"\n[[models.added.backends]]\nprovider = \"up\"\nmodel = \"up-model\"\n\n"
    } else {
        ""
    };
    format!(
        "[providers.up]\nbase_url = \"mock://up\"\nmodels = [\"up-model\"]\n\n\
         [models.m]\nname = \"m\"\n[[models.m.backends]]\nprovider = \"up\"\nmodel = \"up-model\"\n\n\
         [models.other]\nname = \"other\"\n[[models.other.backends]]\nprovider = \"up\"\nmodel = \"up-model\"\n\n\
         {extra}[users.tester]\ntoken = \"{TOKEN}\"\n\n[users.restricted]\ntoken = \"{RESTRICTED}\"\n\
         allowed_models = {restricted_models}\n"
    )
}

async fn status(base: &str, token: &str, model: &str) -> u16 {
    let body = chat_body(model).to_string();
    send(Method::POST, &format!("{base}/v1/chat/completions"), Some(token), Some(body)).await.status.as_u16()
}

/// Wait up to 5 s for `model` to answer `want` to `token`.
async fn until_status(base: &str, token: &str, model: &str, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = status(base, token, model).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{model} for {token}: {got}, expected {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lines of the gateway's log seen so far.
fn log_lines(log: &std::sync::mpsc::Receiver<String>, seen: &mut Vec<String>) {
    while let Ok(line) = log.try_recv() {
        seen.push(line);
    }
}

#[tokio::test]
async fn a_config_file_goes_live_only_when_its_write_completes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("berry.toml");
    std::fs::write(&path, config_text("[\"other\"]", false)).expect("write");
    let (child, base, log) = spawn_berry(&path, &[]);
    assert_eq!(status(&base, RESTRICTED, "m").await, 403);

    // A writer that stops at a line boundary, just before the restricted user's
    // allow-list, for longer than any quiet period would wait.
    let new = config_text("[\"other\", \"added\"]", true);
    let cut = new.find("allowed_models").expect("the allow-list line");
    let mut file = std::fs::File::create(&path).expect("open for writing");
    file.write_all(&new.as_bytes()[..cut]).expect("write the first part");
    file.flush().expect("flush");
    let pause = Instant::now();
    while pause.elapsed() < Duration::from_millis(1500) {
        assert_eq!(status(&base, RESTRICTED, "m").await, 403, "the half-written file must never be applied");
        assert_eq!(status(&base, TOKEN, "added").await, 404, "nor any part of it");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    file.write_all(&new.as_bytes()[cut..]).expect("write the rest");
    drop(file);
    until_status(&base, TOKEN, "added", 200).await;
    assert_eq!(status(&base, RESTRICTED, "m").await, 403);
    assert_eq!(status(&base, RESTRICTED, "added").await, 200);

    // An atomic save (write a temporary file, rename it over the config).
    let temporary = dir.path().join(".berry.toml.tmp");
    std::fs::write(&temporary, config_text("[]", true)).expect("write");
    std::fs::rename(&temporary, &path).expect("rename");
    until_status(&base, RESTRICTED, "m", 200).await;

    let mut seen = Vec::new();
    tokio::time::sleep(Duration::from_millis(200)).await;
    log_lines(&log, &mut seen);
    let text = seen.join("\n");
    for expected in [
        "model added added",
        "user restricted: allowed_models widened by added",
        "user restricted: allowed_models widened to every model",
        "the new configuration widens access",
    ] {
        assert!(text.contains(expected), "the reload log names {expected:?}:\n{text}");
    }
    sigterm(&child);
    assert_eq!(exit_of(child).await.code(), Some(0));
}
