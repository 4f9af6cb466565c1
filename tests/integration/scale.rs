//! Hardening round 2, config size (issue 17, item 4): the stock plugins load the
//! configurations real deployments have, with tens of thousands of users and models.

use std::fmt::Write as _;
use std::time::Instant;

use crate::harness::*;

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// `models` models over two mocks (every model on both), `users` users whose token
/// is `user-<i>` (plaintext, or hashed when `hashed`).
fn big_config(up: &berry::mock::MockServer, models: usize, users: usize, hashed: bool, strategy: &str) -> String {
    let mut s = provider_toml("up", up);
    s.push_str(&provider_toml("up2", up));
    for m in 0..models {
        let _ = write!(
            s,
            "[models.m{m}]\nname = \"m{m}\"\nstrategy = \"{strategy}\"\n\
             [[models.m{m}.backends]]\nprovider = \"up\"\nmodel = \"up-model\"\ntags = [\"premium\"]\n\
             [[models.m{m}.backends]]\nprovider = \"up2\"\nmodel = \"up-model\"\nweight = 2\n"
        );
    }
    for u in 0..users {
        let token = format!("user-{u}");
        if hashed {
            let _ = writeln!(
                s,
                "[users.u{u}]\ntoken_sha256 = \"{}\"\nallowed_models = [\"m0\", \"m1\"]",
                sha256_hex(&token)
            );
        } else {
            let _ = writeln!(s, "[users.u{u}]\ntoken = \"{token}\"\nallowed_models = [\"m0\", \"m1\"]");
        }
    }
    s
}

async fn loads_and_serves(toml: &str, user: usize, model: &str) {
    let started = Instant::now();
    let gw = TestGateway::start(toml).await;
    eprintln!("started in {:?}", started.elapsed());
    let token = format!("user-{user}");
    let reply = gw.chat(&token, &chat_body(model)).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(gw.chat(&token, &chat_body("m2")).await.status, 403, "the allow-list holds");
}

#[tokio::test]
async fn fifty_thousand_users_load_with_plaintext_or_hashed_tokens() {
    let up = mock("up").await;
    loads_and_serves(&big_config(&up, 3, 50_000, false, "weighted_random"), 49_999, "m1").await;
    loads_and_serves(&big_config(&up, 3, 50_000, true, "weighted_random"), 31_337, "m0").await;
}

#[tokio::test]
async fn twenty_thousand_models_load_with_every_stock_strategy() {
    let up = mock("up").await;
    let parsed =
        berry::config::parse(&big_config(&up, 20_000, 2, false, "weighted_random"), &|_| None).expect("parses");
    for strategy in berry::plugin::STOCK_STRATEGIES {
        let mut config = parsed.clone();
        for model in &mut config.models {
            model.strategy = strategy.to_string();
        }
        let started = Instant::now();
        let gateway = berry::gateway::Gateway::start(config).await.unwrap_or_else(|e| panic!("{strategy}: {e}"));
        eprintln!("{strategy}: 20,000 models prepared in {:?}", started.elapsed());
        let snapshot = gateway.snapshot();
        let route = snapshot.routes.get("m19999").expect("the last model");
        let states = route.states(berry::health::now_ms(), &snapshot.policy);
        let order = route.strategy.select(&route.request(false, berry::health::now_ms()), &states, &[]);
        assert_eq!(order.map(|o| o.len()).unwrap_or(0), 2, "{strategy} ranks the last model's backends");
    }
}
