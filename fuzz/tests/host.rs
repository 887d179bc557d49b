//! Fuzz targets for the host's own parsers of outside input: calendar files,
//! plugin manifests, and the weekly windows people set through the API.
//! Each runs a deterministic sweep under `cargo test`, random inputs for
//! `PRESENCE_FUZZ_SECONDS`, and coverage-guided runs under cargo-bolero:
//!
//! ```sh
//! cargo bolero test -p presence-fuzz --test host calendar_files -T 600
//! ```
//! Besides "never panics", each checks what the parser promises: round trips,
//! bounds, or agreement with a simple model. (The plugins' targets are one test
//! file per plugin: each plugin crate exports a whole component, and two cannot
//! be linked into one binary.)

use presence_fuzz::{Edit, pick};

const ICS: &[u8] = include_bytes!("../../tests/fixtures/wedding-season.ics");
const GOOGLE: &[u8] = include_bytes!("../../tests/fixtures/google-events.json");
const GRAPH: &[u8] = include_bytes!("../../tests/fixtures/graph-calendarview.json");

/// Calendar files (`classify`): iCalendar with recurrences, Google and Graph JSON.
#[test]
fn calendar_files() {
    use presence_host::calendar::{Window, read_text};
    let window = Window {
        from: "2026-01-01T00:00:00Z".parse().unwrap(),
        to: "2027-01-01T00:00:00Z".parse().unwrap(),
    };
    presence_fuzz::fuzz!((u8, Vec<Edit>), |(seed, edits)| {
        let text = String::from_utf8_lossy(&pick(&[ICS, GOOGLE, GRAPH], *seed, edits)).into_owned();
        if let Ok(reading) = read_text(&text, "fuzz", window, chrono_tz::Europe::London) {
            // Recurrences are expanded only so far: a hostile RRULE cannot
            // make millions of occurrences.
            assert!(reading.occurrences.len() <= 100_000);
            for o in &reading.occurrences {
                assert!(o.event.end >= o.event.start, "{:?}", o.event);
            }
        }
    });
}

/// Plugin manifests, as operators and plugin authors write them.
#[test]
fn manifests() {
    use presence_host::plugins::Manifest;
    use presence_host::plugins::manifest::MAX_MEMORY_MIB;
    let seeds: [&[u8]; 4] = [
        include_bytes!("../../plugins/slack/plugin.toml"),
        include_bytes!("../../plugins/twilio/plugin.toml"),
        include_bytes!("../../plugins/wedding-keywords/plugin.toml"),
        include_bytes!("../../plugins/email/plugin.toml"),
    ];
    let path = std::path::Path::new("plugin.toml");
    presence_fuzz::fuzz!((u8, Vec<Edit>), |(seed, edits)| {
        let text = String::from_utf8_lossy(&pick(&seeds, *seed, edits)).into_owned();
        if let Ok(m) = Manifest::parse(&text, path) {
            // Whatever a manifest asks, its limits stay inside the host's.
            assert!(m.limits.memory_mib >= 1 && m.limits.memory_mib <= MAX_MEMORY_MIB);
            assert!(!m.name.as_str().is_empty());
        }
    });
}

/// Quiet hours and send windows (`PUT /api/users`): parsing, and where the
/// router looks for the next open moment.
#[test]
fn weekly_windows() {
    use presence_host::notify::windows::{Weekly, WindowsSpec};
    const DAYS: [&str; 9] = [
        "mon", "tue", "wed", "thu", "fri", "sat", "sun", "daily", "holiday",
    ];
    // Zones without DST, where a window is never skipped, and zones with it.
    const FIXED: [&str; 3] = ["UTC", "Asia/Kolkata", "Asia/Kathmandu"];
    const DST: [&str; 3] = ["Europe/London", "America/New_York", "Australia/Lord_Howe"];
    presence_fuzz::fuzz!((Vec<(u8, u8, u8, u8, u8)>, u8, u32), |(
        windows,
        zone,
        minutes,
    )| {
        let spec: WindowsSpec = windows
            .iter()
            .map(|&(day, h1, m1, h2, m2)| {
                (
                    DAYS[day as usize % DAYS.len()].to_string(),
                    (
                        format!("{:02}:{:02}", h1 % 26, m1 % 61),
                        format!("{:02}:{:02}", h2 % 24, m2 % 60),
                    ),
                )
            })
            .collect();
        let Ok(weekly) = Weekly::parse(&spec) else {
            return;
        };
        // Any moment from 1970 to about 2100.
        let now = i64::from(*minutes % 68_000_000) * 60_000;
        let fixed = *zone % 2 == 0;
        let tz = if fixed {
            FIXED[*zone as usize % FIXED.len()]
        } else {
            DST[*zone as usize % DST.len()]
        };
        match weekly.next_open(Some(tz), now) {
            None => assert!(spec.is_empty(), "{spec:?} has windows but none opens"),
            Some(t) => {
                assert!(t >= now);
                assert!(t - now <= 8 * 24 * 3_600_000, "{spec:?} {tz} {now}: {t}");
                if fixed {
                    assert!(
                        weekly.open_until(Some(tz), t).is_some(),
                        "{spec:?} {tz} {now}: {t} is not inside a window"
                    );
                }
            }
        }
    });
}
