//! The per-request plugin calls, as the gateway makes them: a strategy's `select`
//! (and smart_ai's `observe`) at 8 and 64 backends for every stock strategy, and
//! the auth policy's `authorize` for a request with typical headers.
//! SPEC §9: ≤ 2 µs each at 8 backends.

#![allow(clippy::expect_used)]

mod common;

use std::hint::black_box;

use berry::health::{Outcome, now_ms};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn strategy_calls(c: &mut Criterion) {
    let rt = common::runtime();
    let gateway = common::gateway(&rt);
    let snapshot = gateway.snapshot();
    let mut group = c.benchmark_group("strategy_select");
    for strategy in berry::plugin::STOCK_STRATEGIES {
        for size in common::SIZES {
            let route = &snapshot.routes[&common::route_name(strategy, size)];
            let states = route.states(now_ms(), &snapshot.policy);
            group.bench_with_input(BenchmarkId::new(*strategy, size), &size, |b, _| {
                b.iter(|| {
                    let request = route.request(false, now_ms());
                    black_box(route.strategy.select(&request, black_box(&states), &[]).expect("select"))
                })
            });
        }
    }
    // The baseline: the host's own native ranking (what it uses when a strategy
    // fails), comparable work without the sandbox crossing.
    for size in common::SIZES {
        let route = &snapshot.routes[&common::route_name("weighted_random", size)];
        let states = route.states(now_ms(), &snapshot.policy);
        group.bench_with_input(BenchmarkId::new("native_baseline", size), &size, |b, _| {
            b.iter(|| black_box(route.fallback_order(black_box(&states))))
        });
    }
    group.finish();

    // What a request pays per attempt after the answer: health bookkeeping, and the
    // outcome held for the strategy (smart_ai keeps a confidence score from it),
    // delivered with the next `select` (here, every 64th record delivers them).
    let mut group = c.benchmark_group("strategy_record");
    for size in common::SIZES {
        let route = &snapshot.routes[&common::route_name("smart_ai", size)];
        group.bench_with_input(BenchmarkId::new("smart_ai", size), &size, |b, _| {
            b.iter(|| route.record(black_box(1), Outcome::Success, 12.5, &snapshot.policy))
        });
    }
    group.finish();

    // The whole select phase as a request runs it: read every backend's health into
    // the records, number the request, call the plugin, check its answer.
    let mut group = c.benchmark_group("select_phase");
    for size in common::SIZES {
        let route = &snapshot.routes[&common::route_name("smart_ai", size)];
        group.bench_with_input(BenchmarkId::new("smart_ai", size), &size, |b, _| {
            b.iter(|| {
                let now = now_ms();
                let states: Vec<f64> = route.states(now, &snapshot.policy);
                let request = route.request(false, now);
                black_box(route.sanitize(route.strategy.select(&request, &states, &[]).expect("select")))
            })
        });
        // A request's whole strategy work: the select phase, then its one attempt's
        // outcome (which the next iteration's `select` carries to the plugin).
        group.bench_with_input(BenchmarkId::new("smart_ai_with_outcome", size), &size, |b, _| {
            b.iter(|| {
                let now = now_ms();
                let states: Vec<f64> = route.states(now, &snapshot.policy);
                let request = route.request(false, now);
                let (order, _) = route.sanitize(route.strategy.select(&request, &states, &[]).expect("select"));
                route.record(order[0], Outcome::Success, 12.5, &snapshot.policy);
                black_box(order)
            })
        });
    }
    group.finish();
}

fn auth_calls(c: &mut Criterion) {
    let rt = common::runtime();
    let gateway = common::gateway(&rt);
    let snapshot = gateway.snapshot();
    let mut headers = http::HeaderMap::new();
    for (name, value) in [
        ("host", "127.0.0.1:8080"),
        ("user-agent", "OpenAI/Python 1.99.9"),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("content-length", "97"),
        ("authorization", "Bearer berry-bench-token"),
    ] {
        headers.insert(name, http::HeaderValue::from_static(value));
    }
    let mut group = c.benchmark_group("auth_authorize");
    group.bench_function("token_auth", |b| {
        b.iter(|| {
            black_box(berry::server::auth::authenticate(&snapshot, black_box(&headers), "smart_ai-8").expect("auth"))
        })
    });
    // The same caller again, with the principal cache on (the default).
    let cached = common::config_toml().replace("cache_seconds = 0", "cache_seconds = 10");
    let config = berry::config::parse(&cached, &|_| None).expect("config");
    let cached = rt.block_on(berry::gateway::Gateway::start(config)).expect("gateway").snapshot();
    group.bench_function("token_auth_cached", |b| {
        b.iter(|| black_box(berry::server::auth::authenticate(&cached, black_box(&headers), "").expect("auth")))
    });
    headers.insert("authorization", http::HeaderValue::from_static("Bearer not-a-known-token"));
    group.bench_function("token_auth_denied", |b| {
        b.iter(|| black_box(berry::server::auth::authenticate(&snapshot, black_box(&headers), "smart_ai-8").is_err()))
    });
    group.finish();
}

criterion_group!(benches, strategy_calls, auth_calls);
criterion_main!(benches);
