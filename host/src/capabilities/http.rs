//! `wedsync:presence/http`: outbound requests made by the host for a plugin.
//!
//! The allow-list is checked on the parsed URL (scheme, host and port), never on a
//! header, so the class of Spin's CVE-2024-32980 (a `Host` header steering the
//! request) cannot arise: the `Host` header is the host's to set. URLs with
//! userinfo are refused, IP literals match only a pattern naming that IP, and
//! redirects are followed here, hop by hop, each hop checked like the first.
//!
//! Credentials are injected by reference: a connection's access token (refreshed
//! first when it is about to expire, and once more when the provider answers
//! 401) or a granted secret. The plugin never sees either.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::{Host, Url};

use super::Grants;
use super::secrets::SecretUse;
use crate::oauth::OAuth;
use crate::oauth::refresh::Reason;
use crate::store::connections::{ACTIVE, Credential, NEEDS_RECONSENT};
use crate::store::{SecretValue, Store, now_ms};

/// Redirect hops followed before giving up.
pub const MAX_REDIRECTS: usize = 5;

/// Headers a plugin may not set: the host owns them.
const HOST_OWNED_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "content-length",
    "transfer-encoding",
    "connection",
    "proxy-authorization",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("not allowed: {0}")]
    NotAllowed(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("timed out")]
    Timeout,
    #[error("response larger than the plugin's cap")]
    TooLarge,
    #[error("credential unavailable: {0}")]
    CredentialUnavailable(String),
    #[error("transport: {0}")]
    Transport(String),
}

/// One entry of `allowed_hosts`: `scheme://host[:port]`, `*.` allowed as the first label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    scheme: String,
    host: PatternHost,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternHost {
    Exact(Host<String>),
    /// `*.example.com`: any subdomain of `example.com`, not the domain itself.
    Subdomains(String),
}

impl HostPattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let (scheme, rest) = pattern
            .split_once("://")
            .ok_or("expected scheme://host[:port]")?;
        if scheme != "http" && scheme != "https" {
            return Err(format!("scheme {scheme:?} is not http or https"));
        }
        let (wildcard, rest) = match rest.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let url = Url::parse(&format!("{scheme}://{rest}")).map_err(|e| e.to_string())?;
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err("a pattern names a host, not a path".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("a pattern may not contain userinfo".into());
        }
        let host = url.host().ok_or("missing host")?.to_owned();
        let port = url.port_or_known_default().ok_or("missing port")?;
        let host = if wildcard {
            match host {
                Host::Domain(d) => PatternHost::Subdomains(d),
                _ => return Err("a wildcard applies to domain names, not IP addresses".into()),
            }
        } else {
            PatternHost::Exact(host)
        };
        Ok(Self {
            scheme: scheme.to_string(),
            host,
            port,
        })
    }

    pub fn matches(&self, url: &Url) -> bool {
        if url.scheme() != self.scheme || url.port_or_known_default() != Some(self.port) {
            return false;
        }
        match (&self.host, url.host()) {
            (PatternHost::Exact(h), Some(u)) => *h == u.to_owned(),
            (PatternHost::Subdomains(d), Some(Host::Domain(u))) => {
                u.len() > d.len() + 1
                    && u.ends_with(d.as_str())
                    && u[..u.len() - d.len()].ends_with('.')
            }
            _ => false,
        }
    }
}

/// A request as a plugin asked for it.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub connection: Option<String>,
    pub bearer_secret: Option<String>,
}

#[derive(Debug, Clone)]
pub struct OutboundResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The shared HTTP client: connection pooling, rustls, and no automatic redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("presence-host/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("the HTTP client configuration is static and valid")
}

fn check_url(grants: &Grants, raw: &str) -> Result<Url, HttpError> {
    let url =
        Url::parse(raw).map_err(|e| HttpError::InvalidRequest(format!("URL {raw:?}: {e}")))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(HttpError::NotAllowed(format!(
            "scheme {:?} is not http or https",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(HttpError::NotAllowed(
            "URLs with userinfo are refused".into(),
        ));
    }
    if !grants.allowed_hosts.iter().any(|p| p.matches(&url)) {
        return Err(HttpError::NotAllowed(format!(
            "{}://{}:{} is not in the allowed_hosts of plugin {}",
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.port_or_known_default().unwrap_or(0),
            grants.plugin
        )));
    }
    Ok(url)
}

fn build_headers(requested: &[(String, String)]) -> Result<HeaderMap, HttpError> {
    let mut headers = HeaderMap::new();
    for (name, value) in requested {
        let lower = name.to_ascii_lowercase();
        if HOST_OWNED_HEADERS.contains(&lower.as_str()) {
            return Err(HttpError::NotAllowed(format!(
                "header {name:?} is set by the host"
            )));
        }
        let name = HeaderName::from_bytes(lower.as_bytes())
            .map_err(|_| HttpError::InvalidRequest(format!("header name {name:?}")))?;
        let value = HeaderValue::from_str(value).map_err(|_| {
            HttpError::InvalidRequest(format!("header {name} has an invalid value"))
        })?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// Where requests go: the network, or (for `plugin run`) recorded answers.
/// Everything else is the same for both: the allow-list, credentials, the
/// token refresh after a 401, redirects, the response cap and the budget.
#[derive(Clone, Copy)]
pub enum Wire<'a> {
    Network(&'a reqwest::Client),
    Recorded(&'a dyn Recorded),
}

/// Answers requests from a recording instead of the network.
pub trait Recorded: Send + Sync {
    fn answer(&self, method: &str, url: &str) -> Result<OutboundResponse, HttpError>;
}

/// The requests one plugin call may still send: every request on the wire
/// counts, redirect hops and the retry after a token refresh included.
#[derive(Debug, Clone, Copy)]
pub struct RequestBudget {
    cap: u32,
    spent: u32,
}

impl RequestBudget {
    pub fn new(cap: u32) -> Self {
        Self { cap, spent: 0 }
    }

    fn spend(&mut self) -> Result<(), HttpError> {
        if self.spent >= self.cap {
            return Err(HttpError::NotAllowed(format!(
                "more than {} requests in one call (limits.max_http_requests)",
                self.cap
            )));
        }
        self.spent += 1;
        Ok(())
    }
}

fn prepare(
    grants: &Grants,
    req: &OutboundRequest,
) -> Result<(reqwest::Method, Url, HeaderMap), HttpError> {
    let method = reqwest::Method::from_bytes(req.method.as_bytes())
        .map_err(|_| HttpError::InvalidRequest(format!("method {:?}", req.method)))?;
    let url = check_url(grants, &req.url)?;
    let headers = build_headers(&req.headers)?;
    Ok((method, url, headers))
}

/// Sends `req` for the plugin whose grants are given, following allowed redirects.
///
/// A request made with a connection whose provider answers 401 is retried once
/// after the connection's token was refreshed (by this call or a concurrent one).
#[allow(clippy::too_many_arguments)]
pub async fn send(
    wire: Wire<'_>,
    store: &Store,
    oauth: &Arc<OAuth>,
    grants: &Grants,
    tenant: &str,
    req: OutboundRequest,
    budget: &mut RequestBudget,
) -> Result<OutboundResponse, HttpError> {
    let (method, url, headers) = prepare(grants, &req)?;
    let mut retried = false;
    loop {
        let (authorization, connection) =
            credential(store, oauth, grants, tenant, &url, &req).await?;
        let response = follow(
            wire,
            grants,
            method.clone(),
            url.clone(),
            &headers,
            authorization,
            &req.body,
            budget,
        )
        .await?;
        if response.status == 401
            && !retried
            && let Some(used) = connection.filter(|c| c.refreshable)
        {
            retried = true;
            match oauth
                .refresh(store, tenant, &used.name, used.version, Reason::Refused)
                .await
            {
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(plugin = %grants.plugin, %tenant, connection = %used.name, error = %e, "the provider refused the token and refreshing it failed");
                }
            }
        }
        return Ok(response);
    }
}

/// A response as it arrives: streamed from the network, or recorded.
enum Arrived {
    Network(reqwest::Response),
    Recorded(OutboundResponse),
}

impl Arrived {
    fn status(&self) -> reqwest::StatusCode {
        match self {
            Self::Network(r) => r.status(),
            Self::Recorded(r) => reqwest::StatusCode::from_u16(r.status)
                .unwrap_or(reqwest::StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    fn location(&self) -> Option<Result<&str, HttpError>> {
        let unreadable = || HttpError::Transport("redirect with an unreadable Location".into());
        match self {
            Self::Network(r) => r
                .headers()
                .get(reqwest::header::LOCATION)
                .map(|v| v.to_str().map_err(|_| unreadable())),
            Self::Recorded(r) => r
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("location"))
                .map(|(_, v)| Ok(v.as_str())),
        }
    }

    async fn read(self, cap: usize) -> Result<OutboundResponse, HttpError> {
        match self {
            Self::Network(r) => read_response(r, cap).await,
            Self::Recorded(r) if r.body.len() > cap => Err(HttpError::TooLarge),
            Self::Recorded(r) => Ok(r),
        }
    }
}

/// One request and the redirects it leads to.
#[allow(clippy::too_many_arguments)]
async fn follow(
    wire: Wire<'_>,
    grants: &Grants,
    mut method: reqwest::Method,
    mut url: Url,
    headers: &HeaderMap,
    mut authorization: Option<HeaderValue>,
    body: &[u8],
    budget: &mut RequestBudget,
) -> Result<OutboundResponse, HttpError> {
    let mut body = Some(body);
    let timeout = Duration::from_millis(grants.limits.http_timeout_ms);
    let cap = grants.limits.max_http_response_kib as usize * 1024;
    for _hop in 0..=MAX_REDIRECTS {
        budget.spend()?;
        let response = match wire {
            Wire::Network(client) => {
                let mut builder = client
                    .request(method.clone(), url.clone())
                    .headers(headers.clone())
                    .timeout(timeout);
                if let Some(auth) = &authorization {
                    builder = builder.header(reqwest::header::AUTHORIZATION, auth.clone());
                }
                if let Some(b) = body
                    && !b.is_empty()
                {
                    builder = builder.body(b.to_vec());
                }
                Arrived::Network(builder.send().await.map_err(transport_error)?)
            }
            Wire::Recorded(recording) => {
                Arrived::Recorded(recording.answer(method.as_str(), url.as_str())?)
            }
        };
        let status = response.status();
        if status.is_redirection()
            && let Some(location) = response.location()
        {
            let location = location?;
            let next = url
                .join(location)
                .map_err(|e| HttpError::Transport(format!("redirect to {location:?}: {e}")))?;
            let next = check_url(grants, next.as_str())
                .map_err(|e| HttpError::NotAllowed(format!("redirect refused: {e}")))?;
            if next.origin() != url.origin() {
                // Credentials are for the origin the plugin named, not wherever it redirects.
                authorization = None;
            }
            if status == reqwest::StatusCode::SEE_OTHER
                || (matches!(status.as_u16(), 301 | 302) && method == reqwest::Method::POST)
            {
                method = reqwest::Method::GET;
                body = None;
            }
            url = next;
            continue;
        }
        return response.read(cap).await;
    }
    Err(HttpError::Transport(format!(
        "more than {MAX_REDIRECTS} redirects"
    )))
}

/// The connection a request was authenticated with, and the token version used.
struct ConnectionUse {
    name: String,
    version: i64,
    refreshable: bool,
}

/// A token this close to its expiry is refreshed before it is used.
const EXPIRY_SKEW_MS: i64 = 60_000;

/// The connection's access token, refreshed first when it is about to expire.
async fn connection_token(
    store: &Store,
    oauth: &Arc<OAuth>,
    grants: &Grants,
    tenant: &str,
    name: &str,
) -> Result<Credential, HttpError> {
    let mut credential = read_credential(store, grants, tenant, name).await?;
    let now = now_ms();
    if credential.refreshable
        && credential.status == ACTIVE
        && credential
            .expires_at
            .is_some_and(|at| at <= now + EXPIRY_SKEW_MS)
    {
        match oauth
            .refresh(store, tenant, name, credential.version, Reason::Expiring)
            .await
        {
            Ok(_) => credential = read_credential(store, grants, tenant, name).await?,
            // A token that has not expired yet is still worth a try.
            Err(e) if credential.expires_at.is_some_and(|at| at > now) => {
                tracing::warn!(plugin = %grants.plugin, %tenant, connection = %name, error = %e, "refresh ahead of expiry failed; using the current token");
            }
            Err(e) => return Err(HttpError::CredentialUnavailable(e.to_string())),
        }
    }
    if credential.status == NEEDS_RECONSENT {
        return Err(HttpError::CredentialUnavailable(format!(
            "connection {name:?} needs re-consent: the provider refused its refresh token, and the person must connect again"
        )));
    }
    Ok(credential)
}

async fn read_credential(
    store: &Store,
    grants: &Grants,
    tenant: &str,
    name: &str,
) -> Result<Credential, HttpError> {
    store
        .connection_credential(tenant, name, grants.plugin.as_str())
        .await
        .map_err(|e| HttpError::CredentialUnavailable(e.to_string()))?
        .ok_or_else(|| {
            HttpError::CredentialUnavailable(format!(
                "no connection {name:?} for plugin {} in tenant {tenant:?}",
                grants.plugin
            ))
        })
}

async fn credential(
    store: &Store,
    oauth: &Arc<OAuth>,
    grants: &Grants,
    tenant: &str,
    url: &Url,
    req: &OutboundRequest,
) -> Result<(Option<HeaderValue>, Option<ConnectionUse>), HttpError> {
    let (what, value, used) = match (&req.connection, &req.bearer_secret) {
        (None, None) => return Ok((None, None)),
        (Some(_), Some(_)) => {
            return Err(HttpError::InvalidRequest(
                "name a connection or a bearer secret, not both".into(),
            ));
        }
        (Some(connection), None) => {
            refuse_clear_text(url, &format!("connection {connection:?}"))?;
            let credential = connection_token(store, oauth, grants, tenant, connection).await?;
            (
                format!("connection {connection:?}"),
                bearer(&credential.token)?,
                Some(ConnectionUse {
                    name: connection.clone(),
                    version: credential.version,
                    refreshable: credential.refreshable,
                }),
            )
        }
        (None, Some(name)) => {
            refuse_clear_text(url, &format!("secret {name:?}"))?;
            let value = super::secrets::granted_value(store, grants, tenant, name, SecretUse::Sent)
                .await
                .map_err(|e| HttpError::CredentialUnavailable(e.to_string()))?;
            let header = match grants.basic_secrets.get(name) {
                Some(user_key) => {
                    let user = grants.config.get(user_key).ok_or_else(|| {
                        HttpError::CredentialUnavailable(format!(
                            "secret {name:?} is sent with HTTP Basic, but the plugin's config has no {user_key:?} for the user name"
                        ))
                    })?;
                    basic(user, &value)?
                }
                None => bearer(&value)?,
            };
            (format!("secret {name:?}"), header, None)
        }
    };
    let mut header = HeaderValue::from_str(&value).map_err(|_| {
        HttpError::CredentialUnavailable(format!("{what} is not a valid credential"))
    })?;
    header.set_sensitive(true);
    Ok((Some(header), used))
}

fn refuse_clear_text(url: &Url, what: &str) -> Result<(), HttpError> {
    if url.scheme() != "https" && !is_loopback(url) {
        return Err(HttpError::NotAllowed(format!(
            "{what} would be sent in clear text; credentials go over https only"
        )));
    }
    Ok(())
}

fn bearer(token: &SecretValue) -> Result<String, HttpError> {
    let token = std::str::from_utf8(token.expose())
        .map_err(|_| HttpError::CredentialUnavailable("the token is not text".into()))?;
    Ok(format!("Bearer {token}"))
}

fn basic(user: &str, password: &SecretValue) -> Result<String, HttpError> {
    use base64::Engine as _;
    let mut pair = zeroize::Zeroizing::new(format!("{user}:").into_bytes());
    pair.extend_from_slice(password.expose());
    Ok(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(&*pair)
    ))
}

/// Loopback addresses (provider emulators in tests, sidecars) are the one
/// exception to "credentials over https only".
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

fn transport_error(e: reqwest::Error) -> HttpError {
    if e.is_timeout() {
        HttpError::Timeout
    } else {
        HttpError::Transport(e.to_string())
    }
}

async fn read_response(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<OutboundResponse, HttpError> {
    if response
        .content_length()
        .is_some_and(|len| len as usize > cap)
    {
        return Err(HttpError::TooLarge);
    }
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > cap {
            return Err(HttpError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(OutboundResponse {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(patterns: &[&str], url: &str) -> bool {
        let url = Url::parse(url).unwrap();
        patterns
            .iter()
            .any(|p| HostPattern::parse(p).unwrap().matches(&url))
    }

    #[test]
    fn exact_hosts_match_scheme_host_and_port() {
        let p = ["https://slack.com"];
        assert!(allowed(&p, "https://slack.com/api/users.profile.set"));
        assert!(allowed(&p, "https://SLACK.com:443/x"));
        assert!(!allowed(&p, "http://slack.com/x"));
        assert!(!allowed(&p, "https://slack.com:8443/x"));
        assert!(!allowed(&p, "https://slack.com.evil.example/x"));
        assert!(!allowed(&p, "https://evilslack.com/x"));
        assert!(!allowed(&p, "https://api.slack.com/x"));
    }

    #[test]
    fn wildcards_cover_subdomains_only() {
        let p = ["https://*.slack.com"];
        assert!(allowed(&p, "https://api.slack.com/x"));
        assert!(allowed(&p, "https://a.b.slack.com/x"));
        assert!(!allowed(&p, "https://slack.com/x"));
        assert!(!allowed(&p, "https://notslack.com/x"));
    }

    #[test]
    fn ip_literals_match_only_the_same_ip() {
        let p = ["http://localhost:8080"];
        assert!(allowed(&p, "http://localhost:8080/x"));
        assert!(!allowed(&p, "http://127.0.0.1:8080/x"));
        // Decimal and hex spellings of 127.0.0.1 normalise to the IP, which is not listed.
        assert!(!allowed(&p, "http://2130706433:8080/x"));
        assert!(!allowed(&p, "http://0x7f000001:8080/x"));
        let p = ["http://127.0.0.1:9000"];
        assert!(allowed(&p, "http://2130706433:9000/x"));
        assert!(!allowed(&p, "http://[::1]:9000/x"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for p in [
            "slack.com",
            "ftp://slack.com",
            "https://slack.com/api",
            "https://*.127.0.0.1",
            "https://u:p@slack.com",
        ] {
            assert!(HostPattern::parse(p).is_err(), "{p}");
        }
    }

    #[test]
    fn host_owned_headers_are_refused() {
        for name in ["Host", "authorization", "Content-Length"] {
            let err = build_headers(&[(name.to_string(), "x".to_string())]).unwrap_err();
            assert!(matches!(err, HttpError::NotAllowed(_)), "{name}");
        }
        assert!(build_headers(&[("content-type".into(), "application/json".into())]).is_ok());
    }
}
