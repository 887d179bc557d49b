//! One classification through `wedding-keywords`: (a) in the sandbox, on a fresh
//! instance per call from the plugin's `InstancePre` with the pooling allocator,
//! exactly as the host serves it; (b) the same rules compiled natively, the floor.
//!
//! Needs the bundled plugins: `cargo xtask plugins` first.

use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use presence_host::plugins::registry::load_plugin;
use presence_host::runtime::Runtime;

#[path = "support.rs"]
mod support;

fn classify(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let runtime = Arc::new(rt.block_on(Runtime::standalone(16, None)).unwrap());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/wedding-keywords");
    let plugin = load_plugin(&runtime, &dir, None).expect("run `cargo xtask plugins` first");
    let sandboxed_event = support::event(1, "Venue walkthrough with the couple");
    let expected = rt
        .block_on(runtime.classify(&plugin.pre, &plugin.grants, "bench", &sandboxed_event))
        .unwrap()
        .expect("the bench event is a venue event");
    let native = wedding_keywords::classify_event(&support::native(&sandboxed_event)).unwrap();
    assert_eq!(
        expected.status_text, native.status_text,
        "sandbox and native disagree"
    );

    let mut group = c.benchmark_group("classify");
    group.bench_function("sandboxed_fresh_instance", |b| {
        b.to_async(&rt).iter(|| async {
            runtime
                .classify(&plugin.pre, &plugin.grants, "bench", &sandboxed_event)
                .await
                .unwrap()
        })
    });
    let native_input = support::native(&sandboxed_event);
    group.bench_function("native", |b| {
        b.iter(|| wedding_keywords::classify_event(std::hint::black_box(&native_input)))
    });
    group.finish();
}

criterion_group!(benches, classify);
criterion_main!(benches);
