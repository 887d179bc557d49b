//! The master key and AES-256-GCM sealing of values at rest.
//!
//! Each sealed record carries the id of the key that sealed it (the first bytes of
//! the key's SHA-256), so a wrong or rotated key is reported as such instead of
//! as corrupt data, and so keys can be rotated: new writes use the current key,
//! records sealed under a previous key (configured as `previous_master_keys`)
//! still open, and `presence-host key reseal` rewrites them under the current one.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub const MASTER_KEY_FILE: &str = "master.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "the master key must be 32 bytes encoded in base64 (generate one with `openssl rand -base64 32`): {0}"
    )]
    Malformed(String),
    #[error("cannot read or write the master key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "record sealed under master key {found}, but the configured key is {expected}: configure the key it was written with"
    )]
    WrongKey { found: String, expected: String },
    #[error("a sealed record failed authentication: it was altered or is corrupt")]
    Tampered,
}

/// The 256-bit key every secret and token at rest is sealed under, with the
/// previous keys that older records may still be sealed under.
pub struct MasterKey {
    key: Zeroizing<[u8; 32]>,
    id: String,
    previous: Vec<(String, Zeroizing<[u8; 32]>)>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({}, ***)", self.id)
    }
}

impl MasterKey {
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(
            BASE64
                .decode(text.trim())
                .map_err(|e| KeyError::Malformed(e.to_string()))?,
        );
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::Malformed(format!("decoded to {} bytes", bytes.len())))?;
        Ok(Self::from_bytes(key))
    }

    fn from_bytes(key: [u8; 32]) -> Self {
        let id = hex::encode(&Sha256::digest(key)[..6]);
        Self {
            key: Zeroizing::new(key),
            id,
            previous: Vec::new(),
        }
    }

    /// Adds keys that records may have been sealed under before a rotation:
    /// they open records, never seal new ones.
    pub fn with_previous(mut self, previous: &[String]) -> Result<Self, KeyError> {
        for text in previous {
            let old = Self::from_base64(text)?;
            if old.id != self.id && !self.previous.iter().any(|(id, _)| *id == old.id) {
                self.previous.push((old.id, old.key));
            }
        }
        Ok(self)
    }

    /// Whether records sealed under `key_id` can be opened.
    pub fn knows(&self, key_id: &str) -> bool {
        key_id == self.id || self.previous.iter().any(|(id, _)| id == key_id)
    }

    /// The configured key, or the one kept in `data_dir`, created (with a warning) on first run.
    pub fn load_or_create(configured: Option<&str>, data_dir: &Path) -> Result<Self, KeyError> {
        if let Some(text) = configured {
            return Self::from_base64(text);
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_base64(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                std::fs::create_dir_all(data_dir).map_err(io)?;
                write_private(&path, BASE64.encode(key).as_bytes()).map_err(io)?;
                tracing::warn!(
                    path = %path.display(),
                    "no master key configured: generated one; back it up, or set PRESENCE_MASTER_KEY, \
                     since secrets stored under it cannot be read without it"
                );
                Ok(Self::from_bytes(key))
            }
            Err(e) => Err(io(e)),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plaintext` with a fresh random nonce; returns (nonce, ciphertext).
    pub fn seal(&self, plaintext: &[u8], associated: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let cipher = Aes256Gcm::new_from_slice(self.key.as_slice()).expect("32-byte key");
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                aes_gcm::aead::Payload {
                    msg: plaintext,
                    aad: associated,
                },
            )
            .expect("AES-GCM encryption of in-memory data does not fail");
        (nonce.to_vec(), ciphertext)
    }

    pub fn open(
        &self,
        key_id: &str,
        nonce: &[u8],
        ciphertext: &[u8],
        associated: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let key = if key_id == self.id {
            &self.key
        } else {
            match self.previous.iter().find(|(id, _)| id == key_id) {
                Some((_, key)) => key,
                None => {
                    return Err(KeyError::WrongKey {
                        found: key_id.to_string(),
                        expected: self.id.clone(),
                    });
                }
            }
        };
        if nonce.len() != 12 {
            return Err(KeyError::Tampered);
        }
        let cipher = Aes256Gcm::new_from_slice(key.as_slice()).expect("32-byte key");
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                aes_gcm::aead::Payload {
                    msg: ciphertext,
                    aad: associated,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| KeyError::Tampered)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_round_trips_and_detects_tampering_and_wrong_keys() {
        let key = MasterKey::from_bytes([7; 32]);
        let (nonce, mut sealed) = key.seal(b"xoxb-secret", b"secret:slack");
        assert_ne!(&sealed[..], b"xoxb-secret");
        assert_eq!(
            &key.open(key.id(), &nonce, &sealed, b"secret:slack")
                .unwrap()[..],
            b"xoxb-secret"
        );
        // The associated data binds the record to its name.
        assert!(matches!(
            key.open(key.id(), &nonce, &sealed, b"secret:zoom"),
            Err(KeyError::Tampered)
        ));
        let other = MasterKey::from_bytes([8; 32]);
        assert!(matches!(
            other.open(key.id(), &nonce, &sealed, b"secret:slack"),
            Err(KeyError::WrongKey { .. })
        ));
        sealed[0] ^= 1;
        assert!(matches!(
            key.open(key.id(), &nonce, &sealed, b"secret:slack"),
            Err(KeyError::Tampered)
        ));
    }

    #[test]
    fn records_sealed_under_a_previous_key_still_open() {
        let old = MasterKey::from_bytes([1; 32]);
        let (nonce, sealed) = old.seal(b"xoxp-1", b"connection:a/b");
        let new = MasterKey::from_bytes([2; 32])
            .with_previous(&[BASE64.encode([1u8; 32])])
            .unwrap();
        assert!(new.knows(old.id()) && new.knows(new.id()));
        assert_eq!(
            &new.open(old.id(), &nonce, &sealed, b"connection:a/b")
                .unwrap()[..],
            b"xoxp-1"
        );
        // New records are sealed under the current key only.
        let (n2, s2) = new.seal(b"x", b"");
        assert!(old.open(new.id(), &n2, &s2, b"").is_err());
        assert!(
            MasterKey::from_bytes([2; 32])
                .with_previous(&["bad".into()])
                .is_err()
        );
    }

    #[test]
    fn nonces_are_fresh() {
        let key = MasterKey::from_bytes([1; 32]);
        assert_ne!(key.seal(b"x", b"").0, key.seal(b"x", b"").0);
    }

    #[test]
    fn a_generated_key_is_kept_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = MasterKey::load_or_create(None, dir.path()).unwrap();
        let b = MasterKey::load_or_create(None, dir.path()).unwrap();
        assert_eq!(a.id(), b.id());
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
    }
}
