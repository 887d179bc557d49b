//! `presence-host classify`: dry runs over real calendar exports.

mod support;

use support::*;

/// Runs `presence-host classify` on a fixture with the bundled plugins.
fn classify(file: &str, extra: &[&str]) -> (bool, String, String) {
    let _ = bundled("wedding-keywords");
    classify_path(&workspace_root().join("tests/fixtures").join(file), extra)
}

/// Runs `presence-host classify` on any file, with a fresh data folder.
fn classify_path(path: &std::path::Path, extra: &[&str]) -> (bool, String, String) {
    let data = tempfile::tempdir().unwrap();
    let plugins = workspace_root().join("target/plugins");
    let mut args = vec![
        "classify",
        path.to_str().unwrap(),
        "--data-dir",
        data.path().to_str().unwrap(),
        "--plugins-dir",
        plugins.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    cli(&args, None)
}

fn lines_about<'a>(out: &'a str, title: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.ends_with(title)).collect()
}

#[test]
fn an_ics_export_is_expanded_and_classified() {
    let (ok, out, err) = classify(
        "wedding-season.ics",
        &[
            "--from",
            "2026-06-14",
            "--to",
            "2026-07-01",
            "--tz",
            "Europe/London",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("7 occurrence(s)"), "{out}");
    // TZID, escaped text (\, and \;), and the classifier that decided.
    let ceremony = lines_about(&out, "Ceremony - Harper & Lee");
    assert_eq!(ceremony.len(), 1, "{out}");
    assert!(
        ceremony[0].starts_with("2026-06-20 Sat 14:00-16:00 Europe/London"),
        "{}",
        ceremony[0]
    );
    assert!(
        ceremony[0].contains("📸 Ceremony prep - Old Barn, Ashford [wedding-keywords]"),
        "{}",
        ceremony[0]
    );
    // RRULE COUNT=4 from 06-15: the 06-22 EXDATE removed, the 06-29 occurrence moved by a
    // RECURRENCE-ID override, 07-06 outside the window. The TZID is a Windows name
    // resolved through its VTIMEZONE's X-LIC-LOCATION.
    let sync: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("Weekly florist sync"))
        .collect();
    assert_eq!(sync.len(), 2, "{out}");
    assert!(
        sync[0].starts_with("2026-06-15 Mon 09:00-10:00"),
        "{}",
        sync[0]
    );
    assert!(
        sync[1].starts_with("2026-06-29 Mon 11:30-12:30") && sync[1].ends_with("(moved)"),
        "{}",
        sync[1]
    );
    assert!(!out.contains("2026-06-22"), "{out}");
    // All-day (VALUE=DATE), UTC with DURATION and a folded summary, transparent and non-wedding events.
    assert!(
        lines_about(&out, "Setup day at the venue")[0].starts_with("2026-06-19 Fri (all day)"),
        "{out}"
    );
    let consult = out
        .lines()
        .find(|l| l.contains("Client consultation:"))
        .unwrap();
    assert!(
        consult.starts_with("2026-06-18 Thu 08:00-08:45 UTC"),
        "{consult}"
    );
    assert!(
        consult.ends_with("goes on and on to be folded by the exporter"),
        "{consult}"
    );
    assert!(lines_about(&out, "Lunch")[0].contains("free"), "{out}");
    assert!(
        lines_about(&out, "Dentist")[0].contains("no wedding category"),
        "{out}"
    );
    assert!(!out.contains("outside the window"), "{out}");
}

#[test]
fn google_and_graph_json_are_read() {
    let (ok, out, err) = classify(
        "google-events.json",
        &["--from", "2026-06-14", "--to", "2026-07-01"],
    );
    assert!(ok, "{err}");
    let team: Vec<&str> = lines_about(&out, "Florist team meeting");
    // DAILY;COUNT=5 from 06-15 with 06-17 excluded.
    assert_eq!(team.len(), 4, "{out}");
    assert!(
        team[0].starts_with("2026-06-15 Mon 09:00-09:30 America/New_York"),
        "{}",
        team[0]
    );
    assert!(
        lines_about(&out, "Walkthrough with the couple")[0].contains("🏰 Venue visit"),
        "{out}"
    );
    assert!(
        !out.contains("Rehearsal"),
        "a cancelled event was listed: {out}"
    );

    let (ok, out, err) = classify(
        "graph-calendarview.json",
        &["--from", "2026-06-14", "--to", "2026-07-01"],
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("2 occurrence(s)"), "{out}");
    let dinner = lines_about(&out, "Rehearsal dinner")[0];
    assert!(
        dinner.starts_with("2026-06-19 Fri 18:00-21:00 Europe/Lisbon"),
        "{dinner}"
    );
    assert!(
        dinner.contains("📸 Ceremony prep - Quinta do Lago"),
        "{dinner}"
    );
    assert!(
        err.contains("seriesMaster"),
        "the skipped series master is reported: {err}"
    );
}

#[test]
fn malformed_files_are_reported_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.ics");
    std::fs::write(
        &bad,
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nDTSTART:20260620T100000Z\r\nSUMMARY:folded\r\n  title\r\nSUMMARY;broken\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
    )
    .unwrap();
    let (ok, _, err) = classify_path(&bad, &[]);
    assert!(!ok);
    assert!(
        err.contains("bad.ics: line 7:") && err.contains("SUMMARY;broken"),
        "{err}"
    );

    let json = dir.path().join("bad.json");
    std::fs::write(&json, "{\n  \"items\": [\n    {\"summary\": }\n  ]\n}").unwrap();
    let (ok, _, err) = classify_path(&json, &[]);
    assert!(!ok);
    assert!(err.contains("bad.json: line 3:"), "{err}");

    let semantic = dir.path().join("semantic.ics");
    std::fs::write(
        &semantic,
        "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART:2026-06-20\r\nSUMMARY:x\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nDTSTART;TZID=Mars/Olympus:20260620T100000\r\nSUMMARY:y\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
    )
    .unwrap();
    let (ok, out, err) = classify_path(&semantic, &["--from", "2026-06-01"]);
    assert!(ok, "bad events are skipped, not fatal: {err}");
    assert!(out.starts_with("0 occurrence(s)"), "{out}");
    assert!(err.contains("line 2: event skipped: DTSTART"), "{err}");
    assert!(
        err.contains("line 6: event skipped") && err.contains("Mars/Olympus"),
        "{err}"
    );

    // An export whose event ends before it starts (found by the calendar fuzz
    // target): skipped with a warning, as in iCalendar files.
    let inverted = dir.path().join("inverted.json");
    std::fs::write(
        &inverted,
        r#"{"value": [{"id": "AAMk1", "subject": "Rehearsal dinner",
            "start": {"dateTime": "2026-06-20T19:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-06-20T17:00:00", "timeZone": "UTC"}}]}"#,
    )
    .unwrap();
    let (ok, out, err) = classify_path(&inverted, &["--from", "2026-06-01"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("0 occurrence(s)"), "{out}");
    assert!(
        err.contains("AAMk1") && err.contains("ends before it starts"),
        "{err}"
    );
}

#[test]
fn compare_shows_where_two_rule_sets_disagree() {
    // Comparing the chain with its own only member: no disagreement.
    let same = bundled("wedding-keywords");
    let (ok, out, err) = classify(
        "wedding-season.ics",
        &[
            "--from",
            "2026-06-14",
            "--to",
            "2026-07-01",
            "--compare",
            same.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("0 occurrence(s) classified differently by wedding-keywords"),
        "{out}"
    );
    // A provider is not a classifier.
    let (ok, _, err) = classify(
        "wedding-season.ics",
        &["--compare", bundled("slack").to_str().unwrap()],
    );
    assert!(!ok && err.contains("--compare takes a classifier"), "{err}");
}
