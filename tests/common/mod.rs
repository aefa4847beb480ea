//! Test harness: runs each test body on SQLite (in a temp dir) and, when `POOLKEEPER_TEST_PG` names a
//! PostgreSQL server, again on PostgreSQL in two fresh databases that are dropped afterwards.
#![allow(dead_code)]

pub mod scim;

use std::sync::Arc;

use poolkeeper::app::App;
use poolkeeper::clock::{self, SharedClock};
use poolkeeper::config::{Config, Secret};
use poolkeeper::server::{self, RunningServer};
use sqlx::Connection;

pub const ADMIN_PASSWORD: &str = "test-admin-password";

#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite,
    Postgres { server_url: String },
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }
}

/// SQLite always; PostgreSQL too when `POOLKEEPER_TEST_PG` is set.
pub fn backends() -> Vec<Backend> {
    let mut out = vec![Backend::Sqlite];
    if let Ok(url) = std::env::var("POOLKEEPER_TEST_PG")
        && !url.is_empty()
    {
        out.push(Backend::Postgres { server_url: url });
    }
    out
}

/// Databases for one test: a temp data dir, and on PostgreSQL two databases dropped on drop.
pub struct TestDbs {
    pub backend: Backend,
    pub config: Config,
    pub dir: tempfile::TempDir,
    pg_databases: Vec<String>,
}

/// `postgres://user@host:port/db?x` with the database replaced.
pub fn with_database(server_url: &str, db: &str) -> String {
    let (base, query) = match server_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (server_url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let root = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{db}?{q}"),
        None => format!("{root}/{db}"),
    }
}

impl TestDbs {
    pub async fn new(backend: &Backend) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let mut pg_databases = Vec::new();
        if let Backend::Postgres { server_url } = backend {
            let tag = uuid::Uuid::new_v4().simple().to_string();
            let mut conn = sqlx::PgConnection::connect(server_url)
                .await
                .expect("connect to POOLKEEPER_TEST_PG");
            for name in ["pool", "users"] {
                let db = format!("pk_test_{}_{name}", &tag[..16]);
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                pg_databases.push(db);
            }
            conn.close().await.ok();
            config.pool_database_url =
                Some(Secret::new(with_database(server_url, &pg_databases[0])));
            config.users_database_url =
                Some(Secret::new(with_database(server_url, &pg_databases[1])));
        }
        Self {
            backend: backend.clone(),
            config,
            dir,
            pg_databases,
        }
    }
}

impl Drop for TestDbs {
    fn drop(&mut self) {
        let Backend::Postgres { server_url } = &self.backend else {
            return;
        };
        let url = server_url.clone();
        let dbs = std::mem::take(&mut self.pg_databases);
        // Drop runs inside the test's runtime; do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                    for db in dbs {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
                        )))
                        .execute(&mut conn)
                        .await;
                    }
                }
            });
        })
        .join();
    }
}

/// A poolkeeper server on 127.0.0.1:0 with an admin `admin` / [`ADMIN_PASSWORD`].
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub server: Option<RunningServer>,
    pub dbs: TestDbs,
}

impl TestApp {
    pub async fn spawn(backend: &Backend) -> Self {
        Self::spawn_with(backend, |_| {}, clock::system()).await
    }

    pub async fn spawn_with(
        backend: &Backend,
        tweak: impl FnOnce(&mut Config),
        clock: SharedClock,
    ) -> Self {
        let dbs = TestDbs::new(backend).await;
        let mut config = dbs.config.clone();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.admin_password = Some(Secret::new(ADMIN_PASSWORD));
        tweak(&mut config);
        let (app, _) = server::prepare(config.clone(), clock)
            .await
            .expect("prepare app");
        let server = server::start(app, config.listen)
            .await
            .expect("start server");
        let base = format!("http://{}", server.addr);
        Self {
            base,
            client: reqwest::Client::new(),
            server: Some(server),
            dbs,
        }
    }

    pub fn app(&self) -> &Arc<App> {
        &self.server.as_ref().expect("running").app
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A client with a cookie store, logged in as admin; returns it with the CSRF token.
    pub async fn login(&self) -> (reqwest::Client, String) {
        self.login_as(reqwest::redirect::Policy::default()).await
    }

    /// Like [`TestApp::login`], but the client does not follow redirects: for checking a form's
    /// 303 and its `Location`.
    pub async fn login_without_redirects(&self) -> (reqwest::Client, String) {
        self.login_as(reqwest::redirect::Policy::none()).await
    }

    async fn login_as(&self, redirects: reqwest::redirect::Policy) -> (reqwest::Client, String) {
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(redirects)
            .build()
            .unwrap();
        let res = client
            .post(self.url("/api/admin/login"))
            .json(&serde_json::json!({"username": "admin", "password": ADMIN_PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "login");
        let body: serde_json::Value = res.json().await.unwrap();
        (client, body["csrf_token"].as_str().unwrap().to_string())
    }

    /// A fresh API token of the given scope.
    pub async fn token(&self, name: &str, scope: poolkeeper::auth::Scope) -> String {
        poolkeeper::auth::create_api_token(&self.app().users, &self.app().clock, name, scope)
            .await
            .unwrap()
            .1
    }

    /// A JSON request with an API token; returns the status and the JSON body (`null` if none).
    pub async fn send_json(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Waits up to `within` for job `id` to end (succeeded, failed or cancelled); returns it.
    pub async fn job_ended(
        &self,
        id: &str,
        within: std::time::Duration,
    ) -> poolkeeper::store::jobs::Job {
        let users = &self.app().users;
        wait_until(&format!("job {id} to finish"), within, || async {
            let job = poolkeeper::store::jobs::get(users, id).await.unwrap();
            matches!(job.status.as_str(), "succeeded" | "failed" | "cancelled").then_some(job)
        })
        .await
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

/// What a [`wait_until`] check answers: `true` / `Some(value)` when the wait is over.
pub trait Ready {
    type Value;
    fn ready(self) -> Option<Self::Value>;
}

impl Ready for bool {
    type Value = ();
    fn ready(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Ready for Option<T> {
    type Value = T;
    fn ready(self) -> Option<T> {
        self
    }
}

/// Polls `check` (real time, every 20 ms) until it answers `true` or `Some(value)`, and returns
/// the value; panics naming `what` when `within` passes first. Every test that waits for something
/// to happen waits here.
pub async fn wait_until<R, F, Fut>(
    what: &str,
    within: std::time::Duration,
    mut check: F,
) -> R::Value
where
    R: Ready,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = R>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await.ready() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// An error response, with the envelope's shape checked.
#[derive(Debug)]
pub struct ApiErr {
    pub status: u16,
    pub code: String,
    pub message: String,
}

pub async fn api_error(res: reqwest::Response) -> ApiErr {
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "error response is JSON, got {ct:?} ({status})"
    );
    let body: serde_json::Value = res.json().await.unwrap();
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("error.code in {body}"))
        .to_string();
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("error.message in {body}"))
        .to_string();
    ApiErr {
        status,
        code,
        message,
    }
}

/// Runs `test` once per backend.
pub async fn each_backend<F, Fut>(test: F)
where
    F: Fn(Backend) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for backend in backends() {
        eprintln!("-- on {}", backend.name());
        test(backend).await;
    }
}

/// A form body (`application/x-www-form-urlencoded`).
pub fn url_encoded(fields: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Asserts that a sync report changed nothing.
pub fn assert_idle_sync(report: &serde_json::Value) {
    for key in [
        "teams_renamed",
        "teams_added",
        "children_created",
        "children_updated",
        "children_removed",
        "seats_changed",
        "invites_sent",
    ] {
        assert_eq!(report[key], 0, "{key} in {report}");
    }
}
