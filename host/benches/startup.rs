//! Cold start to ready: from spawning `presence-host serve` with the bundled
//! plugins until it prints its address, with an empty data directory (every
//! plugin compiled) and with a warm one (compiled plugins loaded from the cache).
//!
//! Needs the bundled plugins: `cargo xtask plugins` first.

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};

#[path = "support.rs"]
mod support;

fn start_until_ready(data_dir: &Path) {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins");
    let (mut child, _url) = support::serve(data_dir, &plugins);
    child.kill().unwrap();
    child.wait().unwrap();
}

fn startup(c: &mut Criterion) {
    let mut group = c.benchmark_group("startup");
    group.sample_size(10);
    group.bench_function("empty_cache", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| start_until_ready(dir.path()),
            criterion::BatchSize::PerIteration,
        )
    });
    let warm = tempfile::tempdir().unwrap();
    start_until_ready(warm.path());
    group.bench_function("warm_cache", |b| b.iter(|| start_until_ready(warm.path())));
    group.finish();
}

criterion_group!(benches, startup);
criterion_main!(benches);
