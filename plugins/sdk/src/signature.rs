//! Signature checks built on the host's `secrets` import: the plugin names the
//! secret, the host computes and compares.

use crate::provider::secrets::{self, HmacAlgorithm, SecretError};

/// Why a signature check failed, worded for a 401 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    Missing(&'static str),
    Malformed(&'static str),
    Mismatch,
    Stale { age_s: i64, window_s: i64 },
    Secret(String),
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing(h) => write!(f, "missing {h}"),
            Self::Malformed(h) => write!(f, "malformed {h}"),
            Self::Mismatch => f.write_str("signature does not match"),
            Self::Stale { age_s, window_s } => {
                write!(
                    f,
                    "timestamp is {age_s} s from now, outside the {window_s} s window"
                )
            }
            Self::Secret(m) => write!(f, "signing secret unavailable: {m}"),
        }
    }
}

impl From<SecretError> for SignatureError {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::NotGranted(n) => {
                Self::Secret(format!("{n} is not granted to this plugin"))
            }
            SecretError::NotSet(n) => Self::Secret(format!("{n} is not set")),
            SecretError::Unavailable(n) => Self::Secret(format!("{n} cannot be read now")),
        }
    }
}

impl SignatureError {
    /// The plugin error to answer with: the sender's fault is `unauthorized` (401,
    /// final); a secret the host cannot use is the host's fault, `internal` (502),
    /// which providers retry, so no event is lost while the operator fixes it.
    pub fn into_plugin_error(self) -> crate::provider::PluginError {
        match self {
            Self::Secret(_) => crate::provider::PluginError::Internal(self.to_string()),
            other => crate::provider::PluginError::Unauthorized(other.to_string()),
        }
    }
}

pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks that `timestamp_s` (Unix seconds) is within `window_s` of now, both ways.
pub fn check_freshness(timestamp_s: i64, window_s: i64) -> Result<(), SignatureError> {
    // A sender may write any number: saturate rather than overflow (which
    // would panic, or in a release build wrap and could pass as fresh).
    let age_s = (crate::now_ms() / 1000).saturating_sub(timestamp_s);
    if age_s.unsigned_abs() > window_s.unsigned_abs() {
        return Err(SignatureError::Stale { age_s, window_s });
    }
    Ok(())
}

/// Verifies a hex HMAC of `message` under the named secret.
pub fn verify_hex(
    secret: &str,
    algorithm: HmacAlgorithm,
    message: &[u8],
    signature_hex: &str,
) -> Result<(), SignatureError> {
    let signature = decode_hex(signature_hex).ok_or(SignatureError::Malformed("signature"))?;
    verify_bytes(secret, algorithm, message, &signature)
}

/// Verifies a base64 HMAC of `message` under the named secret (Twilio's
/// `X-Twilio-Signature`); the host compares in constant time.
pub fn verify_base64(
    secret: &str,
    algorithm: HmacAlgorithm,
    message: &[u8],
    signature_base64: &str,
) -> Result<(), SignatureError> {
    let signature = decode_base64(signature_base64)
        .filter(|s| !s.is_empty())
        .ok_or(SignatureError::Malformed("signature"))?;
    verify_bytes(secret, algorithm, message, &signature)
}

/// Verifies a raw HMAC of `message` under the named secret.
pub fn verify_bytes(
    secret: &str,
    algorithm: HmacAlgorithm,
    message: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    if secrets::hmac_verify(secret, algorithm, message, signature)? {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The standard base64 alphabet, decoded (padding optional).
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32;
        buffer = (buffer << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_timestamps_are_stale_not_an_overflow() {
        for ts in [i64::MIN, i64::MIN + 1, i64::MAX, -1] {
            assert!(
                matches!(check_freshness(ts, 300), Err(SignatureError::Stale { .. })),
                "{ts}"
            );
        }
        let now = crate::now_ms() / 1000;
        assert!(check_freshness(now - 299, 300).is_ok());
        assert!(check_freshness(now + 299, 300).is_ok());
    }

    #[test]
    fn hex_and_base64_decode() {
        assert_eq!(decode_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(decode_hex("0g"), None);
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(encode_hex(&[0, 255]), "00ff");
        assert_eq!(decode_base64("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(decode_base64("aGVsbG8"), Some(b"hello".to_vec()));
        assert_eq!(decode_base64("a$"), None);
    }

    /// A signature that is not base64 is refused before the host is asked.
    #[test]
    fn malformed_base64_signatures_are_refused_without_a_host_call() {
        for bad in ["", "not base64!", "===="] {
            assert_eq!(
                verify_base64("any.secret", HmacAlgorithm::Sha1, b"m", bad),
                Err(SignatureError::Malformed("signature")),
                "{bad:?}"
            );
        }
    }
}
