//! Delivering presence changes to tenants' own endpoints, signed per the
//! Standard Webhooks specification: `webhook-id` (stable across retries),
//! `webhook-timestamp` (seconds) and `webhook-signature` (`v1,` + base64
//! HMAC-SHA256 of `{id}.{timestamp}.{body}` under the endpoint's secret).
//!
//! A failed delivery is retried on `presence.webhook_retry_schedule_ms` (Svix's
//! published schedule by default) and given up after its last step; an
//! endpoint whose failures have lasted `webhook_disable_after_s` is disabled,
//! and shown so in `GET /api/tenants/{tenant}/presence-webhooks`.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};

use crate::App;
use crate::store::now_ms;
use crate::store::presence_webhooks::OutgoingMessage;

const LEASE_MS: i64 = 60_000;
const BATCH: u32 = 32;
const MAX_IDLE: Duration = Duration::from_secs(30);
/// How long an endpoint has to answer.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A new endpoint's secret, as Standard Webhooks spells it: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> (String, Vec<u8>) {
    let mut key = vec![0u8; 32];
    rand::fill(&mut key[..]);
    let text = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(&key)
    );
    (text, key)
}

/// The `webhook-signature` value for one message.
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{msg_id}.{timestamp}.{body}").as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// Delivers queued messages until the app shuts down.
pub async fn run(app: Arc<App>) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(DELIVERY_TIMEOUT)
        .user_agent(concat!("presence-host/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client builds");
    loop {
        let mut run: Result<(), String> = Ok(());
        match app
            .store
            .claim_webhook_messages(now_ms(), LEASE_MS, BATCH)
            .await
        {
            Ok(messages) if !messages.is_empty() => {
                for msg in messages {
                    if let Err(e) = deliver(&app, &client, &msg).await {
                        tracing::error!(error = %e, msg_id = %msg.msg_id, "presence webhook bookkeeping failed; retried when its lease runs out");
                    }
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "claiming presence webhook messages failed");
                run = Err(e.to_string());
            }
        }
        let sleep = match app.store.next_webhook_message_due().await {
            Ok(Some(due)) => {
                Duration::from_millis((due - now_ms()).clamp(5, MAX_IDLE.as_millis() as i64) as u64)
            }
            _ => MAX_IDLE,
        };
        app.health.job_ran(
            "presence-webhooks",
            run,
            Some(now_ms() + sleep.as_millis() as i64),
        );
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = app.engine.webhooks_wake.notified() => {}
        }
    }
}

async fn deliver(
    app: &App,
    client: &reqwest::Client,
    msg: &OutgoingMessage,
) -> Result<(), crate::store::StoreError> {
    let timestamp = now_ms() / 1000;
    let signature = sign(msg.secret.expose(), &msg.msg_id, timestamp, &msg.payload);
    let outcome = client
        .post(&msg.url)
        .header("content-type", "application/json")
        .header("webhook-id", &msg.msg_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(msg.payload.clone())
        .send()
        .await;
    let error = match outcome {
        Ok(r) if r.status().is_success() => {
            tracing::debug!(msg_id = %msg.msg_id, endpoint = %msg.endpoint, "presence webhook delivered");
            return app.store.webhook_delivered(msg).await;
        }
        Ok(r) => format!("HTTP {}", r.status().as_u16()),
        Err(e) if e.is_timeout() => "timed out".to_string(),
        Err(e) => format!("could not connect: {e}"),
    };
    let now = now_ms();
    let schedule = &app.config.presence.webhook_retry_schedule_ms;
    let retry_at = schedule
        .get(msg.attempts as usize)
        .map(|delay| now + *delay as i64);
    let failing_for_ms = now - msg.failing_since.unwrap_or(now);
    let limit_ms = app.config.presence.webhook_disable_after_s as i64 * 1000;
    let disable = (retry_at.is_none() && failing_for_ms >= limit_ms).then(|| {
        format!(
            "every delivery failed for {} s (last: {error})",
            failing_for_ms / 1000
        )
    });
    match (&retry_at, &disable) {
        (_, Some(reason)) => {
            tracing::error!(endpoint = %msg.endpoint, tenant = %msg.tenant, %reason, "presence webhook endpoint disabled")
        }
        (Some(at), None) => {
            tracing::warn!(msg_id = %msg.msg_id, %error, retry_in_ms = at - now, "presence webhook delivery failed")
        }
        (None, None) => {
            tracing::error!(msg_id = %msg.msg_id, %error, "presence webhook message given up after its last retry")
        }
    }
    app.store
        .webhook_failed(msg, retry_at, &error, disable.as_deref())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's example: secret
    /// `whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw`, id `msg_p5jXN8AQM9LWM0D4loKWxJek`,
    /// timestamp 1614265330, body `{"test": 2432232314}`.
    #[test]
    fn signatures_match_the_specifications_example() {
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        assert_eq!(
            sign(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let (text, key) = new_secret();
        assert!(text.starts_with("whsec_") && key.len() == 32);
    }
}
