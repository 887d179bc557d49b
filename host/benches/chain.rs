//! 100,000 events through a tenant chain of three classifier plugins (two agency
//! rules that pass most events on, then `wedding-keywords`), every call on a fresh
//! instance, calls spread over the machine's cores, against the same chain
//! compiled natively. Prints events per second and the ratio.
//!
//! Needs the plugins and fixtures: `cargo xtask plugins && cargo xtask test-plugins`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use presence_host::classify;
use presence_host::config::PluginOverrides;
use presence_host::model::CalendarEvent;
use presence_host::plugins::PluginRegistry;
use presence_host::runtime::Runtime;

#[path = "support.rs"]
mod support;

const EVENTS: usize = 100_000;
const TITLES: &[&str] = &[
    "Venue walkthrough with the couple",
    "Ceremony rehearsal",
    "Call with the florist",
    "Dentist",
    "Client consultation: Harper & Lee",
    "Cake tasting",
    "Team meeting",
    "Gym",
];

fn event(i: usize) -> CalendarEvent {
    support::event(i, TITLES[i % TITLES.len()])
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let plugins = tempfile::tempdir().unwrap();
    let tasting = std::fs::read(root.join("target/test-plugins/tasting.wasm"))
        .expect("run `cargo xtask test-plugins` first");
    for name in ["agency-a", "agency-b"] {
        let dir = plugins.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("plugin.wasm"), &tasting).unwrap();
        std::fs::write(
            dir.join("plugin.toml"),
            format!("schema_version = 1\nname = \"{name}\"\nversion = \"0.1.0\"\nwit = \"0.1.0\"\nworld = \"classifier\"\n"),
        )
        .unwrap();
    }
    let keywords = plugins.path().join("wedding-keywords");
    std::fs::create_dir_all(&keywords).unwrap();
    for f in ["plugin.wasm", "plugin.toml"] {
        std::fs::copy(
            root.join("target/plugins/wedding-keywords").join(f),
            keywords.join(f),
        )
        .expect("run `cargo xtask plugins` first");
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (registry, sandboxed) = rt.block_on(async {
        let runtime = Arc::new(Runtime::standalone(64, None).await.unwrap());
        let registry = Arc::new(PluginRegistry::new(
            runtime,
            plugins.path().to_path_buf(),
            BTreeMap::<String, PluginOverrides>::new(),
        ));
        let report = registry.reload().await;
        assert_eq!(report.loaded.len(), 3, "{report:?}");
        let chain: Arc<Vec<String>> = Arc::new(vec![
            "agency-a".into(),
            "agency-b".into(),
            "wedding-keywords".into(),
        ]);
        let events: Arc<Vec<CalendarEvent>> = Arc::new((0..EVENTS).map(event).collect());
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..workers * 4 {
            let (registry, chain, events) = (registry.clone(), chain.clone(), events.clone());
            tasks.push(tokio::spawn(async move {
                let mut decided = 0usize;
                for e in events.iter().skip(w).step_by(workers * 4) {
                    if classify::classify(&registry, &chain, "bench", e)
                        .await
                        .is_some()
                    {
                        decided += 1;
                    }
                }
                decided
            }));
        }
        let mut decided = 0;
        for t in tasks {
            decided += t.await.unwrap();
        }
        (registry, (started.elapsed(), decided))
    });
    drop(registry);

    let events: Vec<_> = (0..EVENTS).map(|i| support::native(&event(i))).collect();
    let started = Instant::now();
    let native_decided = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let events = &events;
                s.spawn(move || {
                    events
                        .iter()
                        .skip(w)
                        .step_by(workers)
                        .filter(|e| {
                            tasting::classify_event(e)
                                .or_else(|| tasting::classify_event(e))
                                .or_else(|| wedding_keywords::classify_event(e))
                                .is_some()
                        })
                        .count()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum::<usize>()
    });
    let native = started.elapsed();
    assert_eq!(
        sandboxed.1, native_decided,
        "the sandboxed and native chains disagree"
    );
    let rate = |d: std::time::Duration| EVENTS as f64 / d.as_secs_f64();
    println!("chain of 3 classifier plugins, {EVENTS} events, {workers} threads");
    println!(
        "  sandboxed: {:>10.0} events/s ({:.2?})",
        rate(sandboxed.0),
        sandboxed.0
    );
    println!(
        "  native:    {:>10.0} events/s ({:.2?})",
        rate(native),
        native
    );
    println!(
        "  ratio:     native is {:.1}x faster",
        rate(native) / rate(sandboxed.0)
    );
}
