//! `wedsync:presence/kv`: a key-value store namespaced by plugin and tenant, with a quota.
//!
//! The namespace comes from the call's context, never from the plugin's arguments,
//! so a plugin cannot name another plugin's or tenant's keys.

use super::Grants;
use crate::store::{KvWrite, Store};

/// Longest key accepted.
pub const MAX_KEY_BYTES: usize = 512;
/// Most keys returned by one `list-keys`.
pub const MAX_LIST: u32 = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("the plugin's kv quota for this tenant would be exceeded")]
    QuotaExceeded,
    #[error("key or value too large")]
    TooLarge,
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

fn unavailable(e: impl std::fmt::Display) -> KvError {
    KvError::Unavailable(e.to_string())
}

pub async fn get(
    store: &Store,
    grants: &Grants,
    tenant: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, KvError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(KvError::TooLarge);
    }
    store
        .kv_get(grants.plugin.as_str(), tenant, key)
        .await
        .map_err(unavailable)
}

pub async fn set(
    store: &Store,
    grants: &Grants,
    tenant: &str,
    key: &str,
    value: &[u8],
) -> Result<(), KvError> {
    let quota = grants.limits.kv_quota_kib as usize * 1024;
    if key.len() > MAX_KEY_BYTES || key.len() + value.len() > quota {
        return Err(KvError::TooLarge);
    }
    match store
        .kv_set(grants.plugin.as_str(), tenant, key, value, quota as i64)
        .await
        .map_err(unavailable)?
    {
        KvWrite::Written => Ok(()),
        KvWrite::QuotaExceeded => Err(KvError::QuotaExceeded),
    }
}

pub async fn delete(
    store: &Store,
    grants: &Grants,
    tenant: &str,
    key: &str,
) -> Result<(), KvError> {
    store
        .kv_delete(grants.plugin.as_str(), tenant, key)
        .await
        .map_err(unavailable)
}

pub async fn list_keys(
    store: &Store,
    grants: &Grants,
    tenant: &str,
    prefix: &str,
    limit: u32,
) -> Result<Vec<String>, KvError> {
    store
        .kv_list(grants.plugin.as_str(), tenant, prefix, limit.min(MAX_LIST))
        .await
        .map_err(unavailable)
}
