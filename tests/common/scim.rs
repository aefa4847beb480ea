//! A real SCIM 2.0 server for tests, `scim2-server` from PyPI, and a small proxy in front of it that
//! injects faults (revoked token, rate limiting, latency) and records what the client sent.
//!
//! The server is found at `$POOLKEEPER_SCIM_SERVER`, else `target/scim-venv/bin/scim2-server`
//! (where `.ci/run` installs it). Without it [`ScimServer::start`] says so and returns `None`,
//! except under CI, where a server that cannot start fails the test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

pub const TOKEN: &str = "scim-test-token";
pub const OWNER: &str = "owner@acme.test";

/// A running `scim2-server`, killed on drop.
pub struct ScimServer {
    _child: tokio::process::Child,
    /// `http://127.0.0.1:P/v2`
    pub base: String,
}

fn server_program() -> PathBuf {
    std::env::var_os("POOLKEEPER_SCIM_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/scim-venv/bin/scim2-server")
        })
}

impl ScimServer {
    /// `None` (the test is skipped) when the server is not installed, unless under CI.
    pub async fn start() -> Option<Self> {
        let program = server_program();
        if !program.exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must install scim2-server at {}",
                program.display()
            );
            eprintln!(
                "SKIPPED: no scim2-server at {} (run .ci/run or set POOLKEEPER_SCIM_SERVER)",
                program.display()
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(&program)
            .args(["--hostname", "127.0.0.1", "--port", &port.to_string()])
            .args(["--bearer-token", TOKEN])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let base = format!("http://127.0.0.1:{port}/v2");
        let client = reqwest::Client::new();
        for _ in 0..200 {
            let up = client
                .get(format!("{base}/ServiceProviderConfig"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                return Some(Self {
                    _child: child,
                    base,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("scim2-server did not come up on port {port}");
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let mut req = reqwest::Client::new()
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .header("content-type", "application/scim+json");
        if let Some(body) = body {
            req = req.body(body.to_string());
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub async fn user(&self, email: &str) -> String {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": email,
            "displayName": email.split('@').next().unwrap(),
            "emails": [{"value": email, "primary": true}],
        });
        self.call(Method::POST, "/Users", Some(body)).await["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn group(&self, name: &str, members: &[&str]) -> String {
        let members: Vec<Value> = members.iter().map(|id| json!({"value": id})).collect();
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": name,
            "members": members,
        });
        self.call(Method::POST, "/Groups", Some(body)).await["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Group display names, sorted.
    pub async fn group_names(&self) -> Vec<String> {
        let list = self.call(Method::GET, "/Groups?count=100", None).await;
        let mut names: Vec<String> = list["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["displayName"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }

    /// The userNames of a group's members, sorted.
    pub async fn member_names(&self, group: &str) -> Vec<String> {
        let g = self
            .call(Method::GET, &format!("/Groups/{group}"), None)
            .await;
        let mut names = Vec::new();
        for m in g["members"].as_array().cloned().unwrap_or_default() {
            let id = m["value"].as_str().unwrap();
            let u = self.call(Method::GET, &format!("/Users/{id}"), None).await;
            names.push(u["userName"].as_str().unwrap().to_string());
        }
        names.sort();
        names
    }

    /// The userNames of the members of both teams, sorted.
    pub async fn all_member_names(&self, teams: &(String, String)) -> Vec<String> {
        let mut names = self.member_names(&teams.0).await;
        names.extend(self.member_names(&teams.1).await);
        names.sort();
        names
    }

    /// The owner in one team with one other member, and a second, empty team.
    pub async fn seed_acme(&self) -> (String, String) {
        let owner = self.user(OWNER).await;
        let kid = self.user("kid1@acme.test").await;
        let one = self.group("Team One", &[&owner, &kid]).await;
        let two = self.group("Team Two", &[]).await;
        (one, two)
    }
}

/// Faults the proxy injects, and what it saw.
#[derive(Default)]
pub struct Faults {
    pub revoked: AtomicBool,
    /// Every Nth call is answered 429 (0 = never).
    pub rate_limit_every: AtomicU64,
    /// The next N calls are answered 429.
    pub rate_limit_next: AtomicU64,
    /// The `Retry-After` of a 429, in seconds.
    pub retry_after: AtomicU64,
    pub rate_limited: AtomicU64,
    pub latency_ms: AtomicU64,
    pub calls: AtomicU64,
    /// (method, path and query, carried If-Match)
    pub seen: Mutex<Vec<(String, String, bool)>>,
}

struct Proxy {
    upstream: String,
    faults: Arc<Faults>,
    client: reqwest::Client,
}

fn scim_error(status: StatusCode, detail: &str, retry_after: u64) -> Response {
    let body = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": status.as_u16().to_string(),
        "detail": detail,
    });
    Response::builder()
        .status(status)
        .header("content-type", "application/scim+json")
        .header("retry-after", retry_after.to_string())
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn forward(State(proxy): State<Arc<Proxy>>, req: Request) -> Response {
    let f = &proxy.faults;
    let n = f.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let headers = req.headers().clone();
    f.seen.lock().unwrap().push((
        method.to_string(),
        path.clone(),
        headers.contains_key("if-match"),
    ));
    if f.revoked.load(Ordering::SeqCst) {
        return scim_error(StatusCode::UNAUTHORIZED, "token revoked by the test", 0);
    }
    let every = f.rate_limit_every.load(Ordering::SeqCst);
    let next = f
        .rate_limit_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if next || (every > 0 && n % every == 0) {
        f.rate_limited.fetch_add(1, Ordering::SeqCst);
        let after = f.retry_after.load(Ordering::SeqCst);
        return scim_error(StatusCode::TOO_MANY_REQUESTS, "slow down", after);
    }
    let latency = f.latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let body: Bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap();
    let mut out = proxy
        .client
        .request(method, format!("{}{path}", proxy.upstream));
    for name in ["authorization", "content-type", "accept", "if-match"] {
        if let Some(v) = headers.get(name) {
            out = out.header(name, v);
        }
    }
    let res = out.body(body).send().await.unwrap();
    let mut response = Response::builder().status(res.status().as_u16());
    let keep: HeaderMap = res.headers().clone();
    for name in ["content-type", "etag", "location", "retry-after"] {
        if let Some(v) = keep.get(name) {
            response = response.header(name, v);
        }
    }
    response
        .body(Body::from(res.bytes().await.unwrap()))
        .unwrap()
}

/// A proxy in front of `server`; returns its `/v2` base URL.
pub async fn proxy(server: &ScimServer, faults: Arc<Faults>) -> String {
    let upstream = server.base.trim_end_matches("/v2").to_string();
    let state = Arc::new(Proxy {
        upstream,
        faults,
        client: reqwest::Client::new(),
    });
    let app = axum::Router::new().fallback(forward).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v2")
}
