//! End to end: the notification router. Urgency against presence, waiting
//! until the recipient is free, the wedding-day emergency on every channel,
//! fallback from a failing channel, idempotent submission, and the decisions
//! recorded on each notification. The channel is the real twilio plugin
//! against the loopback Twilio emulator.

mod support;

use std::time::Duration;

use serde_json::json;
use support::twilio::*;
use support::*;

const PHONE: &str = "+15551234567";

fn start(twilio: &TwilioEmulator, extra: &str) -> Host {
    Host::start(
        PluginsDir::new().with_bundled("twilio"),
        &format!(
            "{extra}\n[plugins.twilio]\nextra_allowed_hosts = [\"{base}\"]\n\
             [plugins.twilio.config]\napi_base = \"{base}\"\naccount_sid = \"{sid}\"\n\
             api_key_sid = \"{key}\"\nfrom_number = \"{SMS_NUMBER}\"\nwhatsapp_from = \"{WHATSAPP_SENDER}\"\n",
            base = twilio.api_base(),
            sid = twilio.account.sid,
            key = twilio.account.api_key_sid,
        ),
        &[(
            "twilio.api-key-secret",
            twilio.account.api_key_secret.as_bytes(),
            false,
        )],
    )
}

async fn channels(host: &Host, user: &str, addresses: &[&str]) {
    let channels: Vec<_> = addresses
        .iter()
        .map(|a| json!({"plugin": "twilio", "address": a}))
        .collect();
    let admin = host.admin.clone();
    let (status, body) = host
        .api(
            "PUT",
            &format!("/api/users/{user}"),
            &admin,
            Some(json!({"channels": channels})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn set_presence(host: &Host, user: &str, availability: Option<&str>) {
    let admin = host.admin.clone();
    let (status, body) = match availability {
        Some(a) => {
            host.api(
                "PUT",
                &format!("/api/presence/{user}"),
                &admin,
                Some(json!({"availability": a, "status_text": "Vows"})),
            )
            .await
        }
        None => {
            host.api("DELETE", &format!("/api/presence/{user}"), &admin, None)
                .await
        }
    };
    assert_eq!(status, 200, "{body}");
}

async fn submit(host: &Host, body: serde_json::Value, key: Option<&str>) -> Vec<String> {
    let mut req = host
        .client
        .post(host.url("/api/notifications"))
        .bearer_auth(&host.admin)
        .json(&body);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let answer: serde_json::Value = resp.json().await.unwrap();
    answer["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect()
}

async fn state_of(host: &Host, id: &str) -> serde_json::Value {
    let (status, n) = host.get_json(&format!("/api/notifications/{id}")).await;
    assert_eq!(status, 200, "{n}");
    n
}

async fn wait_state(host: &Host, id: &str, state: &str) -> serde_json::Value {
    for _ in 0..150 {
        let n = state_of(host, id).await;
        if n["state"] == state {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{id} never became {state}: {}", state_of(host, id).await);
}

/// A notification's latest decision.
fn last_decision(n: &serde_json::Value) -> serde_json::Value {
    n["decisions"].as_array().unwrap().last().unwrap().clone()
}

fn decisions(n: &serde_json::Value) -> Vec<String> {
    n["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["decision"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn urgency_decides_who_waits_for_a_busy_vendor_and_nothing_waits_past_a_change() {
    let twilio = TwilioEmulator::start(test_account()).await;
    let host = start(&twilio, "");
    channels(&host, "vendor", &[PHONE]).await;
    set_presence(&host, "vendor", Some("busy")).await;

    let note = |urgency: &str, body: &str| json!({"recipients": ["vendor"], "urgency": urgency, "subject": "Smith wedding", "body": body});
    let emergency = submit(
        &host,
        note("emergency", "The groom is locked in the barn"),
        None,
    )
    .await;
    let timeline = submit(&host, note("timeline", "First look moved to 15:30"), None).await;
    let general = submit(&host, note("general", "Invoice attached"), None).await;

    // The emergency goes out at once; the others wait, saying why.
    let n = wait_state(&host, &emergency[0], "delivered").await;
    assert_eq!(decisions(&n), ["received", "delivered"], "{n}");
    assert_eq!(n["attempts"][0]["outcome"], "delivered");
    assert!(
        n["attempts"][0]["provider_message_id"]
            .as_str()
            .unwrap()
            .starts_with("SM")
    );
    for id in [&timeline[0], &general[0]] {
        let n = wait_state(&host, id, "deferred").await;
        let last = last_decision(&n);
        assert!(last["reason"].as_str().unwrap().contains("busy"), "{n}");
        assert!(last["until"].as_i64().unwrap() > n["created_at"].as_i64().unwrap());
    }
    let sent = twilio.messages();
    assert_eq!(sent.len(), 1, "only the emergency went out while busy");
    assert!(
        sent[0]
            .form
            .iter()
            .any(|(k, v)| k == "Body" && v.contains("locked in the barn")),
        "{:?}",
        sent[0].form
    );

    // The vendor is free again: both waiting notifications go out, once each.
    set_presence(&host, "vendor", None).await;
    for id in [&timeline[0], &general[0]] {
        let n = wait_state(&host, id, "delivered").await;
        assert_eq!(decisions(&n), ["received", "deferred", "delivered"], "{n}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(twilio.messages().len(), 3);

    // Retried submissions with the same key make nothing new.
    let first = submit(&host, note("emergency", "Rain plan on"), Some("req-1")).await;
    let again = submit(&host, note("emergency", "Rain plan on"), Some("req-1")).await;
    assert_eq!(first, again);
    wait_state(&host, &first[0], "delivered").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(twilio.messages().len(), 4);
}

#[tokio::test]
async fn the_latest_delivery_time_wins_over_a_busy_vendor() {
    let twilio = TwilioEmulator::start(test_account()).await;
    // Coordination waits at most 0 minutes here: its deadline is now.
    let host = start(
        &twilio,
        "[notifications.coordination]\ndefer_if_busy = true\nrespect_dnd = true\nmax_delay_minutes = 0",
    );
    channels(&host, "vendor", &[PHONE]).await;
    set_presence(&host, "vendor", Some("do_not_disturb")).await;
    let ids = submit(
        &host,
        json!({"recipients": ["vendor"], "urgency": "coordination", "body": "Tables 4 and 5 swap"}),
        None,
    )
    .await;
    let n = wait_state(&host, &ids[0], "delivered").await;
    let last = last_decision(&n);
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .contains("latest delivery time"),
        "{n}"
    );
}

#[tokio::test]
async fn wedding_day_emergencies_use_every_channel_and_failing_channels_fall_back() {
    let twilio = TwilioEmulator::start(test_account()).await;
    let host = start(&twilio, "");
    // The planner: SMS and WhatsApp.
    channels(&host, "planner", &[PHONE, &format!("whatsapp:{PHONE}")]).await;
    // The florist's first channel is no phone number: the plugin refuses it.
    channels(&host, "florist", &["not-a-number", PHONE]).await;
    set_presence(&host, "planner", Some("do_not_disturb")).await;

    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Lisbon)
        .date_naive();
    let ids = submit(
        &host,
        json!({"recipients": ["planner"], "urgency": "emergency",
               "wedding": {"id": "smith", "date": today.to_string(), "time_zone": "Europe/Lisbon",
                           "venue": "Old Barn", "role": "planner"},
               "body": "Bride's car broke down"}),
        None,
    )
    .await;
    let planner = wait_state(&host, &ids[0], "delivered").await;
    let last = planner["decisions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(
        last["reason"].as_str().unwrap().contains("wedding's day"),
        "{planner}"
    );
    assert_eq!(last["channels"].as_array().unwrap().len(), 2, "{planner}");
    // Not the wedding's day: one channel is enough, and a failing one falls
    // back to the next.
    let ids = submit(
        &host,
        json!({"recipients": ["florist"], "urgency": "emergency", "body": "Bouquets to the chapel"}),
        None,
    )
    .await;
    let florist = wait_state(&host, &ids[0], "delivered").await;
    let attempts = florist["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{florist}");
    assert_eq!(attempts[0]["outcome"], "failed");
    assert!(
        attempts[0]["error"].as_str().unwrap().contains("E.164"),
        "{florist}"
    );
    assert_eq!(attempts[1]["outcome"], "delivered");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let to: Vec<String> = twilio
        .messages()
        .iter()
        .map(|m| m.form.iter().find(|(k, _)| k == "To").unwrap().1.clone())
        .collect();
    assert_eq!(to.len(), 3, "{to:?}");
    assert!(to.contains(&format!("whatsapp:{PHONE}")));

    // Someone the router cannot reach: failed, and why.
    let ids = submit(
        &host,
        json!({"recipients": ["nobody"], "urgency": "emergency", "body": "x"}),
        None,
    )
    .await;
    let n = wait_state(&host, &ids[0], "failed").await;
    assert!(
        n["decisions"].as_array().unwrap().last().unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("no channels"),
        "{n}"
    );

    // Bad submissions are refused and store nothing.
    let before = host.digest().await;
    for bad in [
        json!({"recipients": [], "urgency": "general", "body": "x"}),
        json!({"recipients": ["a"], "urgency": "whenever", "body": "x"}),
        json!({"recipients": ["a"], "urgency": "general", "body": ""}),
        json!({"recipients": ["a"], "urgency": "general", "body": "x", "wedding": {"id": "w", "date": "2026-06-13", "time_zone": "Mars/Olympus"}}),
    ] {
        let resp = host
            .client
            .post(host.url("/api/notifications"))
            .bearer_auth(&host.admin)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
    }
    assert_eq!(host.digest().await, before);
}

#[tokio::test]
async fn an_unacknowledged_emergency_escalates_through_two_contacts_with_its_chain() {
    let twilio = TwilioEmulator::start(test_account()).await;
    // 3 s to acknowledge: the acknowledgement below comes in time even when
    // a loaded machine is slow to see the delivery.
    let host = start(&twilio, "[notifications]\nescalate_after_seconds = 3");
    channels(&host, "vendor", &[PHONE]).await;
    channels(&host, "planner", &["+15557654321"]).await;
    channels(&host, "venue", &["+15550001111"]).await;
    let ids = submit(
        &host,
        json!({"recipients": ["vendor"], "urgency": "emergency", "subject": "Smith wedding",
               "body": "Power cut in the barn", "escalation": ["planner", "venue"]}),
        None,
    )
    .await;
    let vendor_id = ids[0].clone();

    // Nobody acknowledges: vendor, then planner, then venue.
    let mut escalated_to = Vec::new();
    let mut current = vendor_id.clone();
    for next in ["planner", "venue"] {
        let mut step = None;
        for _ in 0..100 {
            let n = state_of(&host, &current).await;
            if let Some(e) = n["decisions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["decision"] == "escalated")
            {
                step = Some(e.clone());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let step = step.unwrap_or_else(|| panic!("{current} did not escalate"));
        assert_eq!(step["to"], next);
        current = step["notification"].as_str().unwrap().to_string();
        escalated_to.push(current.clone());
    }
    let venue = wait_state(&host, &current, "delivered").await;
    assert_eq!(venue["recipient"], "venue");
    assert_eq!(
        venue["escalation"]["chain"],
        json!([vendor_id, escalated_to[0]]),
        "the chain is preserved: {venue}"
    );
    assert!(
        venue["subject"]
            .as_str()
            .unwrap()
            .starts_with("Escalated: Smith wedding")
    );
    assert!(
        venue["body"]
            .as_str()
            .unwrap()
            .contains("planner did not acknowledge")
    );
    // The venue acknowledges: the path is exhausted anyway, and nothing more is sent.
    let resp = host
        .client
        .post(host.url(&format!("/api/notifications/{current}/ack")))
        .bearer_auth(&host.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(twilio.messages().len(), 3);

    // Acknowledged in time: no escalation at all.
    let ids = submit(
        &host,
        json!({"recipients": ["vendor"], "urgency": "emergency", "body": "Cake collapsed",
               "escalation": ["planner"]}),
        None,
    )
    .await;
    wait_state(&host, &ids[0], "delivered").await;
    let resp = host
        .client
        .post(host.url(&format!("/api/notifications/{}/ack", ids[0])))
        .bearer_auth(&host.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let n = state_of(&host, &ids[0]).await;
    assert_eq!(
        decisions(&n),
        ["received", "delivered", "acknowledged"],
        "{n}"
    );
    assert_eq!(twilio.messages().len(), 4);
    // An emergency that cannot reach its recipient escalates at once.
    let ids = submit(
        &host,
        json!({"recipients": ["unreachable"], "urgency": "emergency", "body": "Fire alarm",
               "escalation": ["planner"]}),
        None,
    )
    .await;
    let n = wait_state(&host, &ids[0], "failed").await;
    let step = last_decision(&n);
    assert_eq!(step["decision"], "escalated", "{n}");
    assert!(
        step["reason"].as_str().unwrap().contains("no channels"),
        "{n}"
    );
    let planner = wait_state(&host, step["notification"].as_str().unwrap(), "delivered").await;
    assert!(
        planner["body"]
            .as_str()
            .unwrap()
            .contains("unreachable could not be reached")
    );

    // Only emergencies escalate.
    let resp = host
        .client
        .post(host.url("/api/notifications"))
        .bearer_auth(&host.admin)
        .json(&json!({"recipients": ["vendor"], "urgency": "general", "body": "x", "escalation": ["planner"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn waiting_general_notes_go_out_as_digests_that_never_drop_or_repeat_one() {
    let twilio = TwilioEmulator::start(test_account()).await;
    let host = start(&twilio, "");
    channels(&host, "vendor", &[PHONE]).await;
    set_presence(&host, "vendor", Some("busy")).await;
    let note = |i: usize| json!({"recipients": ["vendor"], "urgency": "general", "body": format!("note-{i:02}-end")});
    // Five arrive while the vendor is busy...
    let first: Vec<_> = futures::future::join_all((0..5).map(|i| submit(&host, note(i), None)))
        .await
        .into_iter()
        .flatten()
        .collect();
    for id in &first {
        wait_state(&host, id, "deferred").await;
    }
    // ...and five more race the vendor becoming free.
    let (late, _) = tokio::join!(
        futures::future::join_all((5..10).map(|i| submit(&host, note(i), None))),
        set_presence(&host, "vendor", None),
    );
    let all: Vec<String> = first
        .into_iter()
        .chain(late.into_iter().flatten())
        .collect();
    for id in &all {
        wait_state(&host, id, "delivered").await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bodies: Vec<String> = twilio
        .messages()
        .iter()
        .map(|m| m.form.iter().find(|(k, _)| k == "Body").unwrap().1.clone())
        .collect();
    for i in 0..10 {
        let text = format!("note-{i:02}-end");
        let times: usize = bodies.iter().map(|b| b.matches(&text).count()).sum();
        assert_eq!(times, 1, "{text} went out {times} times: {bodies:?}");
    }
    assert!(
        bodies.len() < 10,
        "the waiting notes went out together: {} messages",
        bodies.len()
    );
    let mut digested = 0;
    for id in &all {
        let n = state_of(&host, id).await;
        if n["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.get("digest_of").is_some())
        {
            digested += 1;
        }
    }
    assert!(digested >= 4, "{digested} notes rode in another's digest");
}

/// `HH:MM` of `t` (UTC), and the instant that names today or tomorrow.
fn hhmm(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%H:%M").to_string()
}

fn minute_floor(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_millis() / 60_000 * 60_000
}

#[tokio::test]
async fn quiet_hours_and_send_windows_hold_notes_but_never_an_emergency() {
    let twilio = TwilioEmulator::start(test_account()).await;
    let host = start(&twilio, "");
    let admin = host.admin.clone();
    let now = chrono::Utc::now();
    let put = |body: serde_json::Value| {
        let host = &host;
        let admin = admin.clone();
        async move {
            host.api("PUT", "/api/users/vendor", &admin, Some(body))
                .await
        }
    };
    // Quiet from an hour ago until 40 minutes from now (UTC, the default zone).
    let quiet_end = now + chrono::Duration::minutes(40);
    let (status, body) = put(json!({
        "channels": [{"plugin": "twilio", "address": PHONE}],
        "quiet_hours": {"daily": [hhmm(now - chrono::Duration::hours(1)), hhmm(quiet_end)]},
    }))
    .await;
    assert_eq!(status, 200, "{body}");
    let note = |urgency: &str, body: &str| json!({"recipients": ["vendor"], "urgency": urgency, "body": body});
    let timeline = submit(&host, note("timeline", "Speeches moved up"), None).await;
    let n = wait_state(&host, &timeline[0], "deferred").await;
    let last = last_decision(&n);
    assert!(
        last["reason"].as_str().unwrap().contains("quiet hours"),
        "{n}"
    );
    // It looks again when the quiet hours end, before its hour is up.
    assert_eq!(
        last["until"].as_i64().unwrap(),
        minute_floor(quiet_end),
        "{n}"
    );
    assert_eq!(n["due_at"], last["until"], "{n}");
    let emergency = submit(&host, note("emergency", "Generator failed"), None).await;
    wait_state(&host, &emergency[0], "delivered").await;

    // The quiet hours lifted (`{}`) but SMS only from two hours on: the note
    // still waits, now for the channel's window, and an emergency does not.
    let opens = now + chrono::Duration::hours(2);
    let (status, body) = put(json!({
        "quiet_hours": {},
        "channels": [{"plugin": "twilio", "address": PHONE,
                      "windows": {"daily": [hhmm(opens), hhmm(opens + chrono::Duration::hours(1))]}}],
    }))
    .await;
    assert_eq!(status, 200, "{body}");
    let coordination = submit(&host, note("coordination", "Tables 4 and 5 swap"), None).await;
    let n = wait_state(&host, &coordination[0], "deferred").await;
    let last = last_decision(&n);
    assert!(
        last["reason"].as_str().unwrap().contains("send window"),
        "{n}"
    );
    assert_eq!(last["until"].as_i64().unwrap(), minute_floor(opens), "{n}");
    let second = submit(&host, note("emergency", "Rain: ceremony indoors"), None).await;
    wait_state(&host, &second[0], "delivered").await;
    assert_eq!(twilio.messages().len(), 2, "only the emergencies went out");

    // The window lifted: changing settings wakes what waits, at once.
    let (status, body) = put(json!({
        "channels": [{"plugin": "twilio", "address": PHONE}],
    }))
    .await;
    assert_eq!(status, 200, "{body}");
    for id in [&timeline[0], &coordination[0]] {
        wait_state(&host, id, "delivered").await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(twilio.messages().len(), 4);

    // Bad windows and dates are refused, naming what is wrong; nothing changes.
    let before = host.digest().await;
    for (bad, says) in [
        (
            json!({"quiet_hours": {"nightly": ["22:00", "07:00"]}}),
            "not a day",
        ),
        (
            json!({"channels": [{"plugin": "twilio", "address": PHONE, "windows": {}}]}),
            "name no day",
        ),
        (
            json!({"channels": [{"plugin": "twilio", "address": PHONE, "windows": {"mon": ["8am", "20:00"]}}]}),
            "HH:MM",
        ),
        (json!({"days_off": ["2026-02-30"]}), "days_off"),
    ] {
        let (status, body) = put(bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.to_string().contains(says), "{bad}: {body}");
    }
    assert_eq!(host.digest().await, before);
}

#[tokio::test]
async fn days_off_keep_a_vendor_away_all_day_and_general_notes_wait() {
    let twilio = TwilioEmulator::start(test_account()).await;
    let host = start(&twilio, "");
    let admin = host.admin.clone();
    let every_day: serde_json::Value = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .map(|d| (d.to_string(), json!(["00:00", "23:59"])))
        .collect::<serde_json::Map<_, _>>()
        .into();
    // A zone where it is not the day's last minutes (the hours end at 23:59).
    use chrono::{TimeZone, Timelike};
    let zone = if chrono::Utc::now().hour() >= 22 {
        chrono_tz::Etc::GMTPlus6
    } else {
        chrono_tz::UTC
    };
    let today = chrono::Utc::now().with_timezone(&zone).date_naive();
    let (status, body) = host
        .api(
            "PUT",
            "/api/users/vendor",
            &admin,
            Some(json!({"time_zone": zone.name(), "working_hours": every_day,
                        "days_off": [today.to_string()],
                        "channels": [{"plugin": "twilio", "address": PHONE}]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["availability"], "away", "{body}");
    let general = submit(
        &host,
        json!({"recipients": ["vendor"], "urgency": "general", "body": "Brochure proofs"}),
        None,
    )
    .await;
    let n = wait_state(&host, &general[0], "deferred").await;
    // It waits for the next working day: tomorrow 00:00 in the vendor's zone.
    let tomorrow = zone
        .from_local_datetime(&today.succ_opt().unwrap().and_hms_opt(0, 0, 0).unwrap())
        .single()
        .unwrap();
    assert_eq!(
        n["deliver_by"].as_i64().unwrap(),
        tomorrow.timestamp_millis(),
        "{n}"
    );
    // The day off removed, nothing else named: the zone and hours stay, so
    // the vendor is available, and the note goes.
    let (status, body) = host
        .api(
            "PUT",
            "/api/users/vendor",
            &admin,
            Some(json!({"days_off": []})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["availability"], "available", "{body}");
    wait_state(&host, &general[0], "delivered").await;
}

/// A host with the email, push and Slack channels against their emulators,
/// the push and Slack connections seeded for the default tenant.
struct Channels {
    resend: support::email::ResendEmulator,
    fcm: support::push::FcmEmulator,
    slack: support::slack::SlackEmulator,
    host: Host,
}

async fn with_channels(extra: &str) -> Channels {
    use support::{email, push, slack};
    let resend = email::ResendEmulator::start().await;
    let fcm = push::FcmEmulator::start().await;
    let slack = slack::SlackEmulator::start().await;
    slack.add_user("UBOT", "xoxb-bot");
    let host = Host::start(
        PluginsDir::new()
            .with_bundled("email")
            .with_bundled("push")
            .with_bundled("slack"),
        &format!(
            "{extra}\n[plugins.email]\nextra_allowed_hosts = [\"{r}\"]\n\
             [plugins.email.config]\napi_base = \"{r}\"\nfrom = \"{sender}\"\n\
             [plugins.push]\nextra_allowed_hosts = [\"{f}\"]\n\
             [plugins.push.config]\napi_base = \"{f}\"\nproject_id = \"{p}\"\nnotification_connection = \"fcm\"\n\
             [plugins.slack]\nextra_allowed_hosts = [\"{s}\"]\n\
             [plugins.slack.config]\napi_base = \"{s}\"\nnotification_connection = \"slack-bot\"\n",
            r = resend.base_url(),
            f = fcm.base_url(),
            s = slack.base_url(),
            p = push::PROJECT_ID,
            sender = email::SENDER,
        ),
        &[("email.api-key", email::API_KEY.as_bytes(), false)],
    );
    let admin = host.admin.clone();
    for (name, plugin, user, token) in [
        ("fcm", "push", "ops", push::ACCESS_TOKEN),
        ("slack-bot", "slack", "UBOT", "xoxb-bot"),
    ] {
        let (status, body) = host
            .api(
                "PUT",
                &format!("/api/tenants/default/connections/{name}"),
                &admin,
                Some(json!({"plugin": plugin, "user": user, "access_token": token})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    Channels {
        resend,
        fcm,
        slack,
        host,
    }
}

async fn reach(host: &Host, user: &str, channels: serde_json::Value) {
    let admin = host.admin.clone();
    let (status, body) = host
        .api(
            "PUT",
            &format!("/api/users/{user}"),
            &admin,
            Some(json!({"channels": channels})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn email_push_and_slack_deliver_and_each_providers_answer_decides_the_fallback() {
    let Channels {
        resend,
        fcm,
        slack,
        host,
    } = with_channels("").await;
    fcm.register_device("tok-vendor");
    slack.add_person("U0VENDOR");
    reach(
        &host,
        "U0VENDOR",
        json!([{"plugin": "email", "address": "bea@example.com"},
               {"plugin": "push", "address": "tok-vendor"},
               {"plugin": "slack", "address": "U0VENDOR"}]),
    )
    .await;
    let today = chrono::Utc::now().date_naive().to_string();
    let ids = submit(
        &host,
        json!({"recipients": ["U0VENDOR"], "urgency": "emergency",
               "wedding": {"id": "smith", "date": today, "time_zone": "UTC", "venue": "Old Barn"},
               "subject": "Fire alarm", "body": "Evacuate the barn.\nMeet at the gate."}),
        None,
    )
    .await;
    let n = wait_state(&host, &ids[0], "delivered").await;
    let attempts = n["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{n}");
    let emails = resend.emails();
    assert_eq!(emails.len(), 1);
    assert_eq!(emails[0].to, ["bea@example.com"]);
    assert_eq!(emails[0].subject, "[Urgent] Fire alarm");
    assert!(
        emails[0]
            .idempotency_key
            .as_deref()
            .is_some_and(|k| k.starts_with(&ids[0])),
        "{:?}",
        emails[0].idempotency_key
    );
    assert_eq!(attempts[0]["provider_message_id"], emails[0].id.as_str());
    let pushes = fcm.messages();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].token.as_deref(), Some("tok-vendor"));
    assert_eq!(attempts[1]["provider_message_id"], pushes[0].name.as_str());
    let posted = slack.posted_to("U0VENDOR");
    assert_eq!(posted.len(), 1);
    assert!(
        posted[0].text.contains("Evacuate the barn"),
        "{:?}",
        posted[0]
    );

    // The app was uninstalled (push refuses for good) and Resend is rate
    // limiting (429, retry in 2 s): the round fails, the retry waits at least
    // as long as Resend asked (the delay itself is unit-tested in the worker),
    // then email delivers. Push is tried again, as a later round may find its
    // token registered anew.
    fcm.unregister("tok-vendor");
    reach(
        &host,
        "U0VENDOR",
        json!([{"plugin": "push", "address": "tok-vendor"},
               {"plugin": "email", "address": "bea@example.com"}]),
    )
    .await;
    resend.rate_limit_next(1, 2);
    let ids = submit(
        &host,
        json!({"recipients": ["U0VENDOR"], "urgency": "emergency", "body": "Caterer stuck in traffic"}),
        None,
    )
    .await;
    let n = wait_state(&host, &ids[0], "delivered").await;
    let outcomes: Vec<(String, String)> = n["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["plugin"].as_str().unwrap().to_string(),
                a["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let pair = |p: &str, o: &str| (p.to_string(), o.to_string());
    assert_eq!(
        outcomes,
        [
            pair("push", "failed"),
            pair("email", "failed"),
            pair("push", "failed"),
            pair("email", "delivered")
        ],
        "{n}"
    );
    assert!(
        n["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("UNREGISTERED"),
        "{n}"
    );
    let retry = n["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["decision"] == "retry")
        .unwrap()
        .clone();
    assert!(
        retry["retry_at"].as_i64().unwrap() - retry["at"].as_i64().unwrap() >= 2_000,
        "{retry}"
    );
    assert_eq!(resend.emails().len(), 2);

    // Only channels that refuse for good: failed at once, not retried.
    reach(
        &host,
        "U0VENDOR",
        json!([{"plugin": "push", "address": "tok-vendor"},
               {"plugin": "email", "address": "not an address"}]),
    )
    .await;
    let ids = submit(
        &host,
        json!({"recipients": ["U0VENDOR"], "urgency": "timeline", "body": "Cake arrives at 4"}),
        None,
    )
    .await;
    let n = wait_state(&host, &ids[0], "failed").await;
    assert_eq!(n["attempts"].as_array().unwrap().len(), 2, "{n}");
    assert!(
        n["decisions"].as_array().unwrap().last().unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("refused it for good"),
        "{n}"
    );
}

#[tokio::test]
async fn a_host_killed_between_claim_and_send_delivers_each_mail_exactly_once() {
    let Channels {
        resend, mut host, ..
    } = with_channels("[notifications]\nclaim_lease_seconds = 2").await;
    reach(
        &host,
        "planner",
        json!([{"plugin": "email", "address": "planner@example.com"}]),
    )
    .await;
    let sent_with = |text: &str| {
        resend
            .emails()
            .into_iter()
            .filter(|e| e.text.as_deref().is_some_and(|t| t.contains(text)))
            .count()
    };

    // Killed while the send is in flight, before Resend accepted it: after
    // the claim runs out the restarted host sends it, once.
    resend.hold_next_before_accepting(1);
    let first = submit(
        &host,
        json!({"recipients": ["planner"], "urgency": "emergency", "body": "Officiant is ill"}),
        None,
    )
    .await;
    resend.wait_until_held(1).await;
    host.restart();
    let n = wait_state(&host, &first[0], "delivered").await;
    let attempts = n["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{n}");
    assert_eq!(attempts[0]["outcome"], "interrupted", "cut short: {n}");
    assert_eq!(attempts[1]["outcome"], "delivered");
    assert_eq!(sent_with("Officiant is ill"), 1);

    // Killed after Resend accepted it but before the host heard back: the
    // retry carries the same Idempotency-Key and Resend answers with the
    // first email instead of sending another.
    resend.hold_next_after_accepting(1);
    let second = submit(
        &host,
        json!({"recipients": ["planner"], "urgency": "emergency", "body": "Use the side entrance"}),
        None,
    )
    .await;
    resend.wait_until_held(1).await;
    assert_eq!(sent_with("Use the side entrance"), 1);
    host.restart();
    let n = wait_state(&host, &second[0], "delivered").await;
    assert_eq!(sent_with("Use the side entrance"), 1, "no second mail");
    let email = resend
        .emails()
        .into_iter()
        .find(|e| {
            e.text
                .as_deref()
                .is_some_and(|t| t.contains("side entrance"))
        })
        .unwrap();
    let attempts = n["attempts"].as_array().unwrap();
    assert_eq!(
        attempts.last().unwrap()["provider_message_id"],
        email.id.as_str()
    );
    let replays = resend.requests().into_iter().filter(|r| r.replayed).count();
    assert_eq!(
        replays, 1,
        "the retry was answered from Resend's idempotency record"
    );

    // A digest cut short the same way goes again exactly as it was (same
    // notes, same key), even with a new note arriving meanwhile: that one
    // goes on its own, and nothing goes twice.
    set_presence(&host, "planner", Some("busy")).await;
    let note = |body: &str| json!({"recipients": ["planner"], "urgency": "general", "body": body});
    let lead = submit(&host, note("Seating chart v3"), None).await;
    let companion = submit(&host, note("Menu cards proofed"), None).await;
    for id in [&lead[0], &companion[0]] {
        wait_state(&host, id, "deferred").await;
    }
    resend.hold_next_after_accepting(1);
    set_presence(&host, "planner", None).await;
    resend.wait_until_held(1).await;
    // Busy again, killed; a third note arrives and the claims run out, so
    // that when the planner is free all three are due together.
    set_presence(&host, "planner", Some("busy")).await;
    host.restart();
    let late = submit(&host, note("Shuttle times"), None).await;
    wait_state(&host, &late[0], "deferred").await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    set_presence(&host, "planner", None).await;
    for id in [&lead[0], &companion[0], &late[0]] {
        wait_state(&host, id, "delivered").await;
    }
    for text in ["Seating chart v3", "Menu cards proofed", "Shuttle times"] {
        assert_eq!(sent_with(text), 1, "{text} went out once");
    }
    let digest = resend
        .emails()
        .into_iter()
        .find(|e| {
            e.text
                .as_deref()
                .is_some_and(|t| t.contains("Seating chart v3"))
        })
        .unwrap();
    assert!(
        digest
            .text
            .as_deref()
            .unwrap()
            .contains("Menu cards proofed"),
        "{digest:?}"
    );
    assert!(!digest.text.as_deref().unwrap().contains("Shuttle times"));
    assert_eq!(
        resend.requests().into_iter().filter(|r| r.replayed).count(),
        2,
        "the digest's retry was answered from Resend's idempotency record"
    );
}

#[tokio::test]
async fn open_channels_refusing_for_good_leave_the_note_to_channels_that_open_later() {
    let twilio = TwilioEmulator::start(test_account()).await;
    let host = start(&twilio, "");
    let opens = chrono::Utc::now() + chrono::Duration::hours(2);
    // The always-open channel cannot take it (no phone number); SMS opens later.
    reach(
        &host,
        "vendor",
        json!([{"plugin": "twilio", "address": "not-a-number"},
               {"plugin": "twilio", "address": PHONE,
                "windows": {"daily": [hhmm(opens), hhmm(opens + chrono::Duration::hours(1))]}}]),
    )
    .await;
    let ids = submit(
        &host,
        json!({"recipients": ["vendor"], "urgency": "coordination", "body": "Chairs for 120"}),
        None,
    )
    .await;
    let n = wait_state(&host, &ids[0], "deferred").await;
    let last = last_decision(&n);
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .contains("waits for the others to open"),
        "{n}"
    );
    assert_eq!(last["until"].as_i64().unwrap(), minute_floor(opens), "{n}");
    assert_eq!(n["attempts"].as_array().unwrap().len(), 1, "{n}");

    // Presence cannot open a send window: a change wakes what waits for the
    // vendor to be free, and leaves this note to its time.
    set_presence(&host, "vendor", Some("busy")).await;
    let later = submit(
        &host,
        json!({"recipients": ["vendor"], "urgency": "coordination", "body": "Linen count"}),
        None,
    )
    .await;
    let busy = wait_state(&host, &later[0], "deferred").await;
    assert!(
        last_decision(&busy)["reason"]
            .as_str()
            .unwrap()
            .contains("busy"),
        "{busy}"
    );
    set_presence(&host, "vendor", None).await;
    for _ in 0..150 {
        let n = state_of(&host, &later[0]).await;
        if last_decision(&n)["reason"] != last_decision(&busy)["reason"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let woken = state_of(&host, &later[0]).await;
    assert!(
        last_decision(&woken)["reason"]
            .as_str()
            .unwrap()
            .contains("waits for the others to open"),
        "the free vendor's note was looked at again: {woken}"
    );
    // The same wake-up would have made the first note due now, or tried the
    // refusing channel again.
    let first = state_of(&host, &ids[0]).await;
    assert_eq!(
        first["due_at"].as_i64().unwrap(),
        minute_floor(opens),
        "{first}"
    );
    assert_eq!(first["attempts"].as_array().unwrap().len(), 1, "{first}");
    assert!(twilio.messages().is_empty());
}
