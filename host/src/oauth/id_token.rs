//! Verification of OpenID Connect ID tokens (Google, Microsoft identity platform v2).
//!
//! When a vendor connects a calendar, the provider's token response carries an ID
//! token: a JWT saying who consented. Before we record that identity we check it as
//! OpenID Connect Core 1.0 §3.1.3.7 requires, with the providers' own notes (Google's
//! "OpenID Connect" guide, Microsoft's "ID tokens" and "validate tokens" pages):
//!
//! * **Algorithm.** Only `RS256` is accepted, decided from the header before any key
//!   is looked up. `none`, `HS256` and everything else are refused outright, so a
//!   forged token cannot pick an algorithm that turns a public key into an HMAC
//!   secret, or skip the signature (algorithm confusion).
//! * **Key.** The header must name its key (`kid`), and the key must be an RSA
//!   signing key of at least 2048 bits in the provider's published JWK set.
//! * **Signature** over header and payload, with that key.
//! * **Issuer** (`iss`) equals the expected one. Microsoft's multi-tenant issuer is
//!   the template `https://login.microsoftonline.com/{tenantid}/v2.0`: the literal
//!   `{tenantid}` is replaced by the token's own `tid` before comparing. Microsoft
//!   also publishes an `issuer` per key; when present, it must match too, so a key
//!   that signs for one tenant or cloud cannot vouch for another.
//! * **Audience** (`aud`, a string or an array) contains our client id. With several
//!   audiences, `azp` is required; whenever `azp` is present it must be our client id.
//! * **Time.** `exp` is in the future and `iat` not in the future, and `nbf`, if
//!   present, has passed, each with 60 seconds of leeway for clock skew.
//! * **Nonce** equals the one we sent in the authorization request, when we sent one
//!   (it binds the token to this login and defeats replay).
//!
//! The JWK sets are cached per URL by [`JwksCache`] for the lifetime the provider
//! announces in `Cache-Control: max-age` (clamped to 5 minutes..24 hours; 1 hour
//! without one). A `kid` missing from the cached set means the provider may have
//! rolled its keys, so the set is fetched again, but a URL is contacted at most once
//! per 60 seconds, whatever the outcome: a flood of tokens with made-up key ids, or
//! a provider outage, cannot make us hammer the provider. Verifications that need
//! the same set wait for one shared fetch. Fetches time out after 5 seconds and
//! refuse bodies over 64 KiB.
//!
//! Tokens are bearer credentials: they are never logged, nor put in error messages.
//! Header values, which are unauthenticated, appear in errors only shortened.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde::de::IgnoredAny;

/// Allowed clock skew between us and the provider, for `exp`, `iat` and `nbf`.
const LEEWAY_SECS: i64 = 60;
/// A JWKS URL is contacted at most once in this interval.
const MIN_FETCH_INTERVAL: Duration = Duration::from_secs(60);
/// Bounds for the provider's `Cache-Control: max-age`.
const MIN_CACHE_LIFETIME: Duration = Duration::from_secs(5 * 60);
const MAX_CACHE_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// Cache lifetime of a JWK set served without `max-age`.
const DEFAULT_CACHE_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// Whole JWKS request, from connecting to the end of the body.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS response body accepted (real ones are a few KiB).
const MAX_JWKS_BYTES: usize = 64 * 1024;
/// Largest ID token accepted, to bound the work spent on garbage.
const MAX_TOKEN_BYTES: usize = 64 * 1024;
/// RSA keys shorter than 2048 bits are not trusted.
const MIN_RSA_MODULUS_BYTES: usize = 256;
/// The placeholder in Microsoft's multi-tenant issuer, replaced by the token's `tid`.
const TENANT_PLACEHOLDER: &str = "{tenantid}";
/// Untrusted header values are shortened to this many characters in errors and logs.
const MAX_EXCERPT_CHARS: usize = 64;
/// How much of a parser's own message an error keeps (it may quote the token).
const MAX_ERROR_CHARS: usize = 256;

/// What a verified ID token says about the person who consented.
///
/// The stable identity is `issuer` + `subject` (for Microsoft, also `tenant_id` +
/// `object_id`). `email` and `name` are for display: they can change, and an email
/// is not necessarily verified (it is left out when the token says
/// `email_verified: false`), so accounts must never be keyed on them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IdClaims {
    pub subject: String,
    pub issuer: String,
    pub email: Option<String>,
    pub name: Option<String>,
    /// Microsoft `tid`: the tenant the account belongs to.
    pub tenant_id: Option<String>,
    /// Microsoft `oid`: the account's immutable id within its tenant.
    pub object_id: Option<String>,
    /// The token's `exp`, in unix seconds.
    pub expires_at: i64,
}

/// What the token must match.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The provider's JWK set (`jwks_uri` of its discovery document).
    pub jwks_url: &'a str,
    /// The provider's issuer. It may contain the literal `{tenantid}` placeholder,
    /// which is replaced by the token's `tid` before comparing.
    pub issuer: &'a str,
    /// Our OAuth client id.
    pub audience: &'a str,
    /// The nonce sent in the authorization request, if one was.
    pub nonce: Option<&'a str>,
}

/// Why an ID token was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdTokenError {
    #[error("ID token is malformed: {0}")]
    Malformed(String),
    #[error("ID token is signed with algorithm {0:?}; only RS256 is accepted")]
    UnsupportedAlgorithm(String),
    #[error("ID token header has no key id (`kid`)")]
    MissingKeyId,
    #[error("ID token is signed with key {0:?}, which is not in the provider's JWK set")]
    UnknownKey(String),
    #[error("cannot get the provider's signing keys: {0}")]
    Jwks(String),
    #[error("ID token signature does not verify with the provider's key")]
    Signature,
    #[error("ID token has no `{0}` claim")]
    MissingClaim(&'static str),
    #[error("ID token expired at {expired_at} (now {now}, leeway {LEEWAY_SECS} s)")]
    Expired { expired_at: i64, now: i64 },
    #[error(
        "ID token is not valid before {not_before} (now {now}, leeway {LEEWAY_SECS} s); \
         is our clock right?"
    )]
    NotYetValid { not_before: i64, now: i64 },
    #[error(
        "ID token was issued in the future, at {issued_at} (now {now}, leeway {LEEWAY_SECS} s); \
         is our clock right?"
    )]
    IssuedInFuture { issued_at: i64, now: i64 },
    #[error("ID token issuer is {found:?}, expected {expected:?}")]
    WrongIssuer { expected: String, found: String },
    #[error("ID token signing key belongs to issuer {key_issuer:?}, but the token's is {found:?}")]
    KeyIssuerMismatch { key_issuer: String, found: String },
    #[error("ID token audience {found:?} does not include our client id {expected:?}")]
    WrongAudience {
        expected: String,
        found: Vec<String>,
    },
    #[error("ID token authorized party (`azp`) is {found:?}, expected our client id {expected:?}")]
    WrongAuthorizedParty {
        expected: String,
        found: Option<String>,
    },
    #[error("ID token nonce does not match the one sent in the authorization request")]
    NonceMismatch,
}

/// A JWKS cache shared by all verifications: keyed by URL, kept until its expiry.
#[derive(Debug)]
pub struct JwksCache {
    client: reqwest::Client,
    /// One entry per JWKS URL. URLs come from configuration, so this stays small.
    providers: Mutex<HashMap<String, Arc<tokio::sync::Mutex<ProviderKeys>>>>,
}

/// The keys of one JWKS URL. Its async mutex is held across a fetch, so that
/// verifications arriving meanwhile wait for that fetch instead of starting their own.
#[derive(Debug, Default)]
struct ProviderKeys {
    /// The last set fetched successfully.
    set: Option<KeySet>,
    /// When the URL was last contacted, successfully or not.
    last_attempt: Option<Instant>,
    /// Why the last attempt failed, if it did.
    last_error: Option<String>,
}

#[derive(Debug)]
struct KeySet {
    keys: HashMap<String, Arc<CachedKey>>,
    fresh_until: Instant,
}

#[derive(Debug)]
struct CachedKey {
    key: DecodingKey,
    /// Microsoft's per-key `issuer`, possibly with the `{tenantid}` placeholder.
    issuer: Option<String>,
}

impl JwksCache {
    pub fn new(client: reqwest::Client) -> Self {
        Self {
            client,
            providers: Mutex::new(HashMap::new()),
        }
    }

    /// Verifies `id_token` as the module documentation describes, and returns what it says.
    pub async fn verify(
        &self,
        id_token: &str,
        expected: &Expected<'_>,
    ) -> Result<IdClaims, IdTokenError> {
        let kid = check_header(id_token)?;
        let key = self.signing_key(expected.jwks_url, &kid).await?;
        let claims = check_signature(id_token, &key.key)?;
        check_claims(claims, key.issuer.as_deref(), expected, unix_now())
    }

    fn provider(&self, url: &str) -> Arc<tokio::sync::Mutex<ProviderKeys>> {
        let mut providers = self
            .providers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(providers.entry(url.to_owned()).or_default())
    }

    /// The key `kid` of the set at `url`, fetching the set if it is missing, stale,
    /// or lacks `kid`, as often as the fetch interval allows.
    async fn signing_key(&self, url: &str, kid: &str) -> Result<Arc<CachedKey>, IdTokenError> {
        let provider = self.provider(url);
        let mut state = provider.lock().await;
        let now = Instant::now();
        let fresh_set = state.set.as_ref().filter(|set| set.fresh_until > now);
        if let Some(key) = fresh_set.and_then(|set| set.keys.get(kid)) {
            return Ok(Arc::clone(key));
        }
        let have_fresh_set = fresh_set.is_some();

        if let Some(last) = state.last_attempt {
            let since = now.saturating_duration_since(last);
            if since < MIN_FETCH_INTERVAL {
                let wait = (MIN_FETCH_INTERVAL - since).as_secs().max(1);
                if have_fresh_set {
                    tracing::debug!(
                        jwks_url = url,
                        kid = %excerpt(kid),
                        "unknown ID token key; the JWK set was fetched too recently to fetch it again"
                    );
                    return Err(IdTokenError::UnknownKey(excerpt(kid)));
                }
                let reason = state
                    .last_error
                    .as_deref()
                    .unwrap_or("the cached set expired");
                return Err(IdTokenError::Jwks(format!(
                    "{url}: {reason}; next attempt allowed in {wait} s"
                )));
            }
        }

        state.last_attempt = Some(now);
        match self.fetch(url).await {
            Ok(set) => {
                state.last_error = None;
                let key = set.keys.get(kid).cloned();
                state.set = Some(set);
                key.ok_or_else(|| IdTokenError::UnknownKey(excerpt(kid)))
            }
            Err(reason) => {
                tracing::warn!(jwks_url = url, error = %reason, "JWK set fetch failed");
                state.last_error = Some(reason.clone());
                Err(IdTokenError::Jwks(format!("{url}: {reason}")))
            }
        }
    }

    async fn fetch(&self, url: &str) -> Result<KeySet, String> {
        let mut response = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(describe)?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP status {status}"));
        }
        let too_large = || format!("response is larger than {} KiB", MAX_JWKS_BYTES / 1024);
        if response
            .content_length()
            .is_some_and(|length| length > MAX_JWKS_BYTES as u64)
        {
            return Err(too_large());
        }
        let lifetime = cache_lifetime(response.headers());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(describe)? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        let keys = parse_jwks(&body)?;
        tracing::info!(
            jwks_url = url,
            keys = keys.len(),
            cache_secs = lifetime.as_secs(),
            "fetched JWK set"
        );
        Ok(KeySet {
            keys,
            fresh_until: Instant::now() + lifetime,
        })
    }
}

/// A reqwest error with its causes, without the URL (callers add it).
fn describe(error: reqwest::Error) -> String {
    if error.is_timeout() {
        return format!("timed out after {} s", FETCH_TIMEOUT.as_secs());
    }
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// How long a fetched set stays fresh: its `Cache-Control: max-age`, clamped.
/// Public for the fuzz target `oauth_cache_control` (fuzz/tests/oauth.rs).
pub fn cache_lifetime(headers: &reqwest::header::HeaderMap) -> Duration {
    headers
        .get_all(reqwest::header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|directive| {
            let (name, value) = directive.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("max-age") {
                return None;
            }
            value.trim().trim_matches('"').parse::<u64>().ok()
        })
        .map_or(DEFAULT_CACHE_LIFETIME, |secs| {
            Duration::from_secs(secs).clamp(MIN_CACHE_LIFETIME, MAX_CACHE_LIFETIME)
        })
}

/// The RS256 signing keys of a JWK set, by key id. Keys of other kinds (encryption,
/// EC, unknown types, weak RSA) are skipped; a set without any usable key is an error.
fn parse_jwks(body: &[u8]) -> Result<HashMap<String, Arc<CachedKey>>, String> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }

    let raw: RawSet =
        serde_json::from_slice(body).map_err(|e| format!("response is not a JWK set: {e}"))?;
    let mut keys = HashMap::new();
    for value in raw.keys {
        let issuer = value
            .get("issuer")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        let kid = value
            .get("kid")
            .and_then(serde_json::Value::as_str)
            .map_or_else(|| "(none)".to_owned(), excerpt);
        match rs256_key(value) {
            Ok((kid, key)) => {
                keys.entry(kid)
                    .or_insert_with(|| Arc::new(CachedKey { key, issuer }));
            }
            Err(reason) => tracing::debug!(kid = %kid, reason, "skipping JWK"),
        }
    }
    if keys.is_empty() {
        return Err("the JWK set has no RSA signing key usable with RS256".to_owned());
    }
    Ok(keys)
}

fn rs256_key(value: serde_json::Value) -> Result<(String, DecodingKey), &'static str> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|_| "not a JWK this verifier reads")?;
    let kid = jwk.common.key_id.ok_or("no kid")?;
    let AlgorithmParameters::RSA(rsa) = &jwk.algorithm else {
        return Err("not an RSA key");
    };
    if !matches!(
        jwk.common.public_key_use,
        None | Some(PublicKeyUse::Signature)
    ) {
        return Err("not a signing key");
    }
    if !matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::RS256)) {
        return Err("not an RS256 key");
    }
    let modulus = URL_SAFE_NO_PAD
        .decode(&rsa.n)
        .map_err(|_| "modulus is not base64url")?;
    let exponent = URL_SAFE_NO_PAD
        .decode(&rsa.e)
        .map_err(|_| "exponent is not base64url")?;
    if modulus.iter().skip_while(|byte| **byte == 0).count() < MIN_RSA_MODULUS_BYTES {
        return Err("RSA key shorter than 2048 bits");
    }
    Ok((
        kid,
        DecodingKey::from_rsa_raw_components(&modulus, &exponent),
    ))
}

/// Checks the token's shape and header, and returns its key id. Runs before any key
/// lookup, so refused algorithms never reach the key set.
fn check_header(token: &str) -> Result<String, IdTokenError> {
    #[derive(Deserialize)]
    struct Header {
        alg: String,
        kid: Option<String>,
        crit: Option<IgnoredAny>,
    }

    if token.len() > MAX_TOKEN_BYTES {
        return Err(IdTokenError::Malformed(format!(
            "longer than {} KiB",
            MAX_TOKEN_BYTES / 1024
        )));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(IdTokenError::Malformed(
            "not three dot-separated parts".to_owned(),
        ));
    };
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| IdTokenError::Malformed("header is not base64url".to_owned()))?;
    let header: Header = serde_json::from_slice(&header)
        .map_err(|e| IdTokenError::Malformed(bounded(&format!("header: {e}"))))?;
    if header.alg != "RS256" {
        return Err(IdTokenError::UnsupportedAlgorithm(excerpt(&header.alg)));
    }
    if header.crit.is_some() {
        // RFC 7515 §4.1.11: extensions we do not understand must not be ignored.
        return Err(IdTokenError::Malformed(
            "header has critical extensions (`crit`)".to_owned(),
        ));
    }
    header
        .kid
        .filter(|kid| !kid.is_empty())
        .ok_or(IdTokenError::MissingKeyId)
}

/// The claims we read. Types are checked by deserialization; presence and values
/// by [`check_claims`].
#[derive(Debug, Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    azp: Option<String>,
    exp: Option<NumericDate>,
    iat: Option<NumericDate>,
    nbf: Option<NumericDate>,
    nonce: Option<String>,
    email: Option<String>,
    /// A boolean, though some providers have sent the string "true"/"false".
    email_verified: Option<serde_json::Value>,
    name: Option<String>,
    tid: Option<String>,
    oid: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Several(Vec<String>),
}

/// A JWT NumericDate: seconds since the epoch, possibly fractional (truncated).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "serde_json::Number")]
struct NumericDate(i64);

impl TryFrom<serde_json::Number> for NumericDate {
    type Error = &'static str;

    fn try_from(number: serde_json::Number) -> Result<Self, Self::Error> {
        if let Some(secs) = number.as_i64() {
            return Ok(Self(secs));
        }
        match number.as_f64() {
            // The cast saturates; the range check keeps the value meaningful.
            Some(secs) if secs.is_finite() && secs.abs() < 1e15 => Ok(Self(secs as i64)),
            _ => Err("a NumericDate must be a number of seconds"),
        }
    }
}

/// Verifies the RS256 signature and decodes the claims. Claim checks are left to
/// [`check_claims`], which knows OpenID Connect's rules and reports precise errors.
fn check_signature(token: &str, key: &DecodingKey) -> Result<Claims, IdTokenError> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => IdTokenError::Signature,
            // jsonwebtoken parses the header itself and quotes what it could
            // not read, which may be a long, unauthenticated value.
            _ => IdTokenError::Malformed(bounded(&e.to_string())),
        })
}

/// Applies OIDC Core §3.1.3.7 to the claims of a token whose signature verified
/// with a key published with `key_issuer` (if the provider says), at `now`.
fn check_claims(
    claims: Claims,
    key_issuer: Option<&str>,
    expected: &Expected<'_>,
    now: i64,
) -> Result<IdClaims, IdTokenError> {
    let tid = claims.tid.as_deref();
    let issuer = claims.iss.ok_or(IdTokenError::MissingClaim("iss"))?;
    let expected_issuer = resolve_issuer(expected.issuer, tid)?;
    // Google documents `accounts.google.com` as the same issuer as
    // `https://accounts.google.com`; a scheme-less `iss` equal to the expected
    // issuer without its scheme is that same issuer.
    if issuer != expected_issuer
        && expected_issuer.strip_prefix("https://") != Some(issuer.as_str())
    {
        return Err(IdTokenError::WrongIssuer {
            expected: expected_issuer,
            found: issuer,
        });
    }
    if let Some(template) = key_issuer {
        let key_issuer = resolve_issuer(template, tid)?;
        if key_issuer != issuer {
            return Err(IdTokenError::KeyIssuerMismatch {
                key_issuer,
                found: issuer,
            });
        }
    }

    let audiences = match claims.aud.ok_or(IdTokenError::MissingClaim("aud"))? {
        Audience::One(audience) => vec![audience],
        Audience::Several(audiences) => audiences,
    };
    if !audiences
        .iter()
        .any(|audience| audience == expected.audience)
    {
        return Err(IdTokenError::WrongAudience {
            expected: expected.audience.to_owned(),
            found: audiences,
        });
    }
    match claims.azp {
        Some(azp) if azp != expected.audience => {
            return Err(IdTokenError::WrongAuthorizedParty {
                expected: expected.audience.to_owned(),
                found: Some(azp),
            });
        }
        None if audiences.len() > 1 => {
            return Err(IdTokenError::WrongAuthorizedParty {
                expected: expected.audience.to_owned(),
                found: None,
            });
        }
        _ => {}
    }

    let NumericDate(expires_at) = claims.exp.ok_or(IdTokenError::MissingClaim("exp"))?;
    if now >= expires_at.saturating_add(LEEWAY_SECS) {
        return Err(IdTokenError::Expired {
            expired_at: expires_at,
            now,
        });
    }
    let NumericDate(issued_at) = claims.iat.ok_or(IdTokenError::MissingClaim("iat"))?;
    if issued_at > now.saturating_add(LEEWAY_SECS) {
        return Err(IdTokenError::IssuedInFuture { issued_at, now });
    }
    if let Some(NumericDate(not_before)) = claims.nbf
        && not_before > now.saturating_add(LEEWAY_SECS)
    {
        return Err(IdTokenError::NotYetValid { not_before, now });
    }

    if let Some(sent) = expected.nonce {
        let received = claims.nonce.ok_or(IdTokenError::MissingClaim("nonce"))?;
        if received != sent {
            return Err(IdTokenError::NonceMismatch);
        }
    }

    let subject = claims
        .sub
        .filter(|sub| !sub.is_empty())
        .ok_or(IdTokenError::MissingClaim("sub"))?;
    let email_unverified = matches!(&claims.email_verified, Some(serde_json::Value::Bool(false)))
        || matches!(&claims.email_verified, Some(serde_json::Value::String(s)) if s == "false");
    Ok(IdClaims {
        subject,
        issuer,
        email: claims.email.filter(|_| !email_unverified),
        name: claims.name,
        tenant_id: claims.tid,
        object_id: claims.oid,
        expires_at,
    })
}

/// `template` with `{tenantid}` replaced by the token's `tid`, which is then required.
fn resolve_issuer(template: &str, tid: Option<&str>) -> Result<String, IdTokenError> {
    if !template.contains(TENANT_PLACEHOLDER) {
        return Ok(template.to_owned());
    }
    let tid = tid
        .filter(|tid| !tid.is_empty())
        .ok_or(IdTokenError::MissingClaim("tid"))?;
    Ok(template.replace(TENANT_PLACEHOLDER, tid))
}

/// A parser's error message, which may quote the untrusted input, cut to
/// [`MAX_ERROR_CHARS`].
fn bounded(message: &str) -> String {
    match message.char_indices().nth(MAX_ERROR_CHARS) {
        Some((end, _)) => format!("{}… (cut)", &message[..end]),
        None => message.to_owned(),
    }
}

/// An untrusted string, shortened for errors and logs.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(MAX_EXCERPT_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::extract::State;
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{Value, json};

    const PEM: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/oauth/rsa-test-key.pem"
    ));
    const JWK: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/oauth/rsa-test-key.jwk.json"
    ));
    const KID: &str = "emulator-test-key-1";
    const CLIENT_ID: &str = "client-123.apps.example";
    const GOOGLE_ISSUER: &str = "https://accounts.google.com";
    const MICROSOFT_ISSUER: &str = "https://login.microsoftonline.com/{tenantid}/v2.0";
    const TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

    static SIGNING_KEY: LazyLock<EncodingKey> =
        LazyLock::new(|| EncodingKey::from_rsa_pem(PEM.as_bytes()).expect("fixture PEM"));

    fn fixture_jwk() -> Value {
        serde_json::from_str(JWK).expect("fixture JWK")
    }

    /// The fixture key with other members set or replaced.
    fn jwk_with(changes: Value) -> Value {
        let mut jwk = fixture_jwk();
        for (name, value) in changes.as_object().expect("an object") {
            jwk[name] = value.clone();
        }
        jwk
    }

    fn jwks(keys: Vec<Value>) -> Value {
        json!({ "keys": keys })
    }

    /// A loopback JWKS endpoint that counts its requests.
    struct Server {
        url: String,
        state: Arc<ServerState>,
    }

    struct ServerState {
        hits: AtomicUsize,
        jwks: Mutex<Value>,
        status: StatusCode,
        cache_control: Option<&'static str>,
        delay: Duration,
    }

    impl Server {
        async fn start(jwks: Value) -> Self {
            Self::start_with(jwks, StatusCode::OK, None, Duration::ZERO).await
        }

        async fn start_with(
            jwks: Value,
            status: StatusCode,
            cache_control: Option<&'static str>,
            delay: Duration,
        ) -> Self {
            let state = Arc::new(ServerState {
                hits: AtomicUsize::new(0),
                jwks: Mutex::new(jwks),
                status,
                cache_control,
                delay,
            });
            let app = axum::Router::new()
                .route("/jwks", axum::routing::get(serve_jwks))
                .with_state(Arc::clone(&state));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            let addr = listener.local_addr().expect("local addr");
            tokio::spawn(async move { axum::serve(listener, app).await });
            Self {
                url: format!("http://{addr}/jwks"),
                state,
            }
        }

        fn hits(&self) -> usize {
            self.state.hits.load(Ordering::SeqCst)
        }

        fn publish(&self, jwks: Value) {
            *self.state.jwks.lock().expect("jwks lock") = jwks;
        }
    }

    async fn serve_jwks(State(state): State<Arc<ServerState>>) -> Response {
        state.hits.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(state.delay).await;
        let body = state.jwks.lock().expect("jwks lock").to_string();
        let mut response = (
            state.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let Some(cache_control) = state.cache_control {
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static(cache_control),
            );
        }
        response
    }

    fn sign(claims: &Value, kid: Option<&str>) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &SIGNING_KEY).expect("sign")
    }

    fn b64(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    fn google_claims() -> Value {
        let now = unix_now();
        json!({
            "iss": GOOGLE_ISSUER,
            "sub": "110169484474386276334",
            "aud": CLIENT_ID,
            "azp": CLIENT_ID,
            "email": "vendor@example.com",
            "email_verified": true,
            "name": "Ada Vendor",
            "iat": now,
            "exp": now + 3600,
            "nonce": "n-0S6_WzA2Mj",
        })
    }

    fn microsoft_claims() -> Value {
        let now = unix_now();
        json!({
            "ver": "2.0",
            "iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
            "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
            "aud": CLIENT_ID,
            "tid": TENANT,
            "oid": "00000000-0000-0000-66f3-3332eca7ea81",
            "preferred_username": "ada@contoso.example",
            "email": "ada@contoso.example",
            "name": "Ada Vendor",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "nonce": "ms-nonce",
        })
    }

    fn google<'a>(url: &'a str) -> Expected<'a> {
        Expected {
            jwks_url: url,
            issuer: GOOGLE_ISSUER,
            audience: CLIENT_ID,
            nonce: Some("n-0S6_WzA2Mj"),
        }
    }

    fn cache() -> JwksCache {
        JwksCache::new(reqwest::Client::new())
    }

    /// Pretends the last contact with `url` happened `by` earlier than it did.
    async fn backdate_last_fetch(cache: &JwksCache, url: &str, by: Duration) {
        let provider = cache.provider(url);
        let mut state = provider.lock().await;
        let last = state.last_attempt.expect("fetched before");
        state.last_attempt = Some(last.checked_sub(by).expect("monotonic clock past epoch"));
    }

    #[tokio::test]
    async fn valid_google_token() {
        let server = Server::start(jwks(vec![fixture_jwk()])).await;
        let token = sign(&google_claims(), Some(KID));
        let claims = cache()
            .verify(&token, &google(&server.url))
            .await
            .expect("valid token");
        assert_eq!(
            claims,
            IdClaims {
                subject: "110169484474386276334".into(),
                issuer: GOOGLE_ISSUER.into(),
                email: Some("vendor@example.com".into()),
                name: Some("Ada Vendor".into()),
                tenant_id: None,
                object_id: None,
                expires_at: google_claims()["exp"].as_i64().expect("exp"),
            }
        );
    }

    #[tokio::test]
    async fn valid_microsoft_token_with_tenant_issuer() {
        // Microsoft publishes each key with its issuer template.
        let key = jwk_with(json!({ "issuer": MICROSOFT_ISSUER, "x5t": "abc" }));
        let server = Server::start(jwks(vec![key])).await;
        let expected = Expected {
            jwks_url: &server.url,
            issuer: MICROSOFT_ISSUER,
            audience: CLIENT_ID,
            nonce: Some("ms-nonce"),
        };
        let claims = cache()
            .verify(&sign(&microsoft_claims(), Some(KID)), &expected)
            .await
            .expect("valid token");
        assert_eq!(
            claims.issuer,
            format!("https://login.microsoftonline.com/{TENANT}/v2.0")
        );
        assert_eq!(claims.tenant_id.as_deref(), Some(TENANT));
        assert_eq!(
            claims.object_id.as_deref(),
            Some("00000000-0000-0000-66f3-3332eca7ea81")
        );
        assert_eq!(claims.email.as_deref(), Some("ada@contoso.example"));
    }

    #[tokio::test]
    async fn microsoft_issuer_must_be_the_tokens_own_tenant() {
        let server = Server::start(jwks(vec![fixture_jwk()])).await;
        let expected = Expected {
            jwks_url: &server.url,
            issuer: MICROSOFT_ISSUER,
            audience: CLIENT_ID,
            nonce: None,
        };
        let mut claims = microsoft_claims();
        claims["tid"] = json!("72f988bf-86f1-41af-91ab-2d7cd011db47");
        let error = cache()
            .verify(&sign(&claims, Some(KID)), &expected)
            .await
            .expect_err("issuer of another tenant");
        assert!(
            matches!(&error, IdTokenError::WrongIssuer { expected, .. }
                if expected.contains("72f988bf-86f1-41af-91ab-2d7cd011db47")),
            "{error:?}"
        );

        claims.as_object_mut().expect("object").remove("tid");
        let error = cache()
            .verify(&sign(&claims, Some(KID)), &expected)
            .await
            .expect_err("no tid");
        assert!(
            matches!(error, IdTokenError::MissingClaim("tid")),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn key_published_for_another_issuer_is_refused() {
        let key = jwk_with(json!({
            "issuer": "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0"
        }));
        let server = Server::start(jwks(vec![key])).await;
        let expected = Expected {
            jwks_url: &server.url,
            issuer: MICROSOFT_ISSUER,
            audience: CLIENT_ID,
            nonce: None,
        };
        let error = cache()
            .verify(&sign(&microsoft_claims(), Some(KID)), &expected)
            .await
            .expect_err("key of another tenant");
        assert!(
            matches!(error, IdTokenError::KeyIssuerMismatch { .. }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn wrong_issuer_audience_expiry_and_nonce_are_refused() {
        let server = Server::start(jwks(vec![fixture_jwk()])).await;
        let cache = cache();
        let expected = google(&server.url);
        let refuse = async |changes: Value| {
            let mut claims = google_claims();
            for (name, value) in changes.as_object().expect("object") {
                claims[name] = value.clone();
            }
            cache
                .verify(&sign(&claims, Some(KID)), &expected)
                .await
                .expect_err("refused")
        };

        let error = refuse(json!({ "iss": "https://evil.example" })).await;
        assert!(
            matches!(&error, IdTokenError::WrongIssuer { expected, found }
                if expected == GOOGLE_ISSUER && found == "https://evil.example"),
            "{error:?}"
        );
        let error = refuse(json!({ "aud": "someone-else" })).await;
        assert!(
            matches!(error, IdTokenError::WrongAudience { .. }),
            "{error:?}"
        );
        let error = refuse(json!({ "aud": ["someone-else", "another"] })).await;
        assert!(
            matches!(error, IdTokenError::WrongAudience { .. }),
            "{error:?}"
        );
        let error = refuse(json!({ "azp": "someone-else" })).await;
        assert!(
            matches!(error, IdTokenError::WrongAuthorizedParty { .. }),
            "{error:?}"
        );
        let expired_at = unix_now() - 120;
        let error = refuse(json!({ "exp": expired_at, "iat": expired_at - 3600 })).await;
        assert!(
            matches!(error, IdTokenError::Expired { expired_at: at, .. } if at == expired_at),
            "{error:?}"
        );
        let error = refuse(json!({ "nonce": "replayed" })).await;
        assert!(matches!(error, IdTokenError::NonceMismatch), "{error:?}");
        let error = refuse(json!({ "nonce": null })).await;
        assert!(
            matches!(error, IdTokenError::MissingClaim("nonce")),
            "{error:?}"
        );
        assert_eq!(server.hits(), 1, "one fetch served every verification");
    }

    #[tokio::test]
    async fn alg_none_is_refused_before_any_key_lookup() {
        let server = Server::start(jwks(vec![fixture_jwk()])).await;
        let header = json!({ "alg": "none", "typ": "JWT", "kid": KID });
        let token = format!("{}.{}.", b64(&header), b64(&google_claims()));
        let error = cache()
            .verify(&token, &google(&server.url))
            .await
            .expect_err("alg none");
        assert!(
            matches!(&error, IdTokenError::UnsupportedAlgorithm(alg) if alg == "none"),
            "{error:?}"
        );
        assert_eq!(server.hits(), 0);
    }

    #[tokio::test]
    async fn hs256_signed_with_the_public_key_is_refused() {
        // The classic confusion attack: HMAC keyed with the published public key.
        let server = Server::start(jwks(vec![fixture_jwk()])).await;
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(KID.to_owned());
        let hmac_key = EncodingKey::from_secret(JWK.as_bytes());
        let token = jsonwebtoken::encode(&header, &google_claims(), &hmac_key).expect("sign");
        let error = cache()
            .verify(&token, &google(&server.url))
            .await
            .expect_err("HS256");
        assert!(
            matches!(&error, IdTokenError::UnsupportedAlgorithm(alg) if alg == "HS256"),
            "{error:?}"
        );
        assert_eq!(server.hits(), 0);
    }

    #[tokio::test]
    async fn malformed_tokens_and_missing_kid_are_refused_without_fetching() {
        let server = Server::start(jwks(vec![fixture_jwk()])).await;
        let cache = cache();
        let expected = google(&server.url);
        for token in ["", "abc", "a.b", "a.b.c.d", "!!!.e30.sig", "e30.e30.sig"] {
            let error = cache.verify(token, &expected).await.expect_err(token);
            assert!(
                matches!(error, IdTokenError::Malformed(_)),
                "{token}: {error:?}"
            );
        }
        let error = cache
            .verify(&sign(&google_claims(), None), &expected)
            .await
            .expect_err("no kid");
        assert!(matches!(error, IdTokenError::MissingKeyId), "{error:?}");
        let header = json!({ "alg": "RS256", "kid": KID, "crit": ["exp"] });
        let token = format!("{}.{}.c2ln", b64(&header), b64(&google_claims()));
        let error = cache.verify(&token, &expected).await.expect_err("crit");
        assert!(matches!(error, IdTokenError::Malformed(_)), "{error:?}");
        let long_alg = "X".repeat(10_000);
        let header = json!({ "alg": long_alg, "kid": KID });
        let token = format!("{}.{}.c2ln", b64(&header), b64(&google_claims()));
        let error = cache.verify(&token, &expected).await.expect_err("alg");
        assert!(error.to_string().len() < 200, "untrusted alg is shortened");
        assert_eq!(server.hits(), 0);
    }

    #[tokio::test]
    async fn tampered_signature_is_refused() {
        let server = Server::start(jwks(vec![fixture_jwk()])).await;
        let token = sign(&google_claims(), Some(KID));
        let signature_start = token.rfind('.').expect("three parts") + 1;
        let mut bytes = token.into_bytes();
        let at = signature_start + 20;
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let token = String::from_utf8(bytes).expect("ascii");
        let error = cache()
            .verify(&token, &google(&server.url))
            .await
            .expect_err("tampered");
        assert!(matches!(error, IdTokenError::Signature), "{error:?}");
    }

    #[tokio::test]
    async fn token_signed_by_another_key_with_the_same_kid_is_refused() {
        // The provider publishes a different key under the kid our token names:
        // the token's signature must not verify with it.
        let n = fixture_jwk()["n"].as_str().expect("n").to_owned();
        let mut other = n.into_bytes();
        other[100] = if other[100] == b'A' { b'B' } else { b'A' };
        let other = String::from_utf8(other).expect("ascii");
        let server = Server::start(jwks(vec![jwk_with(json!({ "n": other }))])).await;
        let error = cache()
            .verify(&sign(&google_claims(), Some(KID)), &google(&server.url))
            .await
            .expect_err("other key");
        assert!(matches!(error, IdTokenError::Signature), "{error:?}");
    }

    #[tokio::test]
    async fn unknown_kid_refetches_at_most_once_per_minute() {
        let server = Server::start(jwks(vec![fixture_jwk()])).await;
        let cache = cache();
        let expected = google(&server.url);
        let verify_kid = async |kid: &str| {
            cache
                .verify(&sign(&google_claims(), Some(kid)), &expected)
                .await
        };

        // A cold cache fetches once, and does not refetch a set it just got.
        let error = verify_kid("rotated-1").await.expect_err("unknown kid");
        assert!(matches!(&error, IdTokenError::UnknownKey(kid) if kid == "rotated-1"));
        assert_eq!(server.hits(), 1);

        // A minute later an unknown kid may mean a key rollover: one refetch ...
        backdate_last_fetch(&cache, &server.url, Duration::from_secs(61)).await;
        let error = verify_kid("rotated-2").await.expect_err("unknown kid");
        assert!(matches!(error, IdTokenError::UnknownKey(_)), "{error:?}");
        assert_eq!(server.hits(), 2);

        // ... but more unknown kids within the minute do not reach the provider.
        for kid in ["rotated-3", "rotated-4", "rotated-5"] {
            let error = verify_kid(kid).await.expect_err("unknown kid");
            assert!(matches!(error, IdTokenError::UnknownKey(_)), "{error:?}");
        }
        assert_eq!(server.hits(), 2);

        // The known key keeps working from the cache meanwhile.
        verify_kid(KID).await.expect("known kid");
        assert_eq!(server.hits(), 2);
    }

    #[tokio::test]
    async fn key_rollover_is_picked_up_by_a_refetch() {
        let server = Server::start(jwks(vec![fixture_jwk()])).await;
        let cache = cache();
        let expected = google(&server.url);
        cache
            .verify(&sign(&google_claims(), Some(KID)), &expected)
            .await
            .expect("old key");
        server.publish(jwks(vec![
            fixture_jwk(),
            jwk_with(json!({ "kid": "emulator-test-key-2" })),
        ]));
        backdate_last_fetch(&cache, &server.url, Duration::from_secs(61)).await;
        cache
            .verify(
                &sign(&google_claims(), Some("emulator-test-key-2")),
                &expected,
            )
            .await
            .expect("new key after refetch");
        assert_eq!(server.hits(), 2);
    }

    #[tokio::test]
    async fn cached_set_is_reused_until_it_expires() {
        let server = Server::start_with(
            jwks(vec![fixture_jwk()]),
            StatusCode::OK,
            Some("public, max-age=600, must-revalidate, no-transform"),
            Duration::ZERO,
        )
        .await;
        let cache = cache();
        let expected = google(&server.url);
        let token = sign(&google_claims(), Some(KID));
        cache.verify(&token, &expected).await.expect("first");
        cache.verify(&token, &expected).await.expect("second");
        assert_eq!(server.hits(), 1, "two verifications, one fetch");

        {
            let provider = cache.provider(&server.url);
            let mut state = provider.lock().await;
            let set = state.set.as_mut().expect("cached set");
            let lifetime = set.fresh_until.saturating_duration_since(Instant::now());
            assert!(
                lifetime <= Duration::from_secs(600) && lifetime > Duration::from_secs(590),
                "max-age honoured: {lifetime:?}"
            );
            // Move the fetch ten minutes into the past: the set has expired.
            let fetched = Instant::now()
                .checked_sub(Duration::from_secs(601))
                .expect("monotonic clock past epoch");
            set.fresh_until = fetched + Duration::from_secs(600);
            state.last_attempt = Some(fetched);
        }
        cache.verify(&token, &expected).await.expect("after expiry");
        assert_eq!(server.hits(), 2, "an expired set is fetched again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_verifications_share_one_fetch() {
        let server = Server::start_with(
            jwks(vec![fixture_jwk()]),
            StatusCode::OK,
            None,
            Duration::from_millis(200),
        )
        .await;
        let cache = Arc::new(cache());
        let token = sign(&google_claims(), Some(KID));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (cache, token, url) = (Arc::clone(&cache), token.clone(), server.url.clone());
            tasks.spawn(async move { cache.verify(&token, &google(&url)).await });
        }
        while let Some(result) = tasks.join_next().await {
            result.expect("task").expect("valid token");
        }
        assert_eq!(server.hits(), 1);
    }

    #[tokio::test]
    async fn failed_fetches_are_not_retried_within_a_minute() {
        let server = Server::start_with(
            json!({ "error": "unavailable" }),
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            Duration::ZERO,
        )
        .await;
        let cache = cache();
        let token = sign(&google_claims(), Some(KID));
        let expected = google(&server.url);
        for _ in 0..3 {
            let error = cache.verify(&token, &expected).await.expect_err("down");
            assert!(
                matches!(&error, IdTokenError::Jwks(reason) if reason.contains("503")),
                "{error:?}"
            );
        }
        assert_eq!(server.hits(), 1);
    }

    #[tokio::test]
    async fn oversized_and_unusable_key_sets_are_refused() {
        let padding = "x".repeat(MAX_JWKS_BYTES);
        let server = Server::start(json!({ "keys": [fixture_jwk()], "padding": padding })).await;
        let token = sign(&google_claims(), Some(KID));
        let error = cache()
            .verify(&token, &google(&server.url))
            .await
            .expect_err("oversized");
        assert!(
            matches!(&error, IdTokenError::Jwks(reason) if reason.contains("64 KiB")),
            "{error:?}"
        );

        // Only an encryption key, an HS256 secret and a 1024-bit key: nothing usable.
        let short_n = URL_SAFE_NO_PAD.encode([0xC5_u8; 128]);
        let server = Server::start(jwks(vec![
            jwk_with(json!({ "use": "enc", "alg": "RSA-OAEP" })),
            json!({ "kty": "oct", "kid": KID, "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(JWK) }),
            jwk_with(json!({ "n": short_n })),
            json!({ "kty": "future-kind", "kid": "x" }),
        ]))
        .await;
        let error = cache()
            .verify(&token, &google(&server.url))
            .await
            .expect_err("no usable key");
        assert!(matches!(error, IdTokenError::Jwks(_)), "{error:?}");
    }

    #[test]
    fn cache_lifetime_follows_max_age_within_bounds() {
        let lifetime = |value: Option<&'static str>| {
            let mut headers = reqwest::header::HeaderMap::new();
            if let Some(value) = value {
                headers.insert(
                    reqwest::header::CACHE_CONTROL,
                    HeaderValue::from_static(value),
                );
            }
            cache_lifetime(&headers)
        };
        assert_eq!(lifetime(None), DEFAULT_CACHE_LIFETIME);
        assert_eq!(lifetime(Some("no-cache")), DEFAULT_CACHE_LIFETIME);
        assert_eq!(
            lifetime(Some("public, max-age=19695, must-revalidate")),
            Duration::from_secs(19695)
        );
        assert_eq!(lifetime(Some("max-age=30")), MIN_CACHE_LIFETIME);
        assert_eq!(lifetime(Some("Max-Age=9999999")), MAX_CACHE_LIFETIME);
        assert_eq!(lifetime(Some("max-age=soon")), DEFAULT_CACHE_LIFETIME);
    }

    fn claims(value: Value) -> Claims {
        serde_json::from_value(value).expect("claims")
    }

    #[test]
    fn claim_rules() {
        let expected = Expected {
            jwks_url: "unused",
            issuer: GOOGLE_ISSUER,
            audience: CLIENT_ID,
            nonce: None,
        };
        let now = 1_700_000_000;
        let base = || {
            json!({
                "iss": GOOGLE_ISSUER, "sub": "s", "aud": CLIENT_ID,
                "iat": now, "exp": now + 600,
            })
        };
        let check = |changes: Value| {
            let mut value = base();
            for (name, change) in changes.as_object().expect("object") {
                value[name] = change.clone();
            }
            check_claims(claims(value), None, &expected, now)
        };

        check(json!({})).expect("valid");
        // Clock skew within the leeway is tolerated, beyond it is not.
        check(json!({ "exp": now - 59 })).expect("expired within leeway");
        assert!(matches!(
            check(json!({ "exp": now - 60 })),
            Err(IdTokenError::Expired { .. })
        ));
        check(json!({ "iat": now + 60, "nbf": now + 60 })).expect("skew within leeway");
        assert!(matches!(
            check(json!({ "iat": now + 61 })),
            Err(IdTokenError::IssuedInFuture { .. })
        ));
        assert!(matches!(
            check(json!({ "nbf": now + 61 })),
            Err(IdTokenError::NotYetValid { .. })
        ));
        check(json!({ "exp": (now + 600) as f64 + 0.5 })).expect("fractional NumericDate");
        // Several audiences need azp naming us.
        check(json!({ "aud": [CLIENT_ID, "other"], "azp": CLIENT_ID })).expect("azp");
        assert!(matches!(
            check(json!({ "aud": [CLIENT_ID, "other"] })),
            Err(IdTokenError::WrongAuthorizedParty { found: None, .. })
        ));
        check(json!({ "aud": [CLIENT_ID] })).expect("one audience in an array");
        for claim in ["iss", "sub", "aud", "exp", "iat"] {
            let mut value = base();
            value.as_object_mut().expect("object").remove(claim);
            let result = check_claims(claims(value), None, &expected, now);
            assert!(
                matches!(result, Err(IdTokenError::MissingClaim(name)) if name == claim),
                "{claim}: {result:?}"
            );
        }
        // An email the provider says is unverified is not reported.
        let reported =
            check(json!({ "email": "a@example.com", "email_verified": false })).expect("valid");
        assert_eq!(reported.email, None);
        let reported =
            check(json!({ "email": "a@example.com", "email_verified": "true" })).expect("valid");
        assert_eq!(reported.email.as_deref(), Some("a@example.com"));
    }
}
