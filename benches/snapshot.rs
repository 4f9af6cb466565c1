//! Config snapshots: the per-request load of the live snapshot (one atomic
//! load), and the off-path work of a reload: parse and validate the TOML, then
//! build a snapshot (compiled plugins come from the cache, instances are made and
//! configured) and swap it in.

#![allow(clippy::expect_used)]

mod common;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

fn snapshot(c: &mut Criterion) {
    let rt = common::runtime();
    let gateway = common::gateway(&rt);
    let mut group = c.benchmark_group("snapshot");
    group.bench_function("load", |b| b.iter(|| black_box(gateway.snapshot())));
    let toml = common::config_toml();
    group.bench_function("parse_config", |b| {
        b.iter(|| black_box(berry::config::parse(black_box(&toml), &|_| None).expect("valid")))
    });
    group.sample_size(20);
    group.bench_function("reload", |b| {
        b.to_async(&rt).iter(|| async { gateway.reload(common::config()).await.expect("reload") })
    });
    group.finish();
}

criterion_group!(benches, snapshot);
criterion_main!(benches);
