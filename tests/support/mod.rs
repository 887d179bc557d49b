//! Shared test support: the real host binary on a free loopback port, with the
//! real built plugins, and small loopback servers.
#![allow(dead_code)]
pub mod db;
pub mod email;
pub mod google;
pub mod graph;
pub mod hold;
pub mod openapi;
pub mod push;
pub mod slack;
pub mod sse;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use presence_host::store::{MasterKey, Store};

pub mod twilio;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A bundled plugin's folder as `cargo xtask plugins` installs it.
pub fn bundled(name: &str) -> PathBuf {
    let dir = workspace_root().join("target/plugins").join(name);
    assert!(
        dir.join("plugin.wasm").is_file(),
        "{} is missing: run the tests with `cargo xtask test`, which builds the plugins first",
        dir.display()
    );
    dir
}

/// A test fixture component as `cargo xtask test-plugins` builds it.
pub fn fixture_wasm(name: &str) -> PathBuf {
    let path = workspace_root()
        .join("target/test-plugins")
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo xtask test`, which builds the fixtures first",
        path.display()
    );
    path
}

/// A plugins folder under construction.
pub struct PluginsDir {
    pub dir: tempfile::TempDir,
}

impl PluginsDir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copies a bundled plugin in.
    pub fn with_bundled(self, name: &str) -> Self {
        let dest = self.path().join(name);
        std::fs::create_dir_all(&dest).unwrap();
        for file in ["plugin.toml", "plugin.wasm"] {
            std::fs::copy(bundled(name).join(file), dest.join(file)).unwrap();
        }
        self
    }

    /// Installs a fixture component under `name` with the given manifest body
    /// (everything after the identity lines).
    pub fn with_fixture(self, name: &str, wasm: &str, extra_manifest: &str) -> Self {
        self.install(
            name,
            &std::fs::read(fixture_wasm(wasm)).unwrap(),
            &fixture_manifest(name, extra_manifest),
        );
        self
    }

    pub fn install(&self, name: &str, wasm: &[u8], manifest: &str) {
        let dest = self.path().join(name);
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::write(dest.join("plugin.wasm"), wasm).unwrap();
        std::fs::write(dest.join("plugin.toml"), manifest).unwrap();
    }
}

pub fn fixture_manifest(name: &str, extra: &str) -> String {
    format!(
        "schema_version = 1\nname = \"{name}\"\nversion = \"0.1.0\"\nwit = \"0.1.0\"\nworld = \"provider\"\n{extra}\n"
    )
}

/// The operator token tests' hosts get when their configuration sets none.
pub const OPERATOR_TOKEN: &str = "test-operator-token";

/// The real `presence-host` binary, serving on a free loopback port.
pub struct Host {
    child: Child,
    /// The admin token of its configuration: what `get_json` and `api` present.
    pub admin: String,
    pub addr: SocketAddr,
    pub data_dir: tempfile::TempDir,
    pub plugins: PluginsDir,
    pub client: reqwest::Client,
    log: PathBuf,
    /// Its database (dropped after the process is stopped).
    pub db: db::TestDb,
    /// The host's `/api/openapi.json`, read on first use: every answer of
    /// `api`, `get_json` and `post` is checked against it.
    spec: tokio::sync::OnceCell<Arc<openapi::SpecValidator>>,
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_presence-host"))
}

/// Runs a CLI command of the binary; returns (success, stdout, stderr).
/// Serves `app` on a free loopback port for the rest of the test; its address.
pub async fn serve_loopback(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

pub fn cli(args: &[&str], stdin: Option<&[u8]>) -> (bool, String, String) {
    cli_with_env(args, stdin, &[])
}

/// [`cli`] with extra environment variables.
pub fn cli_with_env(
    args: &[&str],
    stdin: Option<&[u8]>,
    env: &[(&str, &std::ffi::OsStr)],
) -> (bool, String, String) {
    let mut child = Command::new(binary())
        .args(args)
        .env("PRESENCE_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Host {
    /// Starts the host on `plugins` with an optional TOML configuration and secrets set beforehand.
    pub fn start(plugins: PluginsDir, config: &str, secrets: &[(&str, &[u8], bool)]) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let data = data_dir.path().to_str().unwrap().to_string();
        let parsed: toml::Table = toml::from_str(config).expect("test configuration is TOML");
        let (admin, config) = match parsed.get("admin_token").and_then(|t| t.as_str()) {
            Some(token) => (token.to_string(), config.to_string()),
            None => (
                OPERATOR_TOKEN.to_string(),
                format!("admin_token = \"{OPERATOR_TOKEN}\"\n{config}"),
            ),
        };
        let db = db::TestDb::new(data_dir.path());
        let config = match parsed.get("database_url") {
            Some(_) => config,
            None => format!("database_url = {:?}\n{config}", db.url),
        };
        let config_path = data_dir.path().join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let config_path = config_path.to_str().unwrap();
        for (name, value, base64) in secrets {
            let mut args = vec![
                "secret",
                "set",
                name,
                "--data-dir",
                &data,
                "--config",
                config_path,
            ];
            if *base64 {
                args.push("--base64");
            }
            let (ok, _, err) = cli(&args, Some(value));
            assert!(ok, "secret set {name} failed: {err}");
        }
        let log = data_dir.path().join("host.log");
        let (child, addr) = spawn(data_dir.path(), plugins.path(), &log);
        Self {
            child,
            admin,
            addr,
            data_dir,
            plugins,
            client: reqwest::Client::new(),
            log,
            db,
            spec: tokio::sync::OnceCell::new(),
        }
    }

    /// The host's OpenAPI description, as a validator (fetched once).
    pub async fn spec(&self) -> Arc<openapi::SpecValidator> {
        self.spec
            .get_or_init(|| async {
                let resp = self
                    .client
                    .get(self.url("/api/openapi.json"))
                    .send()
                    .await
                    .expect("GET /api/openapi.json");
                assert_eq!(resp.status(), 200, "GET /api/openapi.json");
                let spec: serde_json::Value = resp.json().await.expect("/api/openapi.json is JSON");
                Arc::new(openapi::SpecValidator::new(spec))
            })
            .await
            .clone()
    }

    /// Checks answers against `spec` instead of the host's own description
    /// (to show that a mismatch fails); before the first call only.
    pub fn use_spec(&mut self, spec: openapi::SpecValidator) {
        self.spec = tokio::sync::OnceCell::new_with(Some(Arc::new(spec)));
    }

    /// Reads an answer and checks it against the OpenAPI description
    /// (panicking with what differs); its status and body.
    async fn checked(&self, method: &str, path: &str, resp: reqwest::Response) -> (u16, Vec<u8>) {
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.bytes().await.unwrap().to_vec();
        let answer = openapi::Answer {
            method,
            path,
            status,
            content_type: content_type.as_deref(),
            body: &body,
        };
        if let Err(mismatch) = self.spec().await.check(&answer) {
            panic!("the answer does not match the OpenAPI description: {mismatch}");
        }
        (status, body)
    }

    /// Stops the host (SIGKILL) and starts it again on the same data and plugins.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, addr) = spawn(self.data_dir.path(), self.plugins.path(), &self.log);
        self.child = child;
        self.addr = addr;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A second host process on the same data directory, plugins and
    /// configuration (another replica, sharing the database).
    pub fn replica(&self) -> Replica {
        let log = self.data_dir.path().join("replica.log");
        let (child, addr) = spawn(self.data_dir.path(), self.plugins.path(), &log);
        Replica { child, addr }
    }

    /// Runs a CLI command on this host's data directory and configuration
    /// (so on its database); returns (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let data = self.data_dir.path();
        let config = data.join("config.toml");
        let mut all = args.to_vec();
        all.extend_from_slice(&[
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ]);
        cli(&all, None)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: impl Into<reqwest::Body>,
    ) -> (u16, String) {
        let mut req = self.client.post(self.url(path)).body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.unwrap();
        let (status, body) = self.checked("POST", path, resp).await;
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Posts a JSON body with nothing else: for plugins that verify nothing.
    pub async fn post_json(&self, path: &str, body: &str) -> (u16, String) {
        self.post(
            path,
            &[("content-type", "application/json".to_string())],
            body.to_string(),
        )
        .await
    }

    /// GET as the operator.
    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        self.api("GET", path, &self.admin.clone(), None).await
    }

    /// An API call with `key` as the bearer credential and an optional JSON body.
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        key: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .client
            .request(method.parse().unwrap(), self.url(path))
            .bearer_auth(key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let (status, body) = self.checked(method, path, resp).await;
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Creates tenant `name` and a key for it (as the operator); returns the key.
    pub async fn tenant_with_key(&self, name: &str) -> String {
        let admin = self.admin.clone();
        let (status, body) = self
            .api(
                "POST",
                "/api/tenants",
                &admin,
                Some(serde_json::json!({ "name": name })),
            )
            .await;
        assert!(status == 201 || status == 409, "{status} {body}");
        let (status, body) = self
            .api(
                "POST",
                &format!("/api/tenants/{name}/api-keys"),
                &admin,
                Some(serde_json::json!({ "label": "tests" })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["key"].as_str().unwrap().to_string()
    }

    /// The store opened beside the running host (SQLite in WAL mode allows it;
    /// PostgreSQL is made for it).
    pub async fn store(&self) -> Store {
        let key = MasterKey::load_or_create(None, self.data_dir.path()).unwrap();
        Store::open(&self.db.url, key).await.unwrap()
    }

    pub async fn digest(&self) -> String {
        let store = self.store().await;
        let d = store.digest().await.unwrap();
        store.close().await;
        d
    }
}

fn spawn(data_dir: &Path, plugins: &Path, log: &Path) -> (Child, SocketAddr) {
    let mut child = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .arg("--plugins-dir")
        .arg(plugins)
        .arg("--config")
        .arg(data_dir.join("config.toml"))
        .env("PRESENCE_LOG", "info,presence_host=debug")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("presence-host listening on http://") {
                let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => (child, addr),
        Err(_) => {
            let _ = child.kill();
            panic!(
                "host did not become ready; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

/// Another process serving the same data: see [`Host::replica`].
pub struct Replica {
    child: Child,
    pub addr: SocketAddr,
}

impl Replica {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows what the host said last.
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- the host's log, last lines ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Slack's request signature: `v0=` + hex HMAC-SHA256 of `v0:{ts}:{body}`.
pub fn slack_signature(secret: &[u8], timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

pub fn slack_headers(secret: &[u8], timestamp: i64, body: &str) -> Vec<(&'static str, String)> {
    vec![
        ("x-slack-request-timestamp", timestamp.to_string()),
        (
            "x-slack-signature",
            slack_signature(secret, timestamp, body),
        ),
        ("content-type", "application/json".to_string()),
    ]
}

/// Standard Webhooks headers for `body`, signed with the base64 key of a `whsec_` secret.
pub fn standard_webhook_headers(
    key_b64: &str,
    id: &str,
    timestamp: i64,
    body: &str,
) -> Vec<(&'static str, String)> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(key_b64)
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    vec![
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", format!("v1,{sig}")),
        ("content-type", "application/json".to_string()),
    ]
}

/// A loopback HTTP server that counts the requests it gets.
pub struct CountingServer {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
}

impl CountingServer {
    /// Answers `/redirect?to=URL` with a 302 to URL, anything else with 200 "ok".
    pub async fn start() -> Self {
        use axum::extract::Query;
        use axum::response::{IntoResponse, Redirect};
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().fallback(
            move |q: Query<std::collections::HashMap<String, String>>| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    match q.get("to") {
                        Some(to) => Redirect::to(to).into_response(),
                        None => "ok".into_response(),
                    }
                }
            },
        );
        let addr = serve_loopback(app).await;
        Self { addr, hits }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// The Standard Webhooks specification's example secret.
pub const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A calendar-webhook delivery of one event (id `evt-42`) for `user`.
pub fn calendar_delivery(
    kind: &str,
    user: &str,
    title: &str,
    location: &str,
    start_ms: i64,
    end_ms: i64,
) -> String {
    serde_json::json!({"type": kind, "user": user, "event": {
        "id": "evt-42", "title": title, "location": location, "start": start_ms, "end": end_ms,
        "time_zone": "Europe/London"}})
    .to_string()
}

/// Posts a signed calendar-webhook delivery; returns the status.
pub async fn post_calendar(host: &Host, delivery_id: &str, body: &str) -> u16 {
    let key = WHSEC.trim_start_matches("whsec_");
    host.post(
        "/api/webhooks/calendar-webhook",
        &standard_webhook_headers(key, delivery_id, now_s(), body),
        body.to_string(),
    )
    .await
    .0
}

/// Asserts that calendar-webhook delivery `id` is recorded exactly once in
/// `db`, and that its event `event` became exactly one presence signal.
pub async fn assert_recorded_once(db: &sqlx::AnyPool, id: &str, event: &str) {
    let deliveries: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM webhook_deliveries WHERE plugin = 'calendar-webhook' AND delivery_id = $1",
    )
    .bind(id)
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(deliveries, 1, "delivery {id} has {deliveries} rows");
    let signals: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM presence_signals WHERE signal_key = $1")
            .bind(format!("calendar-webhook:{event}"))
            .fetch_one(db)
            .await
            .unwrap();
    assert_eq!(
        signals, 1,
        "delivery {id}'s event {event} has {signals} signal rows"
    );
}

pub const ZOOM_SECRET: &[u8] = b"zoom-secret-token-for-tests";

pub fn zoom_headers(body: &str) -> Vec<(&'static str, String)> {
    let ts = now_s();
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(ZOOM_SECRET).unwrap();
    hmac::Mac::update(&mut mac, format!("v0:{ts}:{body}").as_bytes());
    let sig = hex::encode(hmac::Mac::finalize(mac).into_bytes());
    vec![
        ("x-zm-request-timestamp", ts.to_string()),
        ("x-zm-signature", format!("v0={sig}")),
        ("content-type", "application/json".to_string()),
    ]
}

/// Header pairs as a reqwest header map.
pub fn header_map(headers: &[(&str, String)]) -> reqwest::header::HeaderMap {
    headers
        .iter()
        .map(|(k, v)| {
            (
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                reqwest::header::HeaderValue::from_str(v).unwrap(),
            )
        })
        .collect()
}
