//! Rewriting sealed records under the current master key, after a rotation.
//!
//! Each record is opened with whichever configured key sealed it and sealed
//! again under the current key with a fresh nonce; a row written meanwhile
//! (a refresh, say) is left alone, since it is already under the current key.
//! Pending OAuth authorizations are not rewritten: they expire within
//! `oauth.state_ttl_s` anyway.

use sqlx::Row;

use super::{Store, StoreError};

/// A sealed column triple of one table, and its associated data as SQL computes it.
struct Sealed {
    what: &'static str,
    table: &'static str,
    aad: &'static str,
    key_id: &'static str,
    nonce: &'static str,
    ciphertext: &'static str,
}

/// Every long-lived sealed record. The `aad` expressions match the Rust
/// functions that seal each one (`secret_aad`, `connections::aad`, ...).
const SEALED: &[Sealed] = &[
    Sealed {
        what: "secrets",
        table: "secrets",
        aad: "'secret:' || name",
        key_id: "key_id",
        nonce: "nonce",
        ciphertext: "ciphertext",
    },
    Sealed {
        what: "connection access tokens",
        table: "connections",
        aad: "'connection:' || tenant || '/' || name",
        key_id: "key_id",
        nonce: "nonce",
        ciphertext: "ciphertext",
    },
    Sealed {
        what: "connection refresh tokens",
        table: "connections",
        aad: "'connection-refresh:' || tenant || '/' || name",
        key_id: "refresh_key_id",
        nonce: "refresh_nonce",
        ciphertext: "refresh_ciphertext",
    },
    Sealed {
        what: "presence webhook secrets",
        table: "presence_webhooks",
        aad: "'presence-webhook:' || tenant || '/' || id",
        key_id: "key_id",
        nonce: "nonce",
        ciphertext: "ciphertext",
    },
];

impl Store {
    /// Re-seals every record not under the current key; returns how many of
    /// each kind were rewritten. Fails, changing nothing more, on a record
    /// sealed under a key that is not configured.
    pub async fn reseal(&self) -> Result<Vec<(&'static str, u64)>, StoreError> {
        let current = self.key.id().to_string();
        let mut report = Vec::new();
        for s in SEALED {
            let rows = sqlx::query(&format!(
                "SELECT rowid, {aad} AS aad, {key_id} AS key_id, {nonce} AS nonce,
                   {ciphertext} AS ciphertext
                 FROM {table} WHERE {key_id} IS NOT NULL AND {key_id} != $1",
                aad = s.aad,
                key_id = s.key_id,
                nonce = s.nonce,
                ciphertext = s.ciphertext,
                table = s.table,
            ))
            .bind(&current)
            .fetch_all(&self.pool)
            .await?;
            let mut rewritten = 0;
            for row in rows {
                let rowid: i64 = row.try_get("rowid")?;
                let aad: String = row.try_get("aad")?;
                let old_key: String = row.try_get("key_id")?;
                let plain = self.unseal(&row, aad.as_bytes(), s.what)?;
                let (nonce, ciphertext) = self.key.seal(plain.expose(), aad.as_bytes());
                rewritten += sqlx::query(&format!(
                    "UPDATE {table} SET {key_id} = $1, {nonce} = $2, {ciphertext} = $3
                     WHERE rowid = $4 AND {key_id} = $5",
                    table = s.table,
                    key_id = s.key_id,
                    nonce = s.nonce,
                    ciphertext = s.ciphertext,
                ))
                .bind(&current)
                .bind(nonce)
                .bind(ciphertext)
                .bind(rowid)
                .bind(&old_key)
                .execute(&self.writer)
                .await?
                .rows_affected();
            }
            report.push((s.what, rewritten));
        }
        self.secrets.lock().expect("secret cache lock").clear();
        Ok(report)
    }

    /// How many sealed records are under each key id, for `key status`.
    pub async fn sealed_key_ids(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let mut counts = std::collections::BTreeMap::<String, i64>::new();
        for s in SEALED {
            let rows: Vec<(String, i64)> = sqlx::query_as(&format!(
                "SELECT {key_id}, COUNT(*) FROM {table} WHERE {key_id} IS NOT NULL GROUP BY {key_id}",
                key_id = s.key_id,
                table = s.table
            ))
            .fetch_all(&self.pool)
            .await?;
            for (id, n) in rows {
                *counts.entry(id).or_default() += n;
            }
        }
        Ok(counts.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;
    use crate::store::connections::{Connection, NewTokens};
    use crate::store::{MasterKey, SecretName};

    fn key(byte: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    }

    async fn open(dir: &std::path::Path, current: u8, previous: &[u8]) -> Store {
        let previous: Vec<String> = previous.iter().map(|b| key(*b)).collect();
        let master = MasterKey::from_base64(&key(current))
            .unwrap()
            .with_previous(&previous)
            .unwrap();
        Store::open(&format!("sqlite://{}", dir.join("p.db").display()), master)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_rotated_key_opens_old_records_and_reseal_moves_them_all() {
        let dir = tempfile::tempdir().unwrap();
        let name = SecretName::parse("slack.signing-secret").unwrap();
        let store = open(dir.path(), 1, &[]).await;
        store.set_secret(&name, b"signing").await.unwrap();
        let mut connection = Connection::seeded("slack:U1", "slack", "U1", None);
        connection.provider = Some("slack".into());
        store
            .put_oauth_connection(
                "acme",
                &connection,
                &NewTokens {
                    access_token: b"xoxp-access",
                    refresh_token: Some(b"xoxe-refresh"),
                    expires_at: None,
                    scopes: &[],
                },
            )
            .await
            .unwrap();
        let old_id = store.master_key_id().to_string();
        store.close().await;

        // The new key, with the old one as previous: everything still opens.
        let store = open(dir.path(), 2, &[1]).await;
        assert_eq!(
            store.secret(&name).await.unwrap().unwrap().expose(),
            b"signing"
        );
        let grant = store
            .refresh_grant("acme", "slack:U1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(grant.refresh_token.expose(), b"xoxe-refresh");
        assert_eq!(
            store.sealed_key_ids().await.unwrap(),
            vec![(old_id.clone(), 3)]
        );

        let report = store.reseal().await.unwrap();
        assert_eq!(
            report,
            vec![
                ("secrets", 1),
                ("connection access tokens", 1),
                ("connection refresh tokens", 1),
                ("presence webhook secrets", 0)
            ]
        );
        let new_id = store.master_key_id().to_string();
        assert_eq!(store.sealed_key_ids().await.unwrap(), vec![(new_id, 3)]);
        assert_eq!(store.reseal().await.unwrap()[0].1, 0, "nothing left to do");
        store.close().await;

        // The old key can go now; without the new one nothing opens.
        let store = open(dir.path(), 2, &[]).await;
        let credential = store
            .connection_credential("acme", "slack:U1", "slack")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(credential.token.expose(), b"xoxp-access");
        store.close().await;
        let store = open(dir.path(), 1, &[]).await;
        let err = store.read_secret(&name).await.unwrap_err().to_string();
        assert!(err.contains("sealed under master key"), "{err}");
        store.close().await;
    }
}
