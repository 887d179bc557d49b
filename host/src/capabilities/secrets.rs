//! `wedsync:presence/secrets`: HMAC and comparisons with secrets the plugin only names.

use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

use super::Grants;
use crate::store::{SecretName, SecretValue, Store};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error(
        "plugin {plugin} is not granted secret {name:?}; list it under capabilities.secrets in its plugin.toml"
    )]
    NotGranted { plugin: String, name: String },
    #[error("secret {0:?} is not set; set it with `presence-host secret set {0}`")]
    NotSet(String),
    #[error("secret {name:?} cannot be read: {message}")]
    Unavailable { name: String, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacAlgorithm {
    Sha1,
    Sha256,
}

/// What a secret is used for; each use has its own grant list in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecretUse {
    /// HMAC and comparisons in the host (`capabilities.secrets`).
    Crypto,
    /// Sent as a credential to an allowed host (`capabilities.bearer_secrets`
    /// or `capabilities.basic_secrets`).
    Sent,
}

/// The value of a secret the plugin is granted for `usage`; only the host ever holds it.
///
/// A tenant's own secret (`<tenant>/<name>`) is preferred to the shared one
/// (`<name>`), so each agency can sign its webhooks with its own key.
pub(crate) async fn granted_value(
    store: &Store,
    grants: &Grants,
    tenant: &str,
    name: &str,
    usage: SecretUse,
) -> Result<SecretValue, SecretError> {
    let granted = match usage {
        SecretUse::Crypto => grants.secrets.contains(name),
        SecretUse::Sent => {
            grants.bearer_secrets.contains(name) || grants.basic_secrets.contains_key(name)
        }
    };
    if !granted {
        return Err(SecretError::NotGranted {
            plugin: grants.plugin.to_string(),
            name: name.to_string(),
        });
    }
    let candidates = [format!("{tenant}/{name}"), name.to_string()];
    for candidate in candidates
        .iter()
        .filter(|c| !tenant.is_empty() || !c.starts_with('/'))
    {
        let Ok(parsed) = SecretName::parse(candidate) else {
            continue;
        };
        match store.secret(&parsed).await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => continue,
            Err(e) => {
                return Err(SecretError::Unavailable {
                    name: name.to_string(),
                    message: e.to_string(),
                });
            }
        }
    }
    Err(SecretError::NotSet(name.to_string()))
}

pub fn hmac(algorithm: HmacAlgorithm, key: &[u8], message: &[u8]) -> Vec<u8> {
    match algorithm {
        HmacAlgorithm::Sha1 => {
            let mut mac =
                Hmac::<sha1::Sha1>::new_from_slice(key).expect("HMAC takes keys of any length");
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
        HmacAlgorithm::Sha256 => {
            let mut mac =
                Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
    }
}

pub async fn hmac_sign(
    store: &Store,
    grants: &Grants,
    tenant: &str,
    name: &str,
    algorithm: HmacAlgorithm,
    message: &[u8],
) -> Result<Vec<u8>, SecretError> {
    let key = granted_value(store, grants, tenant, name, SecretUse::Crypto).await?;
    Ok(hmac(algorithm, key.expose(), message))
}

pub async fn hmac_verify(
    store: &Store,
    grants: &Grants,
    tenant: &str,
    name: &str,
    algorithm: HmacAlgorithm,
    message: &[u8],
    signature: &[u8],
) -> Result<bool, SecretError> {
    let expected = hmac_sign(store, grants, tenant, name, algorithm, message).await?;
    Ok(expected.ct_eq(signature).into())
}

pub async fn equals(
    store: &Store,
    grants: &Grants,
    tenant: &str,
    name: &str,
    candidate: &[u8],
) -> Result<bool, SecretError> {
    let value = granted_value(store, grants, tenant, name, SecretUse::Crypto).await?;
    Ok(value.expose().ct_eq(candidate).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2 (HMAC-SHA256) and RFC 2202 test case 2 (HMAC-SHA1).
    #[test]
    fn rfc_test_vectors() {
        let sha256 = hmac(
            HmacAlgorithm::Sha256,
            b"Jefe",
            b"what do ya want for nothing?",
        );
        assert_eq!(
            hex::encode(sha256),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let sha1 = hmac(
            HmacAlgorithm::Sha1,
            b"Jefe",
            b"what do ya want for nothing?",
        );
        assert_eq!(
            hex::encode(sha1),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }
}
