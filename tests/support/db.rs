//! The database a test's host runs on.
//!
//! SQLite in the host's data directory by default. With
//! `PRESENCE_TEST_POSTGRES` set to a `postgres://` URL (as `cargo xtask test`
//! does for its second pass), each host gets a schema of its own on that
//! server, created here and dropped with the host, so the same suite proves
//! both backends and tests running at once never see each other's rows.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::Executor;

/// The variable naming the PostgreSQL server of the suite's second pass.
pub const POSTGRES_ENV: &str = "PRESENCE_TEST_POSTGRES";

/// The server's URL when this run tests PostgreSQL.
pub fn postgres_server() -> Option<String> {
    std::env::var(POSTGRES_ENV).ok().filter(|u| !u.is_empty())
}

pub struct TestDb {
    /// What the host's `database_url` is set to.
    pub url: String,
    /// The PostgreSQL schema to drop at the end, and the server's URL.
    schema: Option<(String, String)>,
}

impl TestDb {
    /// A fresh database for a host whose data directory is `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        match postgres_server() {
            None => Self {
                url: format!("sqlite://{}", data_dir.join("presence.db").display()),
                schema: None,
            },
            Some(server) => {
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                let schema = format!(
                    "t_{}_{}_{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed),
                    hex::encode(rand::random::<[u8; 4]>())
                );
                run_blocking(&server, format!("CREATE SCHEMA {schema}"));
                let sep = if server.contains('?') { '&' } else { '?' };
                Self {
                    url: format!("{server}{sep}options[search_path]={schema}"),
                    schema: Some((schema, server)),
                }
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.schema.is_some()
    }

    /// A plain connection pool on the host's database, for reading rows the
    /// API does not show (numbered `$1` parameters work on both backends).
    pub async fn pool(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::any::AnyPoolOptions::new()
            .max_connections(2)
            .connect(&self.url)
            .await
            .expect("the test database opens")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((schema, server)) = self.schema.take() {
            run_blocking(&server, format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        }
    }
}

/// Runs one statement on `server` from a thread of its own, so it works both
/// inside and outside a test's runtime (and in `Drop`).
fn run_blocking(server: &str, statement: String) {
    let server = server.to_string();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                sqlx::any::install_default_drivers();
                let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&server)
                    .await
                    .unwrap_or_else(|e| panic!("{POSTGRES_ENV}={server}: {e}"));
                conn.execute(statement.as_str())
                    .await
                    .unwrap_or_else(|e| panic!("{statement}: {e}"));
            })
    })
    .join()
    .expect("the schema statement ran");
}
