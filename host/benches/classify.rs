//! One classification through `wedding-keywords`: (a) in the sandbox, on a fresh
//! instance per call from the plugin's `InstancePre` with the pooling allocator,
//! exactly as the host serves it; (b) the same rules compiled natively, the floor.
//!
//! Needs the bundled plugins: `cargo xtask plugins` first.

use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use presence_host::model::{CalendarEvent, Transparency};
use presence_host::plugins::registry::load_plugin;
use presence_host::runtime::{HostServices, Runtime, RuntimeConfig};
use presence_host::store::{MasterKey, Store};

fn event() -> CalendarEvent {
    CalendarEvent {
        id: "evt-1".into(),
        title: "Venue walkthrough with the couple".into(),
        description: Some("Bring the floor plan and the timeline".into()),
        location: Some("Old Barn, Ashford".into()),
        attendees: vec!["planner@example.com".into(), "couple@example.com".into()],
        start: 1_781_960_400_000,
        end: 1_781_964_000_000,
        time_zone: Some("Europe/London".into()),
        all_day: false,
        transparency: Transparency::Opaque,
        online_meeting_url: None,
    }
}

fn native_event() -> presence_sdk::classifier::CalendarEvent {
    let e = event();
    presence_sdk::classifier::CalendarEvent {
        id: e.id,
        title: e.title,
        description: e.description,
        location: e.location,
        attendees: e.attendees,
        start: e.start,
        end: e.end,
        time_zone: e.time_zone,
        all_day: e.all_day,
        transparency: presence_sdk::classifier::Transparency::Opaque,
        online_meeting_url: e.online_meeting_url,
    }
}

fn classify(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let runtime = rt.block_on(async {
        let key = MasterKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
        let store = Store::open("sqlite::memory:", key).await.unwrap();
        Arc::new(
            Runtime::new(
                &RuntimeConfig {
                    max_concurrent_calls: 16,
                    cache_dir: None,
                },
                HostServices {
                    store,
                    http: presence_host::capabilities::http::client(),
                },
            )
            .unwrap(),
        )
    });
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/wedding-keywords");
    let plugin = load_plugin(&runtime, &dir, None).expect("run `cargo xtask plugins` first");
    let sandboxed_event = event();
    let expected = rt
        .block_on(runtime.classify(&plugin.pre, &plugin.grants, "bench", &sandboxed_event))
        .unwrap()
        .expect("the bench event is a venue event");
    let native = wedding_keywords::classify_event(&native_event()).unwrap();
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
    let native_input = native_event();
    group.bench_function("native", |b| {
        b.iter(|| wedding_keywords::classify_event(std::hint::black_box(&native_input)))
    });
    group.finish();
}

criterion_group!(benches, classify);
criterion_main!(benches);
