//! Credential leasing over HTTP: acquire, renew and release with worker tokens; account admin,
//! status and usage. Time rules run on a manual clock; each test runs on SQLite and, with
//! `POOLKEEPER_TEST_PG`, PostgreSQL.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::{Backend, TestApp, each_backend};
use poolkeeper::auth::Scope;
use poolkeeper::clock::ManualClock;
use reqwest::Method;
use serde_json::{Value, json};

const T0: i64 = 1_800_000_000_000;
const SEC: i64 = 1000;

struct Env {
    t: TestApp,
    clock: Arc<ManualClock>,
    admin: String,
    worker: String,
}

impl Env {
    async fn new(backend: &Backend, accounts: usize) -> Self {
        let clock = ManualClock::new(T0);
        let t = TestApp::spawn_with(backend, |_| {}, clock.clone()).await;
        let admin = t.token("admin-token", Scope::Admin).await;
        let worker = t.token("worker-1", Scope::Worker).await;
        let env = Self {
            t,
            clock,
            admin,
            worker,
        };
        for i in 0..accounts {
            let (status, body) = env
                .admin(
                    Method::POST,
                    "/api/admin/accounts",
                    Some(json!({"login": format!("user{i}@example.org"),
                        "password": format!("secret-{i}"), "phone": "+100"})),
                )
                .await;
            assert_eq!(status, 201, "{body}");
        }
        env
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.t.send_json(&self.admin, method, path, body).await
    }

    /// Imports `data` (CSV or JSON lines) through the admin API: status and body.
    async fn import(&self, data: &str) -> (u16, Value) {
        let body = json!({ "data": data });
        self.admin(Method::POST, "/api/admin/accounts/import", Some(body))
            .await
    }

    /// Acquires as `token`: status, body and `Retry-After`.
    async fn acquire_as(&self, token: &str, body: Value) -> (u16, Value, Option<u64>) {
        let res = self
            .t
            .client
            .post(self.t.url("/api/pool/leases"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let retry = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        (status, res.json().await.unwrap_or(Value::Null), retry)
    }

    async fn acquire(&self) -> (u16, Value, Option<u64>) {
        self.acquire_as(&self.worker, json!({"worker": "w1"})).await
    }

    async fn release_as(&self, token: &str, lease: &str, result: &str) -> (u16, Value) {
        self.t
            .send_json(
                token,
                Method::POST,
                &format!("/api/pool/leases/{lease}/release"),
                Some(json!({"result": result})),
            )
            .await
    }

    async fn release(&self, lease: &str, result: &str) -> (u16, Value) {
        self.release_as(&self.worker, lease, result).await
    }

    async fn account(&self, id: i64) -> Value {
        let (status, body) = self
            .admin(Method::GET, &format!("/api/admin/accounts/{id}"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    fn advance_secs(&self, secs: i64) {
        self.clock.advance_ms(secs * SEC);
    }
}

fn lease_id(body: &Value) -> String {
    body["lease_id"].as_str().expect("lease_id").to_string()
}

#[tokio::test]
async fn expired_cooldown_makes_the_account_leasable_again() {
    each_backend(|backend| async move {
        let env = Env::new(&backend, 1).await;
        let (status, body, _) = env.acquire().await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["account"]["login"], "user0@example.org");
        assert_eq!(body["account"]["password"], "secret-0");
        assert_eq!(body["expires_at"], T0 + 300 * SEC, "default ttl 300 s");
        let lease = lease_id(&body);
        assert_eq!(env.release(&lease, "success").await.0, 200);

        let (status, body, retry) = env.acquire().await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "no_account_available");
        assert_eq!(retry, Some(600), "cooldown 600 s");

        env.advance_secs(599);
        assert_eq!(env.acquire().await.2, Some(1));
        env.advance_secs(1);
        let (status, body, _) = env.acquire().await;
        assert_eq!(status, 201, "cooldown over, no sweeper: {body}");
        env.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn third_login_failure_quarantines_for_30_minutes() {
    each_backend(|backend| async move {
        let env = Env::new(&backend, 1).await;
        let mut id = 0;
        for n in 1..=3 {
            let (status, body, _) = env.acquire().await;
            assert_eq!(status, 201, "attempt {n}: {body}");
            id = body["account"]["id"].as_i64().unwrap();
            assert_eq!(env.release(&lease_id(&body), "login_fail").await.0, 200);
            let a = env.account(id).await;
            assert_eq!(a["consecutive_failures"], n);
            if n < 3 {
                assert_eq!(a["status"], "cooldown");
                env.advance_secs(600);
            }
        }
        let a = env.account(id).await;
        assert_eq!(a["status"], "quarantined", "{a}");
        assert_eq!(a["quarantine_until"], env.clock_now() + 1800 * SEC);
        let (status, _, retry) = env.acquire().await;
        assert_eq!((status, retry), (503, Some(1800)));

        env.advance_secs(1800);
        let a = env.account(id).await;
        assert_eq!(a["status"], "available", "quarantine over, no sweeper: {a}");
        let (status, body, _) = env.acquire().await;
        assert_eq!(status, 201, "{body}");
        // The quarantine ended: failures start again from 0.
        assert_eq!(env.release(&lease_id(&body), "error").await.0, 200);
        let a = env.account(id).await;
        assert_eq!(a["consecutive_failures"], 1, "{a}");
        assert_eq!(a["status"], "cooldown");
        env.t.stop().await;
    })
    .await;
}

impl Env {
    fn clock_now(&self) -> i64 {
        use poolkeeper::clock::Clock;
        self.clock.now_ms()
    }
}

#[tokio::test]
async fn banned_quarantines_for_an_hour() {
    each_backend(|backend| async move {
        let env = Env::new(&backend, 1).await;
        let (_, body, _) = env.acquire().await;
        let id = body["account"]["id"].as_i64().unwrap();
        assert_eq!(env.release(&lease_id(&body), "banned").await.0, 200);
        let a = env.account(id).await;
        assert_eq!(a["status"], "quarantined");
        assert_eq!(a["quarantine_until"], T0 + 3600 * SEC);
        let (status, _, retry) = env.acquire().await;
        assert_eq!((status, retry), (503, Some(3600)));
        env.advance_secs(3599);
        assert_eq!(env.acquire().await.0, 503);
        env.advance_secs(1);
        assert_eq!(env.acquire().await.0, 201);
        env.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn success_resets_failures() {
    each_backend(|backend| async move {
        let env = Env::new(&backend, 1).await;
        let mut id = 0;
        for result in ["login_fail", "error", "success"] {
            let (status, body, _) = env.acquire().await;
            assert_eq!(status, 201, "{body}");
            id = body["account"]["id"].as_i64().unwrap();
            assert_eq!(env.release(&lease_id(&body), result).await.0, 200);
            env.advance_secs(600);
        }
        let a = env.account(id).await;
        assert_eq!(a["consecutive_failures"], 0, "{a}");
        assert_eq!(a["total_uses"], 3);
        assert_eq!(a["total_successes"], 1);
        assert_eq!(a["status"], "available");
        let usage = a["recent_usage"].as_array().unwrap();
        let results: Vec<&str> = usage
            .iter()
            .map(|u| u["result"].as_str().unwrap())
            .collect();
        assert_eq!(results, ["success", "error", "login_fail"]);
        env.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn expired_lease_returns_the_account_and_late_release_gets_409() {
    each_backend(|backend| async move {
        let env = Env::new(&backend, 1).await;
        let (status, body, _) = env
            .acquire_as(
                &env.worker,
                json!({"worker": "w1", "ttl_seconds": 60, "mission": "de"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["expires_at"], T0 + 60 * SEC);
        let lease = lease_id(&body);
        let id = body["account"]["id"].as_i64().unwrap();

        env.advance_secs(60);
        let a = env.account(id).await;
        assert_eq!(
            a["status"], "cooldown",
            "expired: resting one cooldown from expiry: {a}"
        );
        let (status, _, retry) = env.acquire().await;
        assert_eq!((status, retry), (503, Some(600)));

        env.advance_secs(600);
        let (status, body, _) = env.acquire().await;
        assert_eq!(status, 201, "back after the cooldown: {body}");
        let a = env.account(id).await;
        assert_eq!(
            a["recent_usage"][0]["result"], "expired",
            "the acquire closed the expired lease on its way: {a}"
        );

        let (status, body) = env.release(&lease, "success").await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"]["code"], "lease_expired");

        let a = env.account(id).await;
        let usage = a["recent_usage"].as_array().unwrap();
        assert_eq!(usage.len(), 1, "{a}");
        assert_eq!(usage[0]["result"], "expired");
        assert_eq!(usage[0]["lease_id"], lease.as_str());
        assert_eq!(usage[0]["mission"], "de");
        assert_eq!(usage[0]["duration_ms"], 60 * SEC);
        env.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn only_the_holder_may_renew_or_release_and_only_once() {
    each_backend(|backend| async move {
        let env = Env::new(&backend, 1).await;
        let other = env.t.token("worker-2", Scope::Worker).await;
        let (_, body, _) = env.acquire().await;
        let lease = lease_id(&body);

        let (status, body) = env.release_as(&other, &lease, "success").await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["code"], "not_lease_holder");
        let renew = format!("/api/pool/leases/{lease}/renew");
        let (status, _) = env
            .t
            .send_json(&other, Method::POST, &renew, Some(json!({})))
            .await;
        assert_eq!(status, 403);

        // Renewal is capped by leases.max_ttl_seconds.
        env.advance_secs(100);
        let (status, body) = env
            .t
            .send_json(
                &env.worker,
                Method::POST,
                &renew,
                Some(json!({"ttl_seconds": 99_999})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["expires_at"], T0 + 100 * SEC + 3600 * SEC);
        assert_eq!(body["renewals"], 1);

        let (status, body) = env.release(&lease, "bogus").await;
        assert_eq!(status, 400);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("result")
        );
        assert_eq!(env.release(&lease, "no_slot").await.0, 200);
        let (status, body) = env.release(&lease, "no_slot").await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"]["code"], "lease_released");

        let (status, _) = env.release(&uuid_like(), "success").await;
        assert_eq!(status, 404);
        // An admin token is not a worker token, and no token is no entry.
        let (status, _, _) = env.acquire_as(&env.admin, json!({"worker": "w"})).await;
        assert_eq!(status, 403);
        let (status, _, _) = env.acquire_as("nope", json!({"worker": "w"})).await;
        assert_eq!(status, 401);
        let (status, body, _) = env.acquire_as(&env.worker, json!({})).await;
        assert_eq!(status, 400);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("worker")
        );
        let (status, body, _) = env
            .acquire_as(&env.worker, json!({"worker": "w", "ttl_seconds": 0}))
            .await;
        assert_eq!(status, 400);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("ttl_seconds")
        );
        env.t.stop().await;
    })
    .await;
}

fn uuid_like() -> String {
    "00000000-0000-4000-8000-000000000000".to_string()
}

#[tokio::test]
async fn concurrent_acquires_never_share_an_account() {
    each_backend(|backend| async move {
        let env = Arc::new(Env::new(&backend, 10).await);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..64 {
            let env = env.clone();
            tasks.spawn(async move {
                env.acquire_as(&env.worker, json!({"worker": format!("w{i}")}))
                    .await
            });
        }
        let mut granted = Vec::new();
        let mut refused = 0;
        while let Some(res) = tasks.join_next().await {
            let (status, body, retry) = res.unwrap();
            match status {
                201 => granted.push(body["account"]["id"].as_i64().unwrap()),
                503 => {
                    assert_eq!(body["error"]["code"], "no_account_available");
                    assert_eq!(retry, Some(300 + 600), "first lease expiry + cooldown");
                    refused += 1;
                }
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!(granted.len(), 10);
        assert_eq!(refused, 54);
        let distinct: HashSet<i64> = granted.iter().copied().collect();
        assert_eq!(distinct.len(), 10, "an account was lent twice: {granted:?}");
        let (_, leases) = env
            .admin(Method::GET, "/api/admin/leases?active=true", None)
            .await;
        assert_eq!(leases["total"], 10, "{leases}");
        match Arc::try_unwrap(env) {
            Ok(env) => env.t.stop().await,
            Err(_) => panic!("env still shared"),
        }
    })
    .await;
}

/// Releases arriving together run as one batch (`store::lease_desk::Desk`); each still gets its own
/// answer, and refused or unknown ones in the batch change nothing of the others.
#[tokio::test]
async fn concurrent_releases_each_get_their_own_answer() {
    each_backend(|backend| async move {
        let env = Arc::new(Env::new(&backend, 20).await);
        let other = env.t.token("worker-2", Scope::Worker).await;
        let mut leases = Vec::new();
        for _ in 0..20 {
            let (status, body, _) = env.acquire().await;
            assert_eq!(status, 201, "{body}");
            leases.push((lease_id(&body), body["account"]["id"].as_i64().unwrap()));
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (lease, account)) in leases.iter().cloned().enumerate() {
            let result = if i % 2 == 0 { "success" } else { "login_fail" };
            let (env2, lease2) = (env.clone(), lease.clone());
            tasks.spawn(async move {
                let (status, body) = env2.release(&lease2, result).await;
                ("holder", status, body, Some((account, result)))
            });
            if i < 10 {
                let (env2, other) = (env.clone(), other.clone());
                tasks.spawn(async move {
                    let (status, body) = env2.release_as(&other, &lease, "success").await;
                    ("other", status, body, None)
                });
                let env2 = env.clone();
                tasks.spawn(async move {
                    let unknown = format!("00000000-0000-4000-8000-{i:012}");
                    let (status, body) = env2.release(&unknown, "success").await;
                    ("unknown", status, body, None)
                });
            }
        }
        let mut released = Vec::new();
        while let Some(res) = tasks.join_next().await {
            let (who, status, body, account) = res.unwrap();
            match who {
                "holder" => {
                    assert_eq!(status, 200, "{body}");
                    released.push(account.unwrap());
                }
                "other" => assert_eq!(status, 403, "{body}"),
                _ => assert_eq!(status, 404, "{body}"),
            }
        }
        assert_eq!(released.len(), 20);
        for (account, result) in released {
            let body = env.account(account).await;
            let failures = i64::from(result == "login_fail");
            assert_eq!(body["consecutive_failures"], failures, "{body}");
            assert_eq!(body["total_successes"], 1 - failures, "{body}");
        }
        let (_, open) = env
            .admin(Method::GET, "/api/admin/leases?active=true", None)
            .await;
        assert_eq!(open["total"], 0, "{open}");
        match Arc::try_unwrap(env) {
            Ok(env) => env.t.stop().await,
            Err(_) => panic!("env still shared"),
        }
    })
    .await;
}

#[tokio::test]
async fn status_parts_add_up_to_total() {
    each_backend(|backend| async move {
        let env = Env::new(&backend, 6).await;
        // in use, cooldown, quarantined, inactive, and two available.
        let (_, first, _) = env.acquire().await;
        let (_, second, _) = env.acquire().await;
        assert_eq!(env.release(&lease_id(&second), "success").await.0, 200);
        let (_, third, _) = env.acquire().await;
        assert_eq!(env.release(&lease_id(&third), "banned").await.0, 200);
        let inactive = first["account"]["id"].as_i64().unwrap() + 100;
        let (_, list) = env
            .admin(Method::GET, "/api/admin/accounts?status=available", None)
            .await;
        let last = list["items"].as_array().unwrap().last().unwrap()["id"]
            .as_i64()
            .unwrap();
        assert_ne!(last, inactive);
        let (status, _) = env
            .admin(
                Method::PATCH,
                &format!("/api/admin/accounts/{last}"),
                Some(json!({"is_active": false})),
            )
            .await;
        assert_eq!(status, 200);
        let (status, s) = env
            .admin(Method::GET, "/api/admin/accounts/status", None)
            .await;
        assert_eq!(status, 200, "{s}");
        assert_eq!(
            s,
            json!({"total": 6, "active": 5, "available": 2, "in_use": 1, "cooldown": 1,
                "quarantined": 1, "inactive": 1})
        );
        for st in ["available", "in_use", "cooldown", "quarantined", "inactive"] {
            let (_, list) = env
                .admin(
                    Method::GET,
                    &format!("/api/admin/accounts?status={st}"),
                    None,
                )
                .await;
            assert_eq!(list["total"], s[st], "{st}: {list}");
        }
        let (status, body) = env
            .admin(Method::GET, "/api/admin/accounts?status=resting", None)
            .await;
        assert_eq!(status, 400);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("status")
        );
        let (_, other_pool) = env
            .admin(
                Method::GET,
                "/api/admin/accounts/status?pool=elsewhere",
                None,
            )
            .await;
        assert_eq!(other_pool["total"], 0);
        env.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn passwords_never_in_lists_or_debug() {
    each_backend(|backend| async move {
        let env = Env::new(&backend, 2).await;
        let (_, grant, _) = env.acquire().await;
        let lease = lease_id(&grant);
        for path in [
            "/api/admin/accounts".to_string(),
            "/api/admin/accounts/1".to_string(),
            "/api/admin/leases".to_string(),
            "/api/admin/accounts/usage".to_string(),
        ] {
            let (status, body) = env.admin(Method::GET, &path, None).await;
            assert_eq!(status, 200, "{path}: {body}");
            let text = body.to_string();
            assert!(!text.contains("secret-"), "{path} shows a password: {text}");
            assert!(!text.contains("password"), "{path}: {text}");
        }
        assert_eq!(env.release(&lease, "success").await.0, 200);
        // At rest the password is sealed.
        let sealed = poolkeeper::store::credential_accounts::sealed_password(&env.t.app().pool, 1)
            .await
            .unwrap();
        assert!(sealed.starts_with("v1:") && !sealed.contains("secret-0"));
        // Debug of what carries a password redacts it.
        let req: poolkeeper::service::credential_accounts::CreateAccountRequest =
            serde_json::from_value(json!({"login": "a@b.c", "password": "hunter2"})).unwrap();
        assert!(!format!("{req:?}").contains("hunter2"));
        let grant: poolkeeper::service::credential_accounts::ImportRequest =
            serde_json::from_value(json!({"data": "a@b.c,hunter2"})).unwrap();
        assert!(!format!("{grant:?}").contains("hunter2"));
        env.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn import_reports_each_row_and_writes_all_or_nothing() {
    each_backend(|backend| async move {
        let env = Env::new(&backend, 1).await;
        let csv = "login,password,phone,region\nnew1@example.org,p1,+1,de\nuser0@example.org,p2,,fr\nnew1@example.org,p3,,\n,p4,,\n";
        let (status, body) = env.import(csv).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["imported"], 0);
        assert_eq!((body["valid"].clone(), body["invalid"].clone()), (json!(1), json!(3)));
        let rows = body["rows"].as_array().unwrap();
        assert!(rows[1]["errors"][0].as_str().unwrap().contains("already exists"));
        assert!(rows[2]["errors"][0].as_str().unwrap().contains("twice"));
        assert!(rows[3]["errors"][0].as_str().unwrap().contains("login"));
        let (_, s) = env.admin(Method::GET, "/api/admin/accounts/status", None).await;
        assert_eq!(s["total"], 1, "nothing half-written");

        let jsonl = "{\"login\": \"j1@example.org\", \"password\": \"x\", \"metadata\": {\"k\": 1}}\n{\"login\": \"j2@example.org\", \"password\": \"y\", \"pool\": \"eu\"}\n";
        let (status, body) = env.import(jsonl).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["imported"], 2);
        let (_, eu) = env.admin(Method::GET, "/api/admin/accounts?pool=eu", None).await;
        assert_eq!(eu["total"], 1);
        let (_, found) = env.admin(Method::GET, "/api/admin/accounts?search=J1@", None).await;
        assert_eq!(found["items"][0]["metadata"], json!({"k": 1}), "{found}");
        let (status, _) = env
            .admin(Method::POST, "/api/admin/accounts", Some(json!({"login": "j1@example.org", "password": "z"})))
            .await;
        assert_eq!(status, 409);
        env.t.stop().await;
    })
    .await;
}

/// On PostgreSQL an import of 100 accounts or more gathers the table's planner statistics, so an
/// acquire walks the pick index instead of sorting the pool (autovacuum may be off or not yet
/// round).
#[tokio::test]
async fn a_large_import_gathers_planner_statistics_on_postgres() {
    each_backend(|backend| async move {
        let env = Env::new(&backend, 0).await;
        let csv: String = std::iter::once("login,password".to_string())
            .chain((0..150).map(|i| format!("bulk{i}@example.org,pw{i}")))
            .collect::<Vec<_>>()
            .join("\n");
        let (status, body) = env.import(&csv).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["imported"], 150, "{body}");
        if let Backend::Postgres { .. } = backend {
            let pg = sqlx::PgPool::connect(&env.t.dbs.config.pool_database_url())
                .await
                .unwrap();
            let tuples: f32 = sqlx::query_scalar(
                "SELECT reltuples FROM pg_class WHERE relname = 'credential_accounts'",
            )
            .fetch_one(&pg)
            .await
            .unwrap();
            pg.close().await;
            assert_eq!(tuples, 150.0, "credential_accounts was not analyzed");
        }
        env.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn delete_refuses_a_leased_account_unless_forced_and_reset_clears_rest() {
    each_backend(|backend| async move {
        let env = Env::new(&backend, 2).await;
        let (_, grant, _) = env.acquire().await;
        let id = grant["account"]["id"].as_i64().unwrap();
        let path = format!("/api/admin/accounts/{id}");
        let (status, body) = env.admin(Method::DELETE, &path, None).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(
            env.admin(Method::DELETE, &format!("{path}?force=true"), None)
                .await
                .0,
            204
        );
        assert_eq!(env.admin(Method::GET, &path, None).await.0, 404);

        let (_, grant, _) = env.acquire().await;
        let id = grant["account"]["id"].as_i64().unwrap();
        assert_eq!(env.release(&lease_id(&grant), "banned").await.0, 200);
        let (status, a) = env
            .admin(
                Method::POST,
                &format!("/api/admin/accounts/{id}/reset"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{a}");
        assert_eq!(a["status"], "available");
        assert_eq!(env.acquire().await.0, 201);

        let (status, report) = env
            .admin(
                Method::GET,
                "/api/admin/accounts/usage?group_by=account",
                None,
            )
            .await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["groups"][0]["failures"], 1, "{report}");
        let (status, _) = env
            .admin(Method::GET, "/api/admin/accounts/usage?group_by=week", None)
            .await;
        assert_eq!(status, 400);
        env.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn accounts_page_lists_accounts_without_passwords_and_resets_them() {
    each_backend(|backend| async move {
        let env = Env::new(&backend, 2).await;
        // user0 is banned (quarantined for an hour), user1 is leased.
        let (status, body, _) = env.acquire().await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["account"]["login"], "user0@example.org");
        let banned_id = body["account"]["id"].as_i64().unwrap();
        assert_eq!(env.release(&lease_id(&body), "banned").await.0, 200);
        let (status, body, _) = env
            .acquire_as(
                &env.worker,
                json!({"worker": "page-worker", "mission": "m-page"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["account"]["login"], "user1@example.org");

        let (c, csrf) = env.t.login().await;
        let res = c.get(env.t.url("/accounts")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let html = res.text().await.unwrap();
        for want in [
            "user0@example.org",
            "user1@example.org",
            "id=\"stat-total\">2<",
            "id=\"stat-quarantined\">1<",
            "id=\"stat-in-use\">1<",
            ">quarantined<",
            "in 1 h",
            "page-worker",
            "m-page",
            &format!("id=\"reset-{banned_id}\""),
        ] {
            assert!(html.contains(want), "{want} in the page");
        }
        assert!(
            !html.contains("secret-0") && !html.contains("secret-1"),
            "no password in the page"
        );
        // Today's failure is a bar in the chart.
        let today: String = poolkeeper::clock::rfc3339(T0).chars().take(10).collect();
        assert!(
            html.contains(&format!("{today}: 0 success(es), 1 failure(s)")),
            "usage chart"
        );

        // Filters: by status and by search, with the pager keeping them.
        let html = c
            .get(env.t.url("/accounts?status=in_use&search=user"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(html.contains("user1@example.org") && !html.contains("user0@example.org"));
        let res = c
            .get(env.t.url("/accounts?status=resting"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        assert!(res.text().await.unwrap().contains("status must be"));

        // Reset: refused without the CSRF token, then done, post/redirect/get.
        let form = |path: String, fields: &[(&str, &str)]| {
            c.post(env.t.url(&path))
                .header("origin", &env.t.base)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(common::url_encoded(fields))
        };
        let res = form(format!("/accounts/{banned_id}/reset"), &[])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
        assert_eq!(env.account(banned_id).await["status"], "quarantined");
        let res = form(format!("/accounts/{banned_id}/reset"), &[("csrf", &csrf)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.url().path(), "/accounts");
        let html = res.text().await.unwrap();
        assert!(
            html.contains("Account user0@example.org was reset"),
            "notice"
        );
        assert!(html.contains("id=\"stat-available\">1<"));
        let account = env.account(banned_id).await;
        assert_eq!(account["status"], "available");
        assert_eq!(account["quarantine_until"], Value::Null);
        let res = form("/accounts/999999/reset".into(), &[("csrf", &csrf)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404);

        // Import: each row's outcome, all or nothing, and never the passwords back.
        let data = "login,password,phone\nnew1@example.org,pw-new-1,\nuser0@example.org,pw-dup,\n";
        let res = form(
            "/accounts/import".into(),
            &[("csrf", &csrf), ("data", data)],
        )
        .send()
        .await
        .unwrap();
        let html = res.text().await.unwrap();
        assert!(
            html.contains("2 row(s): 1 valid, 1 refused, 0 imported"),
            "summary"
        );
        assert!(html.contains("duplicate: login user0@example.org already exists"));
        assert!(!html.contains("pw-new-1") && !html.contains("pw-dup"));
        let data = "login,password,phone\nnew1@example.org,pw-new-1,\n";
        let res = form(
            "/accounts/import".into(),
            &[("csrf", &csrf), ("data", data), ("pool", "web")],
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 200);
        let html = res.text().await.unwrap();
        assert!(html.contains("1 row(s): 1 valid, 0 refused, 1 imported"));
        assert!(html.contains("new1@example.org") && !html.contains("pw-new-1"));
        assert!(
            html.contains("<option value=\"web\">web</option>"),
            "pool filter"
        );
        // Refused as a whole: the flash says why, on the page the post redirected to.
        let res = form("/accounts/import".into(), &[("csrf", &csrf), ("data", "")])
            .send()
            .await
            .unwrap();
        assert_eq!(
            (res.status().as_u16(), res.url().path()),
            (200, "/accounts")
        );
        let html = res.text().await.unwrap();
        assert!(
            html.contains("Not done:") && html.contains("no rows"),
            "{html}"
        );
    })
    .await;
}

/// Every log line of this test binary, captured at TRACE from the first call on.
fn captured_logs() -> Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Capture(writer.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        buf
    })
    .clone()
}

struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn account_passwords_never_reach_the_logs() {
    let logs = captured_logs();
    each_backend(|backend| async move {
        let env = Env::new(&backend, 0).await;
        let created = "pw-Created-7Qz!x";
        let imported = "pw-Imported-9Kr#y";
        let (status, body) = env
            .admin(
                Method::POST,
                "/api/admin/accounts",
                Some(json!({"login": "created@example.org", "password": created})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let csv = format!("login,password,phone\nimported@example.org,{imported},+1\n");
        let (status, body) = env.import(&csv).await;
        assert_eq!(
            (status, body["imported"].clone()),
            (200, json!(1)),
            "{body}"
        );
        for _ in 0..2 {
            let (status, grant, _) = env.acquire().await;
            assert_eq!(status, 201, "{grant}");
            let password = grant["account"]["password"].as_str().unwrap();
            assert!(password == created || password == imported, "{grant}");
            assert_eq!(env.release(&lease_id(&grant), "success").await.0, 200);
        }
        env.t.stop().await;
    })
    .await;
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    for line in [
        "credential account created",
        "credential accounts imported",
        "lease acquired",
        "lease released",
    ] {
        assert!(text.contains(line), "no {line:?} in the captured logs");
    }
    for secret in ["pw-Created", "pw-Imported", "7Qz!x", "9Kr#y"] {
        assert!(!text.contains(secret), "{secret} reached the logs");
    }
}

/// The value of an unlabelled series in Prometheus text, 0 when absent.
fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn lease_durations_are_observed_when_leases_end() {
    each_backend(|backend| async move {
        let env = Env::new(&backend, 3).await;
        let metrics = || async {
            env.t
                .client
                .get(env.t.url("/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        };
        let before = metrics().await;
        let count = "pool_lease_duration_seconds_count";
        let sum = "pool_lease_duration_seconds_sum";
        let bucket_60 = "pool_lease_duration_seconds_bucket{le=\"60\"}";
        let (_, released, _) = env.acquire().await;
        let (_, expiring, _) = env
            .acquire_as(&env.worker, json!({"worker": "w1", "ttl_seconds": 120}))
            .await;
        env.advance_secs(45);
        assert_eq!(env.release(&lease_id(&released), "success").await.0, 200);
        env.advance_secs(75);
        // Housekeeping closes the unreleased one at its expiry, 120 s after it began.
        let policy = env.t.app().config.leases.policy();
        let n = poolkeeper::service::leasing::expire_overdue(
            &env.t.app().pool,
            env.clock_now(),
            &policy,
        )
        .await
        .unwrap();
        assert_eq!(n, 1, "{expiring}");
        let after = metrics().await;
        // Tests in this binary run at once: the figures grow by at least these.
        assert!(
            metric_value(&after, count) >= metric_value(&before, count) + 2.0,
            "{after}"
        );
        assert!(
            metric_value(&after, sum) >= metric_value(&before, sum) + 165.0,
            "{after}"
        );
        assert!(
            metric_value(&after, bucket_60) >= metric_value(&before, bucket_60) + 1.0,
            "the 45 s lease: {after}"
        );

        // A lease nobody closed before its holder's late release is counted by that release.
        let (_, late, _) = env
            .acquire_as(&env.worker, json!({"worker": "w1", "ttl_seconds": 3000}))
            .await;
        let late = lease_id(&late);
        env.advance_secs(3001);
        let (_, all) = env.admin(Method::GET, "/api/admin/leases", None).await;
        let open = all["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["id"] == late.as_str())
            .expect("the late lease is listed");
        assert!(open["released_at"].is_null(), "still open: {open}");
        let long = |text: &str| {
            metric_value(text, "pool_lease_duration_seconds_bucket{le=\"3600\"}")
                - metric_value(text, "pool_lease_duration_seconds_bucket{le=\"1800\"}")
        };
        let before_late = metrics().await;
        let (status, body) = env.release(&late, "success").await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"]["code"], "lease_expired");
        let after_late = metrics().await;
        assert!(
            long(&after_late) >= long(&before_late) + 1.0,
            "the 3000 s lease: {after_late}"
        );
        env.t.stop().await;
    })
    .await;
}

/// Runs `sql` on the pool database from a connection of the test's own.
async fn execute_on_pool(url: &str, sql: &str) {
    if url.starts_with("sqlite:") {
        let db = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&db)
            .await
            .unwrap();
        db.close().await;
    } else {
        let db = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&db)
            .await
            .unwrap();
        db.close().await;
    }
}

/// A plan line that reads the whole lease table (PostgreSQL or SQLite wording).
fn scans_leases(line: &str) -> bool {
    let l = line.trim_start_matches([' ', '-', '>']);
    l.starts_with("Seq Scan on credential_leases") || l == "SCAN l"
}

/// A plan line that sorts what it read.
fn sorts(line: &str) -> bool {
    let l = line.trim_start_matches([' ', '-', '>']);
    l.starts_with("Sort") || l.starts_with("USE TEMP B-TREE")
}

/// The lease list reads an index, not the lease table, which gains a row per lease for good: the
/// open leases through `credential_leases_open`, all of them newest first (unsorted) through
/// `credential_leases_newest`; and it lists what it should.
#[tokio::test]
async fn the_lease_list_reads_its_rows_from_an_index_not_the_whole_lease_table() {
    each_backend(|backend| async move {
        let env = Env::new(&backend, 1).await;
        let (status, grant, _) = env.acquire().await;
        assert_eq!(status, 201, "{grant}");
        let account = grant["account"]["id"].as_i64().unwrap();
        // 20,000 finished leases of the hour before, as months of use leave behind.
        let url = env.t.dbs.config.pool_database_url();
        let old = 20_000;
        execute_on_pool(
            &url,
            &format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {old}) \
                 INSERT INTO credential_leases (id, account_id, pool, worker, holder_token_id, \
                   acquired_at, expires_at, released_at, renewals, result) \
                 SELECT 'old-' || i, {account}, 'default', 'w0', 1, {from} + i, {from} + i + 60000, \
                   {from} + i + 1000, 0, 'success' FROM n",
                from = T0 - 3_600 * SEC,
            ),
        )
        .await;
        if let Backend::Postgres { .. } = backend {
            // As autovacuum would after a load of this size.
            execute_on_pool(&url, "VACUUM ANALYZE credential_leases").await;
        }

        let pool = &env.t.app().pool;
        for active in [true, false] {
            let (page, count) = poolkeeper::store::leases::explain_list(pool, active, T0)
                .await
                .unwrap();
            let index = if active {
                "credential_leases_open"
            } else {
                "credential_leases_newest"
            };
            let page = page.join("\n");
            assert!(page.contains(index), "active={active}: the page reads {index}:\n{page}");
            assert!(
                !page.lines().any(scans_leases),
                "active={active}: the page does not scan the leases:\n{page}"
            );
            // The open leases are at most one per account; all of them come in order.
            assert!(
                active || !page.lines().any(sorts),
                "all leases come newest first from the index, unsorted:\n{page}"
            );
            if active {
                let count = count.join("\n");
                assert!(
                    !count.lines().any(scans_leases),
                    "the count of open leases does not scan the leases:\n{count}"
                );
            }
        }

        let (status, open) = env.admin(Method::GET, "/api/admin/leases?active=true", None).await;
        assert_eq!(status, 200, "{open}");
        assert_eq!(open["total"], 1, "{open}");
        assert_eq!(open["items"][0]["id"], grant["lease_id"], "{open}");
        let (status, all) = env
            .admin(Method::GET, "/api/admin/leases?page_size=3", None)
            .await;
        assert_eq!(status, 200, "{all}");
        assert_eq!(all["total"], old + 1, "{all}");
        let ids: Vec<&str> = all["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["id"].as_str().unwrap())
            .collect();
        let newest = grant["lease_id"].as_str().unwrap();
        assert_eq!(ids, [newest, "old-20000", "old-19999"], "{all}");
        env.t.stop().await;
    })
    .await;
}
