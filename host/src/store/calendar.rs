//! Calendar sync state: per connection of a calendar provider, where its sync
//! stands, when its push subscriptions need renewing, and its events, kept as
//! calendar signals of the connection's person keyed `cal/{connection}/{event}`.
//!
//! A page of a sync is applied in one transaction with the cursor that follows
//! it: a crash between pages resumes at the page after the last one applied,
//! never skipping one and never applying one twice under another cursor.

use sqlx::Row;

use super::presence::{Effects, EngineRules, begin_presence, recompute, upsert_signal};
use super::{Store, StoreError};
use crate::model::{Instant, KeyedSignal, SignalSource};

/// A connection's sync row, as a worker claimed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarSync {
    pub tenant: String,
    pub connection: String,
    pub plugin: String,
    pub user: String,
    pub cursor: Option<String>,
    /// A sync is part-way through its pages.
    pub paging: bool,
    pub sync_due_at: Option<Instant>,
    pub watch_due_at: Option<Instant>,
    pub watch_expires_at: Option<Instant>,
    /// Consecutive failed syncs, and failed watches.
    pub failures: u32,
    pub watch_failures: u32,
    pub last_error: Option<String>,
    pub last_synced_at: Option<Instant>,
    pub watched_at: Option<Instant>,
    /// The claim on the row (a worker's own when it claimed it; writes under a
    /// claim match it exactly, so none matches nothing).
    pub claim_token: Option<String>,
    /// When the sync under way started (while `paging`).
    pub sync_started_at: Option<Instant>,
    /// A full sync under way sweeps events not seen since then.
    pub sweep_before: Option<Instant>,
}

impl CalendarSync {
    pub fn sync_due(&self, now: Instant) -> bool {
        self.sync_due_at.is_some_and(|t| t <= now)
    }

    pub fn watch_due(&self, now: Instant) -> bool {
        self.watch_due_at.is_some_and(|t| t <= now)
    }
}

/// A connection whose sync row went away with it: its subscriptions are to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untracked {
    pub tenant: String,
    pub connection: String,
    pub plugin: String,
}

/// The key prefix of a connection's synced events.
pub fn event_key_prefix(connection: &str) -> String {
    // `/` is not allowed in connection names, so no connection's prefix is
    // another's.
    format!("cal/{connection}/")
}

/// The signal key of one synced event.
pub fn event_key(connection: &str, event_id: &str) -> String {
    // PostgreSQL's text cannot hold NUL: an id with one is kept with U+FFFD.
    format!(
        "{}{}",
        event_key_prefix(connection),
        event_id.replace('\0', "\u{fffd}")
    )
}

/// One page to apply: what the sync worker made of a plugin's page.
#[derive(Debug, Clone)]
pub struct PageUpdate<'a> {
    /// This page starts a full sync: events held for the connection that the
    /// sync does not bring again are forgotten when its last page is applied.
    pub reset: bool,
    /// Signals for the page's events (keyed with [`event_key`]).
    pub signals: &'a [KeyedSignal],
    /// Event ids cancelled or deleted.
    pub removed: &'a [String],
    pub next_cursor: Option<&'a str>,
    /// More pages follow at once.
    pub more: bool,
    /// When the next sync is due after the last page (a safety re-sync).
    pub next_sync_at: Option<Instant>,
    /// When this sync started (its first page, in whatever claim): a request
    /// made since then is served by another sync.
    pub started: Instant,
    /// While a full sync is under way: when it (re)started, so that its last
    /// page forgets the connection's events not written since. The worker
    /// carries it from page to page (and the row, from claim to claim).
    pub sweep: Option<Instant>,
}

fn sync_from(r: &sqlx::any::AnyRow) -> Result<CalendarSync, StoreError> {
    Ok(CalendarSync {
        tenant: r.try_get("tenant")?,
        connection: r.try_get("connection")?,
        plugin: r.try_get("plugin")?,
        user: r.try_get("user_id")?,
        cursor: r.try_get("cursor")?,
        paging: r.try_get::<i64, _>("paging")? != 0,
        sync_due_at: r.try_get("sync_due_at")?,
        watch_due_at: r.try_get("watch_due_at")?,
        watch_expires_at: r.try_get("watch_expires_at")?,
        failures: r.try_get::<i64, _>("failures")?.clamp(0, u32::MAX as i64) as u32,
        watch_failures: r
            .try_get::<i64, _>("watch_failures")?
            .clamp(0, u32::MAX as i64) as u32,
        last_error: r.try_get("last_error")?,
        last_synced_at: r.try_get("last_synced_at")?,
        watched_at: r.try_get("watched_at")?,
        claim_token: r.try_get("claim_token")?,
        sync_started_at: r.try_get("sync_started_at")?,
        sweep_before: r.try_get("sweep_before")?,
    })
}

impl Store {
    /// Starts tracking every active connection of `plugins` (the calendar
    /// providers loaded) that is not tracked yet, due for a watch and a full
    /// sync now; stops tracking connections that are gone, forgetting their
    /// events, and returns those so their subscriptions can be stopped.
    pub async fn track_calendar_connections(
        &self,
        plugins: &[String],
        now: Instant,
        rules: &EngineRules,
    ) -> Result<(Vec<Untracked>, Effects), StoreError> {
        let plugins = serde_json::to_string(plugins).expect("names serialize");
        let mut tx = begin_presence(&self.writer).await?;
        sqlx::query(self.sql(
            "INSERT INTO calendar_syncs (tenant, connection, plugin, user_id, sync_due_at, watch_due_at)
             SELECT c.tenant, c.name, c.plugin, c.user_id, $1, $2 FROM connections c
             WHERE c.plugin IN (SELECT value FROM json_each($3)) AND c.status = 'active'
             ON CONFLICT (tenant, connection) DO NOTHING",
            "INSERT INTO calendar_syncs (tenant, connection, plugin, user_id, sync_due_at, watch_due_at)
             SELECT c.tenant, c.name, c.plugin, c.user_id, $1, $2 FROM connections c
             WHERE c.plugin IN (SELECT value FROM json_array_elements_text(CAST($3 AS json)) AS j(value))
               AND c.status = 'active'
             ON CONFLICT (tenant, connection) DO NOTHING",
        ))
        .bind(now)
        .bind(now)
        .bind(&plugins)
        .execute(&mut *tx)
        .await?;
        // Gone: the connection was deleted, or now belongs to another plugin or person.
        let gone = sqlx::query(
            "DELETE FROM calendar_syncs WHERE NOT EXISTS (
               SELECT 1 FROM connections c WHERE c.tenant = calendar_syncs.tenant
                 AND c.name = calendar_syncs.connection AND c.plugin = calendar_syncs.plugin
                 AND c.user_id = calendar_syncs.user_id)
             RETURNING tenant, connection, plugin, user_id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut untracked = Vec::with_capacity(gone.len());
        let mut effects = Effects::default();
        for row in &gone {
            let (tenant, connection, plugin, user): (String, String, String, String) = (
                row.try_get("tenant")?,
                row.try_get("connection")?,
                row.try_get("plugin")?,
                row.try_get("user_id")?,
            );
            forget_events(&mut tx, &tenant, &user, &connection, None).await?;
            effects.absorb(recompute(&mut tx, &tenant, &user, now, rules).await?);
            untracked.push(Untracked {
                tenant,
                connection,
                plugin,
            });
        }
        tx.commit().await?;
        Ok((untracked, effects))
    }

    /// Claims up to `limit` connections whose sync or watch is due, for `lease_ms`.
    pub async fn claim_calendar_syncs(
        &self,
        now: Instant,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<CalendarSync>, StoreError> {
        let token = hex::encode(rand::random::<[u8; 12]>());
        // On PostgreSQL, replicas claiming at once skip each other's rows
        // instead of waiting for them.
        let rows = sqlx::query(self.sql(
            "UPDATE calendar_syncs SET claimed_until = $1, claim_token = $2
             WHERE rowid IN (
               SELECT rowid FROM calendar_syncs
               WHERE (sync_due_at <= $3 OR watch_due_at <= $4)
                 AND (claimed_until IS NULL OR claimed_until < $5)
               ORDER BY MIN(COALESCE(sync_due_at, watch_due_at), COALESCE(watch_due_at, sync_due_at))
               LIMIT $6)
             RETURNING *",
            "UPDATE calendar_syncs SET claimed_until = $1, claim_token = $2
             WHERE rowid IN (
               SELECT rowid FROM calendar_syncs
               WHERE (sync_due_at <= $3 OR watch_due_at <= $4)
                 AND (claimed_until IS NULL OR claimed_until < $5)
               ORDER BY LEAST(sync_due_at, watch_due_at)
               LIMIT $6 FOR UPDATE SKIP LOCKED)
             RETURNING *",
        ))
        .bind(now + lease_ms)
        .bind(&token)
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(sync_from).collect()
    }

    /// Extends `sync`'s claim while a long sync runs; fails when it was lost.
    pub async fn extend_calendar_claim(
        &self,
        sync: &CalendarSync,
        until: Instant,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE calendar_syncs SET claimed_until = $1
             WHERE tenant = $2 AND connection = $3 AND claim_token = $4",
        )
        .bind(until)
        .fenced(sync, &self.writer)
        .await
    }

    /// Makes `connection` due for a watch and a sync now and forgets its
    /// failures: it has a new token (a new consent, a seeded token).
    pub async fn calendar_connection_renewed(
        &self,
        tenant: &str,
        connection: &str,
        now: Instant,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE calendar_syncs SET watch_due_at = $1, sync_due_at = $2, sync_requested_at = $3,
               failures = 0, watch_failures = 0
             WHERE tenant = $4 AND connection = $5",
        )
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(tenant)
        .bind(connection)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Marks `connections` of `plugin` in `tenant` due for a sync (or, with
    /// `watch`, a watch) now: a provider's notification asked for it. Returns
    /// those that are tracked; other names change nothing.
    pub async fn request_calendar(
        &self,
        tenant: &str,
        plugin: &str,
        watch: bool,
        connections: &[String],
        now: Instant,
    ) -> Result<Vec<String>, StoreError> {
        let names = serde_json::to_string(connections).expect("names serialize");
        let min = self.sql("MIN", "LEAST");
        let set = if watch {
            format!("watch_due_at = {min}(COALESCE(watch_due_at, $1), $1)")
        } else {
            format!("sync_due_at = {min}(COALESCE(sync_due_at, $1), $1), sync_requested_at = $1")
        };
        let names_in = self.sql(
            "SELECT value FROM json_each($4)",
            "SELECT value FROM json_array_elements_text(CAST($4 AS json)) AS j(value)",
        );
        let rows: Vec<String> = sqlx::query_scalar(&format!(
            "UPDATE calendar_syncs SET {set}
             WHERE tenant = $2 AND plugin = $3 AND connection IN ({names_in})
             RETURNING connection"
        ))
        .bind(now)
        .bind(tenant)
        .bind(plugin)
        .bind(&names)
        .fetch_all(&self.writer)
        .await?;
        Ok(rows)
    }

    /// Records a successful watch: the lease, when to renew, and whether a
    /// sync is needed now (the subscriptions had lapsed: changes may have been
    /// missed in the gap).
    pub async fn calendar_watched(
        &self,
        sync: &CalendarSync,
        expires: Option<Instant>,
        renew_at: Instant,
        sync_now: Option<Instant>,
        now: Instant,
    ) -> Result<(), StoreError> {
        sqlx::query(self.sql(
            "UPDATE calendar_syncs SET watch_expires_at = $1, watch_due_at = $2, watched_at = $3,
               sync_due_at = CASE WHEN $4 IS NULL THEN sync_due_at
                                  ELSE MIN(COALESCE(sync_due_at, $5), $6) END,
               watch_failures = 0, last_error = NULL
             WHERE tenant = $7 AND connection = $8 AND claim_token = $9",
            "UPDATE calendar_syncs SET watch_expires_at = $1, watch_due_at = $2, watched_at = $3,
               sync_due_at = CASE WHEN $4 IS NULL THEN sync_due_at
                                  ELSE LEAST(sync_due_at, $5, $6) END,
               watch_failures = 0, last_error = NULL
             WHERE tenant = $7 AND connection = $8 AND claim_token = $9",
        ))
        .bind(expires)
        .bind(renew_at)
        .bind(now)
        .bind(sync_now)
        .bind(sync_now)
        .bind(sync_now)
        .fenced(sync, &self.writer)
        .await
    }

    /// Records a failed watch or sync: the error, and when to try again.
    pub async fn calendar_failed(
        &self,
        sync: &CalendarSync,
        watching: bool,
        error: &str,
        retry_at: Instant,
    ) -> Result<(), StoreError> {
        let (column, count) = if watching {
            ("watch_due_at", "watch_failures")
        } else {
            ("sync_due_at", "failures")
        };
        sqlx::query(&format!(
            "UPDATE calendar_syncs SET {column} = $1, {count} = {count} + 1, last_error = $2
             WHERE tenant = $3 AND connection = $4 AND claim_token = $5"
        ))
        .bind(retry_at)
        .bind(error)
        .fenced(sync, &self.writer)
        .await
    }

    /// Applies one page of a sync to `sync`'s person, with the cursor that
    /// follows it, in one transaction; re-derives the person's presence.
    /// Nothing is written when the claim was lost.
    pub async fn apply_calendar_page(
        &self,
        sync: &CalendarSync,
        page: &PageUpdate<'_>,
        now: Instant,
        rules: &EngineRules,
    ) -> Result<Effects, StoreError> {
        let (tenant, user, connection) = (&sync.tenant, &sync.user, &sync.connection);
        let mut tx = begin_presence(&self.writer).await?;
        // The row first: it fences the page against a worker that lost its claim.
        let (sync_due, synced_at) = if page.more {
            (Some(now), None)
        } else {
            (page.next_sync_at, Some(now))
        };
        let sweep = page.sweep;
        sqlx::query(
            "UPDATE calendar_syncs SET cursor = $1, paging = $2,
               sync_due_at = CASE WHEN sync_requested_at >= $3 THEN sync_requested_at ELSE $4 END,
               sync_started_at = $5, sweep_before = $6,
               last_synced_at = COALESCE($7, last_synced_at), failures = 0, last_error = NULL
             WHERE tenant = $8 AND connection = $9 AND claim_token = $10",
        )
        .bind(page.next_cursor)
        .bind(i64::from(page.more))
        .bind(page.started)
        .bind(sync_due)
        .bind(page.more.then_some(page.started))
        .bind(if page.more { sweep } else { None })
        .bind(synced_at)
        .fenced(sync, &mut *tx)
        .await?;
        for id in page.removed {
            delete_event(&mut tx, tenant, user, &event_key(connection, id)).await?;
        }
        for signal in page.signals {
            if signal.signal.clears {
                delete_event(&mut tx, tenant, user, &signal.key).await?;
            } else {
                upsert_signal(&mut tx, tenant, signal, now, rules).await?;
            }
        }
        // The last page of a full sync: what it did not bring is gone.
        if !page.more
            && let Some(before) = sweep
        {
            forget_events(&mut tx, tenant, user, connection, Some(before)).await?;
        }
        let effects = recompute(&mut tx, tenant, user, now, rules).await?;
        tx.commit().await?;
        Ok(effects)
    }

    /// Lets go of a claimed row (its work is recorded).
    pub async fn release_calendar_claim(&self, sync: &CalendarSync) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE calendar_syncs SET claimed_until = NULL, claim_token = NULL
             WHERE tenant = $1 AND connection = $2 AND claim_token = $3",
        )
        .bind(&sync.tenant)
        .bind(&sync.connection)
        .bind(&sync.claim_token)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// When the next sync or watch falls due (claimed rows count from the end of their claim).
    pub async fn next_calendar_due(&self) -> Result<Option<Instant>, StoreError> {
        Ok(sqlx::query_scalar(self.sql(
            "SELECT MIN(MAX(due, COALESCE(claimed_until, 0))) FROM (
               SELECT sync_due_at AS due, claimed_until FROM calendar_syncs WHERE sync_due_at IS NOT NULL
               UNION ALL
               SELECT watch_due_at, claimed_until FROM calendar_syncs WHERE watch_due_at IS NOT NULL)",
            "SELECT MIN(GREATEST(due, COALESCE(claimed_until, 0))) FROM (
               SELECT sync_due_at AS due, claimed_until FROM calendar_syncs WHERE sync_due_at IS NOT NULL
               UNION ALL
               SELECT watch_due_at, claimed_until FROM calendar_syncs WHERE watch_due_at IS NOT NULL) AS d",
        ))
        .fetch_one(&self.pool)
        .await?)
    }

    /// The tenant's calendar syncs, for the API and health.
    pub async fn calendar_syncs(&self, tenant: &str) -> Result<Vec<CalendarSync>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM calendar_syncs WHERE tenant = $1 ORDER BY connection")
                .bind(tenant)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(sync_from).collect()
    }

    /// The connection's synced events, as the calendar signals they became,
    /// by start (those without one first, on both backends).
    pub async fn synced_events(
        &self,
        tenant: &str,
        user: &str,
        connection: &str,
    ) -> Result<Vec<(String, Option<Instant>, Option<Instant>, String)>, StoreError> {
        let prefix = event_key_prefix(connection);
        let rows = sqlx::query(
            "SELECT signal_key, starts_at, expires_at, availability FROM presence_signals
             WHERE tenant = $1 AND user_id = $2 AND source = $3 AND substr(signal_key, 1, CAST($4 AS INTEGER)) = $5
             ORDER BY starts_at NULLS FIRST, signal_key",
        )
        .bind(tenant)
        .bind(user)
        .bind(SignalSource::Calendar.as_str())
        .bind(prefix.len() as i64)
        .bind(&prefix)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let key: String = r.try_get("signal_key")?;
                Ok((
                    key[prefix.len()..].to_string(),
                    r.try_get("starts_at")?,
                    r.try_get("expires_at")?,
                    r.try_get("availability")?,
                ))
            })
            .collect()
    }
}

/// A write of a claimed row: the statement's last parameters are the row's
/// tenant, connection and claim token, so a worker whose claim was lost
/// (its lease lapsed and another took the row) changes nothing and hears so.
trait Fenced<'q> {
    async fn fenced<E>(self, sync: &'q CalendarSync, executor: E) -> Result<(), StoreError>
    where
        E: sqlx::Executor<'q, Database = sqlx::Any>;
}

impl<'q> Fenced<'q> for sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    async fn fenced<E>(self, sync: &'q CalendarSync, executor: E) -> Result<(), StoreError>
    where
        E: sqlx::Executor<'q, Database = sqlx::Any>,
    {
        let n = self
            .bind(&sync.tenant)
            .bind(&sync.connection)
            .bind(&sync.claim_token)
            .execute(executor)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::ClaimLost(format!(
                "calendar {}/{}",
                sync.tenant, sync.connection
            )));
        }
        Ok(())
    }
}

async fn delete_event(
    conn: &mut sqlx::AnyConnection,
    tenant: &str,
    user: &str,
    key: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM presence_signals
         WHERE tenant = $1 AND user_id = $2 AND source = 'calendar' AND signal_key = $3",
    )
    .bind(tenant)
    .bind(user)
    .bind(key)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Deletes the synced events of `connection` held for `user`: all of them,
/// or those last written before `before`.
async fn forget_events(
    conn: &mut sqlx::AnyConnection,
    tenant: &str,
    user: &str,
    connection: &str,
    before: Option<Instant>,
) -> Result<(), StoreError> {
    let prefix = event_key_prefix(connection);
    // A range on the primary key: `prefix` up to the next key that does not
    // start with it (`/` + 1 is `0`).
    let end = format!("cal/{connection}0");
    sqlx::query(
        "DELETE FROM presence_signals WHERE tenant = $1 AND user_id = $2 AND source = 'calendar'
           AND signal_key >= $3 AND signal_key < $4 AND ($5 IS NULL OR updated_at < $6)",
    )
    .bind(tenant)
    .bind(user)
    .bind(&prefix)
    .bind(&end)
    .bind(before)
    .bind(before)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Availability, PresenceSignal};
    use crate::store::MasterKey;
    use crate::store::connections::Connection;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let key = MasterKey::load_or_create(None, dir.path()).unwrap();
        (dir, Store::open(&url, key).await.unwrap())
    }

    fn busy(connection: &str, id: &str, starts: Instant, expires: Instant) -> KeyedSignal {
        KeyedSignal {
            key: event_key(connection, id),
            origin: "cal".into(),
            signal: PresenceSignal {
                user: "ana".into(),
                source: SignalSource::Calendar,
                availability: Availability::Busy,
                status_text: None,
                status_emoji: None,
                starts: Some(starts),
                expires: Some(expires),
                clears: false,
                category: None,
            },
        }
    }

    fn page<'a>(
        signals: &'a [KeyedSignal],
        removed: &'a [String],
        cursor: &'a str,
    ) -> PageUpdate<'a> {
        PageUpdate {
            reset: false,
            signals,
            removed,
            next_cursor: Some(cursor),
            more: false,
            next_sync_at: Some(i64::MAX / 2),
            started: 0,
            sweep: None,
        }
    }

    async fn tracked(store: &Store, now: Instant) -> CalendarSync {
        let rules = EngineRules::default();
        store
            .put_connection(
                "t",
                &Connection::seeded("g:ana", "cal", "ana", None),
                b"tok",
            )
            .await
            .unwrap();
        // A connection of another plugin, and one of a prefix-sharing name.
        store
            .put_connection("t", &Connection::seeded("g:an", "cal", "ana", None), b"tok")
            .await
            .unwrap();
        store
            .put_connection(
                "t",
                &Connection::seeded("s:ana", "slack", "ana", None),
                b"tok",
            )
            .await
            .unwrap();
        let (gone, _) = store
            .track_calendar_connections(&["cal".into()], now, &rules)
            .await
            .unwrap();
        assert!(gone.is_empty());
        let claimed = store.claim_calendar_syncs(now, 60_000, 10).await.unwrap();
        let mut names: Vec<&str> = claimed.iter().map(|c| c.connection.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            ["g:an", "g:ana"],
            "only the calendar plugin's connections are tracked, due at once"
        );
        assert!(claimed.iter().all(|c| c.sync_due(now) && c.watch_due(now)));
        claimed
            .into_iter()
            .find(|c| c.connection == "g:ana")
            .unwrap()
    }

    #[tokio::test]
    async fn pages_apply_with_their_cursor_and_a_reset_forgets_only_that_connection() {
        let (_dir, store) = store().await;
        let rules = EngineRules::default();
        let now = 1_000_000;
        let sync = tracked(&store, now).await;
        let other = CalendarSync {
            connection: "g:an".into(),
            ..sync.clone()
        };
        let signals = [
            busy("g:ana", "a", now - 10, now + 100),
            busy("g:ana", "b", now + 200, now + 300),
        ];
        store
            .apply_calendar_page(&sync, &page(&signals, &[], "c1"), now, &rules)
            .await
            .unwrap();
        let theirs = [busy("g:an", "x", now + 500, now + 600)];
        store
            .apply_calendar_page(&other, &page(&theirs, &[], "o1"), now, &rules)
            .await
            .unwrap();
        let ids = |events: Vec<(String, Option<i64>, Option<i64>, String)>| {
            events.into_iter().map(|e| e.0).collect::<Vec<_>>()
        };
        assert_eq!(
            ids(store.synced_events("t", "ana", "g:ana").await.unwrap()),
            ["a", "b"]
        );
        let state = store.calendar_syncs("t").await.unwrap();
        let mine = state.iter().find(|s| s.connection == "g:ana").unwrap();
        assert_eq!(mine.cursor.as_deref(), Some("c1"));
        assert_eq!(mine.last_synced_at, Some(now));
        // The person is busy with event a now.
        let (presence, _) = store.presence_state("t", "ana").await.unwrap().unwrap();
        assert_eq!(presence.availability, Availability::Busy);

        // A removal, then a reset page that brings only c.
        store
            .apply_calendar_page(&sync, &page(&[], &["a".to_string()], "c2"), now, &rules)
            .await
            .unwrap();
        assert_eq!(
            ids(store.synced_events("t", "ana", "g:ana").await.unwrap()),
            ["b"]
        );
        // A full sync in two pages: what the first brings is kept until the
        // last is applied; then what neither brought is gone.
        let fresh = [busy("g:ana", "c", now + 400, now + 450)];
        let reset = PageUpdate {
            reset: true,
            more: true,
            started: now + 1,
            sweep: Some(now + 1),
            ..page(&fresh, &[], "p2")
        };
        store
            .apply_calendar_page(&sync, &reset, now + 2, &rules)
            .await
            .unwrap();
        assert_eq!(
            ids(store.synced_events("t", "ana", "g:ana").await.unwrap()),
            ["b", "c"]
        );
        let paging = store.calendar_syncs("t").await.unwrap();
        let mine = paging
            .iter()
            .find(|s| s.connection == "g:ana")
            .unwrap()
            .clone();
        assert_eq!(
            (mine.sweep_before, mine.sync_started_at),
            (Some(now + 1), Some(now + 1))
        );
        // The last page, in the same claim (the row as it was claimed).
        let last = PageUpdate {
            started: now + 1,
            sweep: Some(now + 1),
            ..page(&[], &[], "c3")
        };
        store
            .apply_calendar_page(&sync, &last, now + 3, &rules)
            .await
            .unwrap();
        assert_eq!(
            ids(store.synced_events("t", "ana", "g:ana").await.unwrap()),
            ["c"]
        );
        // "g:an" shares a prefix of the name, not the events.
        assert_eq!(
            ids(store.synced_events("t", "ana", "g:an").await.unwrap()),
            ["x"]
        );
        let (presence, _) = store.presence_state("t", "ana").await.unwrap().unwrap();
        assert_eq!(presence.availability, Availability::Available);
    }

    #[tokio::test]
    async fn a_request_during_a_sync_makes_another_after_it() {
        let (_dir, store) = store().await;
        let rules = EngineRules::default();
        let now = 1_000_000;
        let sync = tracked(&store, now).await;
        let started = now;
        // A notification asks while the sync runs; unknown names change nothing.
        let asked = ["g:ana".into(), "s:ana".into(), "nope".into()];
        let marked = store
            .request_calendar("t", "cal", false, &asked, now + 5)
            .await
            .unwrap();
        assert_eq!(marked, ["g:ana"]);
        let last = PageUpdate {
            started,
            ..page(&[], &[], "c1")
        };
        store
            .apply_calendar_page(&sync, &last, now + 10, &rules)
            .await
            .unwrap();
        let state = store.calendar_syncs("t").await.unwrap();
        let mine = state.iter().find(|s| s.connection == "g:ana").unwrap();
        assert_eq!(
            mine.sync_due_at,
            Some(now + 5),
            "the request is served by another sync"
        );

        // A sync that started after the request completes it.
        let later = PageUpdate {
            started: now + 20,
            ..page(&[], &[], "c2")
        };
        store
            .apply_calendar_page(&sync, &later, now + 30, &rules)
            .await
            .unwrap();
        let state = store.calendar_syncs("t").await.unwrap();
        let mine = state.iter().find(|s| s.connection == "g:ana").unwrap();
        assert_eq!(
            mine.sync_due_at,
            Some(i64::MAX / 2),
            "only the periodic re-sync is left"
        );
    }

    #[tokio::test]
    async fn a_deleted_connection_is_untracked_and_its_events_forgotten() {
        let (_dir, store) = store().await;
        let rules = EngineRules::default();
        let now = 1_000_000;
        let sync = tracked(&store, now).await;
        let signals = [busy("g:ana", "a", now - 10, now + 100)];
        store
            .apply_calendar_page(&sync, &page(&signals, &[], "c1"), now, &rules)
            .await
            .unwrap();
        assert!(store.delete_connection("t", "g:ana").await.unwrap());
        let (gone, effects) = store
            .track_calendar_connections(&["cal".into()], now + 1, &rules)
            .await
            .unwrap();
        assert_eq!(
            gone,
            [Untracked {
                tenant: "t".into(),
                connection: "g:ana".into(),
                plugin: "cal".into()
            }]
        );
        assert!(
            store
                .synced_events("t", "ana", "g:ana")
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(effects.changes.len(), 1, "the person is free again");
        assert_eq!(
            effects.changes[0].presence.availability,
            Availability::Available
        );
    }

    #[tokio::test]
    async fn a_worker_whose_claim_was_taken_writes_nothing() {
        let (_dir, store) = store().await;
        let rules = EngineRules::default();
        let now = 1_000_000;
        let stale = tracked(&store, now).await;
        // The claim lapses and another worker takes the row.
        let fresh = store
            .claim_calendar_syncs(now + 61_000, 60_000, 10)
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.connection == "g:ana")
            .unwrap();
        assert_ne!(fresh.claim_token, stale.claim_token);
        let signals = [busy("g:ana", "a", now - 10, now + 100)];
        let lost = store
            .apply_calendar_page(&stale, &page(&signals, &[], "stale"), now, &rules)
            .await;
        assert!(matches!(lost, Err(StoreError::ClaimLost(_))), "{lost:?}");
        assert!(
            store
                .synced_events("t", "ana", "g:ana")
                .await
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            store.calendar_failed(&stale, false, "x", now).await,
            Err(StoreError::ClaimLost(_))
        ));
        // Its release leaves the new claim alone; the holder's write goes through.
        store.release_calendar_claim(&stale).await.unwrap();
        store
            .apply_calendar_page(&fresh, &page(&signals, &[], "fresh"), now, &rules)
            .await
            .unwrap();
        let state = store.calendar_syncs("t").await.unwrap();
        let row = state.iter().find(|s| s.connection == "g:ana").unwrap();
        assert_eq!(row.cursor.as_deref(), Some("fresh"));
        assert_eq!(row.claim_token, fresh.claim_token);
    }

    #[tokio::test]
    async fn a_failing_watch_keeps_its_backoff_while_syncs_succeed() {
        let (_dir, store) = store().await;
        let rules = EngineRules::default();
        let now = 1_000_000;
        let sync = tracked(&store, now).await;
        for _ in 0..3 {
            store
                .calendar_failed(&sync, true, "channel refused", now + 60_000)
                .await
                .unwrap();
        }
        store
            .apply_calendar_page(&sync, &page(&[], &[], "c1"), now, &rules)
            .await
            .unwrap();
        let state = store.calendar_syncs("t").await.unwrap();
        let row = state.iter().find(|s| s.connection == "g:ana").unwrap();
        assert_eq!((row.watch_failures, row.failures), (3, 0));
        assert_eq!(row.watch_due_at, Some(now + 60_000));
    }
}
