//! The audit log: a row per change from every door (API, pages, CLI), no secret in a summary,
//! filters and pages of `GET /api/admin/audit`, rows the database refuses to change or remove,
//! retention that keeps the chain verifiable, a tampered row named by `audit verify`, concurrent
//! appends that leave one chain, and `poolkeeper audit tail|export|verify`.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::{Backend, TestApp, each_backend};
use poolkeeper::auth::Scope;
use poolkeeper::clock::{ManualClock, SharedClock};
use poolkeeper::service::audit::{self, Actor, Change};
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Connection;

const BIN: &str = env!("CARGO_BIN_EXE_poolkeeper");
const DAY_MS: i64 = 86_400_000;
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;

async fn audit_rows(t: &TestApp, token: &str, query: &str) -> Value {
    let (status, body) = t
        .send_json(
            token,
            Method::GET,
            &format!("/api/admin/audit{query}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

fn rows_with<'a>(page: &'a Value, action: &str) -> Vec<&'a Value> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == action)
        .collect()
}

/// Runs a statement on the users database with a connection of its own, as an operator with
/// `psql` or `sqlite3` would; returns the error text when the database refused it.
async fn raw_sql(t: &TestApp, sql: &str) -> Result<u64, String> {
    let url = t.dbs.config.users_database_url();
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    match t.dbs.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query(sql)
                .execute(&mut c)
                .await
                .map(|r| r.rows_affected())
                .map_err(|e| e.to_string())
        }
        Backend::Postgres { .. } => {
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query(sql)
                .execute(&mut c)
                .await
                .map(|r| r.rows_affected())
                .map_err(|e| e.to_string())
        }
    }
}

/// Changes row `id`'s summary behind the guard's back (an attacker who owns the database: drops or
/// disables the trigger first).
async fn tamper(t: &TestApp, id: i64) {
    let url = t.dbs.config.users_database_url();
    let update = format!("UPDATE audit_log SET summary = '{{\"forged\":true}}' WHERE id = {id}");
    match t.dbs.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            for sql in ["DROP TRIGGER audit_log_no_update", update.as_str()] {
                sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
        }
        Backend::Postgres { .. } => {
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            for sql in [
                "ALTER TABLE audit_log DISABLE TRIGGER audit_log_guard",
                update.as_str(),
                "ALTER TABLE audit_log ENABLE TRIGGER audit_log_guard",
            ] {
                sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
        }
    }
}

fn manual(start: i64) -> (Arc<ManualClock>, SharedClock) {
    let clock = ManualClock::new(start);
    let shared: SharedClock = clock.clone();
    (clock, shared)
}

fn change(action: &'static str, target_id: i64, summary: Value) -> Change {
    Change::new(action, "mother", target_id, summary)
}

#[tokio::test]
async fn each_kind_of_change_leaves_one_row_with_actor_address_and_no_secret() {
    each_backend(|backend| async move {
        let t = TestApp::spawn_with(
            &backend,
            |c| c.jobs.poll_interval_ms = 20,
            poolkeeper::clock::system(),
        )
        .await;
        let admin = t.token("auditor", Scope::Admin).await;
        let send = |method: Method, path: String, body: Option<Value>| {
            let (t, admin) = (&t, &admin);
            async move { t.send_json(admin, method, &path, body).await }
        };
        // Logins: one refused, one accepted.
        let bad = t
            .client
            .post(t.url("/api/admin/login"))
            .json(&json!({"username": "admin", "password": "not-the-password-77"}))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 401);
        t.login().await;

        let (_, group) = send(Method::POST, "/api/admin/pool-groups".into(), Some(json!({"name": "g"}))).await;
        let gid = group["id"].as_i64().unwrap();
        let (status, m) = send(
            Method::POST,
            "/api/admin/mothers".into(),
            Some(json!({"name": "m1", "provider": "sim", "credential": "mother-cred-SECRET-1",
                "seat_limit": 2, "pool_group_id": gid})),
        )
        .await;
        assert_eq!(status, 201, "{m}");
        let mid = m["id"].as_i64().unwrap();
        // The simulator knows her by the credential she gets below, so her sync succeeds.
        t.app()
            .providers
            .sim
            .put_org(
                &poolkeeper::crypto::Credential::new("mother-cred-SECRET-2"),
                poolkeeper::providers::sim::SimOrg::new("m1", "owner@m1.test", 3),
            )
            .unwrap();
        let (status, _) = send(
            Method::PATCH,
            format!("/api/admin/mothers/{mid}"),
            Some(json!({"notes": "moved desks", "seat_limit": 3})),
        )
        .await;
        assert_eq!(status, 200);
        let (status, _) = send(
            Method::POST,
            format!("/api/admin/mothers/{mid}/credential"),
            Some(json!({"credential": "mother-cred-SECRET-2"})),
        )
        .await;
        assert_eq!(status, 200);
        let (status, sync) = send(
            Method::POST,
            format!("/api/admin/pool-groups/{gid}/sync/mother/{mid}"),
            Some(json!({})),
        )
        .await;
        assert_eq!(status, 202, "{sync}");
        let sync_job = sync["job_id"].as_str().unwrap().to_string();
        t.job_ended(&sync_job, std::time::Duration::from_secs(20)).await;

        // A job to cancel and retry: pending an hour from now, so no runner takes it.
        let users = &t.app().users;
        let now = t.app().clock.now_ms();
        let mut job = poolkeeper::store::jobs::NewJob::new("noop", json!({}));
        job.run_at = Some(now + 3_600_000);
        let (job, _) = poolkeeper::store::jobs::enqueue(users, &job, 3, now).await.unwrap();
        let (status, _) = send(Method::POST, format!("/api/admin/jobs/{}/cancel", job.id), None).await;
        assert_eq!(status, 200);
        let (status, _) = send(Method::POST, format!("/api/admin/jobs/{}/retry", job.id), None).await;
        assert_eq!(status, 200);

        let (status, codes) = send(Method::POST, "/api/admin/codes".into(), Some(json!({"count": 2}))).await;
        assert_eq!(status, 201, "{codes}");
        let code_values: Vec<String> = codes["codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        let (status, created) = send(
            Method::POST,
            "/api/admin/tokens".into(),
            Some(json!({"name": "ci", "scope": "worker"})),
        )
        .await;
        assert_eq!(status, 201);
        let token_value = created["value"].as_str().unwrap().to_string();
        let (status, _) = send(Method::DELETE, format!("/api/admin/tokens/{}", created["id"]), None).await;
        assert_eq!(status, 200);
        let (status, account) = send(
            Method::POST,
            "/api/admin/accounts".into(),
            Some(json!({"login": "worker@example.org", "password": "account-pw-SECRET-3"})),
        )
        .await;
        assert_eq!(status, 201, "{account}");
        let (status, _) = send(Method::POST, format!("/api/admin/accounts/{}/reset", account["id"]), None).await;
        assert_eq!(status, 200);
        let (status, imported) = send(
            Method::POST,
            "/api/admin/accounts/import".into(),
            Some(json!({"data": "login,password\nsecond@example.org,account-pw-SECRET-4\n"})),
        )
        .await;
        assert_eq!(status, 200, "{imported}");
        let (status, report) = send(
            Method::POST,
            "/api/admin/mothers/batch/import".into(),
            Some(json!({"rows": [{"name": "m2", "provider": "sim", "credential": "mother-cred-SECRET-5", "seat_limit": 1}]})),
        )
        .await;
        assert_eq!(status, 200, "{report}");
        let (status, _) = send(Method::DELETE, format!("/api/admin/mothers/{mid}?force=true"), None).await;
        assert_eq!(status, 204);

        let page = audit_rows(&t, &admin, "?page_size=500").await;
        let expected = [
            ("login.failure", "admin", "admin"),
            ("login.success", "admin", "admin"),
            ("pool_group.create", "token:auditor", "pool_group"),
            ("mother.create", "token:auditor", "mother"),
            ("mother.update", "token:auditor", "mother"),
            ("mother.rotate_credential", "token:auditor", "mother"),
            ("mother.sync", "token:auditor", "mother"),
            ("job.cancel", "token:auditor", "job"),
            ("job.retry", "token:auditor", "job"),
            ("codes.generate", "token:auditor", "code_batch"),
            ("token.create", "token:auditor", "token"),
            ("token.revoke", "token:auditor", "token"),
            ("account.create", "token:auditor", "credential_account"),
            ("account.reset", "token:auditor", "credential_account"),
            ("account.import", "token:auditor", "credential_account"),
            ("mother.import", "token:auditor", "mother"),
            ("mother.delete", "token:auditor", "mother"),
        ];
        for (action, actor, target_type) in expected {
            let rows = rows_with(&page, action);
            assert_eq!(rows.len(), 1, "{action}: {page}");
            let row = rows[0];
            assert_eq!(row["actor"], actor, "{row}");
            assert_eq!(row["address"], "127.0.0.1", "{row}");
            assert_eq!(row["target_type"], target_type, "{row}");
            assert_eq!(row["hash"].as_str().unwrap().len(), 64, "{row}");
        }
        assert_eq!(page["total"], expected.len() as i64, "{page}");
        let update = rows_with(&page, "mother.update")[0];
        assert_eq!(update["target_id"], mid.to_string());
        let summary: Value = serde_json::from_str(update["summary"].as_str().unwrap()).unwrap();
        assert_eq!(summary, json!({"changed": {"notes": "moved desks", "seat_limit": 3}}));
        let generated: Value =
            serde_json::from_str(rows_with(&page, "codes.generate")[0]["summary"].as_str().unwrap()).unwrap();
        assert_eq!(generated["count"], 2);
        let retry = rows_with(&page, "job.retry")[0];
        assert_eq!(retry["target_id"], job.id.as_str());

        // No secret anywhere in the log: passwords, credentials, the token, the codes.
        let all = page.to_string();
        let mut secrets = vec![
            common::ADMIN_PASSWORD.to_string(),
            "not-the-password-77".into(),
            "SECRET".into(),
            token_value,
            admin.clone(),
        ];
        secrets.extend(code_values);
        for secret in &secrets {
            assert!(!all.contains(secret.as_str()), "{secret} in the audit log: {all}");
        }

        // The sync job shows who queued it.
        assert_eq!(
            audit::job_actor(users, &sync_job).await.unwrap().as_deref(),
            Some("token:auditor")
        );
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_page_form_leaves_the_same_row_as_the_api() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let admin = t.token("auditor", Scope::Admin).await;
        let mut ids = Vec::new();
        for name in ["by-api", "by-page"] {
            let (status, m) = t
                .send_json(
                    &admin,
                    Method::POST,
                    "/api/admin/mothers",
                    Some(json!({"name": name, "provider": "sim", "credential": "c-123456", "seat_limit": 1})),
                )
                .await;
            assert_eq!(status, 201, "{m}");
            ids.push(m["id"].as_i64().unwrap());
        }
        let (status, _) = t
            .send_json(&admin, Method::DELETE, &format!("/api/admin/mothers/{}", ids[0]), None)
            .await;
        assert_eq!(status, 204);
        let (browser, csrf) = t.login_without_redirects().await;
        let res = browser
            .post(t.url(&format!("/mothers/{}/delete", ids[1])))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", &t.base)
            .body(common::url_encoded(&[("csrf", &csrf)]))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 303);
        let page = audit_rows(&t, &admin, "?action=mother.delete").await;
        let rows = page["items"].as_array().unwrap();
        assert_eq!(rows.len(), 2, "{page}");
        // Newest first: the page's row, then the API's.
        let (by_page, by_api) = (&rows[0], &rows[1]);
        assert_eq!(by_page["actor"], "admin");
        assert_eq!(by_api["actor"], "token:auditor");
        for key in ["action", "target_type", "summary", "address"] {
            assert_eq!(by_page[key], by_api[key], "{key}");
        }
        assert_eq!(by_page["target_id"], ids[1].to_string());
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn audit_list_filters_by_actor_action_target_and_time_and_pages() {
    each_backend(|backend| async move {
        let (clock, shared) = manual(T0);
        let t = TestApp::spawn_with(&backend, |_| {}, shared.clone()).await;
        let admin = t.token("reader", Scope::Admin).await;
        let users = &t.app().users;
        let (alice, bob) = (
            Actor::new("alice", "10.0.0.1"),
            Actor::new("bob", "10.0.0.2"),
        );
        // Day 0: alice creates 1..=5; day 1: bob updates 1..=3; day 2: alice deletes 1.
        for id in 1..=5 {
            audit::append(
                users,
                &shared,
                &alice,
                change("mother.create", id, json!({})),
            )
            .await
            .unwrap();
        }
        clock.advance_ms(DAY_MS);
        for id in 1..=3 {
            audit::append(users, &shared, &bob, change("mother.update", id, json!({})))
                .await
                .unwrap();
        }
        clock.advance_ms(DAY_MS);
        audit::append(
            users,
            &shared,
            &alice,
            change("mother.delete", 1, json!({})),
        )
        .await
        .unwrap();

        let total = |q: &'static str| {
            let (t, admin) = (&t, &admin);
            async move { audit_rows(t, admin, q).await["total"].as_i64().unwrap() }
        };
        assert_eq!(total("").await, 9);
        assert_eq!(total("?actor=alice").await, 6);
        assert_eq!(total("?actor=bob&action=mother.update").await, 3);
        assert_eq!(total("?action=mother.*").await, 9);
        assert_eq!(total("?action=mother.cre*").await, 5);
        assert_eq!(total("?target=mother:1").await, 3);
        assert_eq!(total("?target=mother").await, 9);
        assert_eq!(total("?target=job").await, 0);
        assert_eq!(total("?from=2026-01-02").await, 4);
        assert_eq!(total("?from=2026-01-02&to=2026-01-02").await, 3);
        assert_eq!(total("?to=2026-01-01T12:00:00Z").await, 5);

        // Pages: newest first, no row twice, none left out.
        let mut seen = Vec::new();
        for page in 1..=4 {
            let body = audit_rows(&t, &admin, &format!("?page={page}&page_size=3")).await;
            assert_eq!(body["total"], 9);
            seen.extend(
                body["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["id"].as_i64().unwrap()),
            );
        }
        assert_eq!(seen, (1..=9).rev().collect::<Vec<_>>());

        for (query, field) in [
            ("?from=yesterday", "from"),
            ("?to=2026-13-45", "to"),
            ("?from=2026-01-03&to=2026-01-01", "to"),
            ("?page=0", "page"),
            ("?page_size=501", "page_size"),
        ] {
            let res = t
                .client
                .get(t.url(&format!("/api/admin/audit{query}")))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap();
            let err = common::api_error(res).await;
            assert_eq!(err.status, 400, "{query}");
            assert!(err.message.contains(field), "{query}: {}", err.message);
        }
        // The page shows the same filter.
        let (browser, _) = t.login().await;
        let html = browser
            .get(t.url("/audit?actor=bob&action=mother.update"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(html.contains("3 row(s) match"), "{html}");
        assert!(html.contains("id=\"filter-actor\""), "{html}");
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_database_refuses_to_change_or_remove_audit_rows() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let users = &t.app().users;
        let clock = t.app().clock.clone();
        let actor = Actor::new("alice", "10.0.0.1");
        for id in 1..=3 {
            audit::append(
                users,
                &clock,
                &actor,
                change("mother.create", id, json!({})),
            )
            .await
            .unwrap();
        }
        for sql in [
            "UPDATE audit_log SET actor = 'mallory' WHERE id = 2",
            "UPDATE audit_log SET summary = '{}'",
            "DELETE FROM audit_log WHERE id = 1",
            "DELETE FROM audit_log",
            "INSERT INTO audit_anchor (singleton, last_id, last_hash) VALUES (1, 3, 'x')",
        ] {
            let err = raw_sql(&t, sql).await.expect_err(sql);
            assert!(err.contains("audit"), "{sql}: {err}");
        }
        if matches!(t.dbs.backend, Backend::Postgres { .. }) {
            let err = raw_sql(&t, "TRUNCATE audit_log")
                .await
                .expect_err("truncate");
            assert!(err.contains("truncated"), "{err}");
            // The gate is transaction-local: setting it outside the cleanup's function lasts no
            // longer than the statement's own transaction, and a plain session cannot open it for
            // a later statement.
            raw_sql(
                &t,
                "SELECT set_config('poolkeeper.audit_purge', 'on', true)",
            )
            .await
            .unwrap();
            raw_sql(&t, "DELETE FROM audit_log WHERE id = 1")
                .await
                .expect_err("gate closed");
        }
        let report = audit::verify(users).await.unwrap();
        assert_eq!((report.checked, report.broken), (3, None));
        let (_, total) = audit::list_page(users, &Default::default(), 10, 0)
            .await
            .unwrap();
        assert_eq!(total, 3);
        t.stop().await;
    })
    .await;
}

/// A retention run while `verify` walks the chain moves the anchor past the rows it has read; the
/// chain is still whole, and verify must say so instead of naming the rows retention took.
#[tokio::test]
async fn verify_beside_retention_runs_finds_no_break() {
    each_backend(|backend| async move {
        let (clock, shared) = manual(T0);
        let t = TestApp::spawn_with(&backend, |_| {}, shared.clone()).await;
        let users = t.app().users.clone();
        let actor = Actor::new("alice", "10.0.0.1");
        for round in 0..60 {
            for id in 0..3 {
                audit::append(
                    &users,
                    &shared,
                    &actor,
                    change("mother.create", round * 3 + id, json!({})),
                )
                .await
                .unwrap();
            }
            clock.advance_ms(DAY_MS);
            let purge = tokio::spawn({
                let (users, shared) = (users.clone(), shared.clone());
                async move { audit::purge_expired(&users, &shared, 0).await.unwrap() }
            });
            let report = audit::verify(&users).await.unwrap();
            assert_eq!(report.broken, None, "round {round}");
            purge.await.unwrap();
        }
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn retention_removes_old_rows_and_the_rest_still_verifies() {
    each_backend(|backend| async move {
        let (clock, shared) = manual(T0);
        let t = TestApp::spawn_with(&backend, |_| {}, shared.clone()).await;
        let users = &t.app().users;
        let actor = Actor::new("alice", "10.0.0.1");
        for id in 1..=10 {
            audit::append(
                users,
                &shared,
                &actor,
                change("mother.create", id, json!({})),
            )
            .await
            .unwrap();
        }
        clock.advance_ms(40 * DAY_MS);
        for id in 11..=15 {
            audit::append(
                users,
                &shared,
                &actor,
                change("mother.create", id, json!({})),
            )
            .await
            .unwrap();
        }
        // Nothing is old enough yet for a year's retention.
        assert_eq!(audit::purge_expired(users, &shared, 365).await.unwrap(), 0);
        let removed = audit::purge_expired(users, &shared, 30).await.unwrap();
        assert_eq!(removed, 10);
        let report = audit::verify(users).await.unwrap();
        assert_eq!(report.broken, None);
        assert_eq!(report.anchored_at, 10);
        // The five kept rows and the cleanup's own row.
        assert_eq!(report.checked, 6);
        let (rows, total) = audit::list_page(users, &Default::default(), 10, 0)
            .await
            .unwrap();
        assert_eq!(total, 6);
        assert_eq!(rows[0].action, "audit.retention");
        assert_eq!(rows[0].actor, "system");
        // Appends go on from the kept head; a second cleanup moves the anchor and still verifies.
        clock.advance_ms(40 * DAY_MS);
        audit::append(
            users,
            &shared,
            &actor,
            change("mother.delete", 1, json!({})),
        )
        .await
        .unwrap();
        assert_eq!(audit::purge_expired(users, &shared, 30).await.unwrap(), 6);
        let report = audit::verify(users).await.unwrap();
        assert_eq!((report.broken, report.anchored_at), (None, 16));
        // Even when every row is old, the newest stays as the head to chain onto.
        clock.advance_ms(400 * DAY_MS);
        audit::purge_expired(users, &shared, 30).await.unwrap();
        let (_, total) = audit::list_page(users, &Default::default(), 10, 0)
            .await
            .unwrap();
        assert!(total >= 1);
        assert_eq!(audit::verify(users).await.unwrap().broken, None);
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn concurrent_appends_leave_one_unbroken_chain() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let app = t.app().clone();
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let app = app.clone();
                tokio::spawn(async move {
                    let actor = Actor::new(format!("writer{i}"), "10.0.0.1");
                    audit::append(
                        &app.users,
                        &app.clock,
                        &actor,
                        change("mother.update", i, json!({"i": i})),
                    )
                    .await
                    .unwrap()
                    .id
                })
            })
            .collect();
        let mut ids = Vec::new();
        for task in tasks {
            ids.push(task.await.unwrap());
        }
        ids.sort();
        assert_eq!(ids, (1..=50).collect::<Vec<_>>());
        let report = audit::verify(&app.users).await.unwrap();
        assert_eq!((report.checked, report.broken), (50, None));
        t.stop().await;
    })
    .await;
}

/// The CLI against the test's databases.
fn poolkeeper(t: &TestApp) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(t.dbs.dir.path())
        .env("RUST_LOG", "warn")
        .env("USER", "operator")
        .arg("--data-dir")
        .arg(t.dbs.dir.path())
        .arg("--users-database-url")
        .arg(t.dbs.config.users_database_url())
        .arg("--pool-database-url")
        .arg(t.dbs.config.pool_database_url());
    cmd
}

fn run(mut cmd: Command) -> (i32, String, String) {
    let out = cmd.output().expect("run poolkeeper");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test]
async fn cli_tails_exports_and_verifies_and_names_a_tampered_row() {
    each_backend(|backend| async move {
        let (clock, shared) = manual(T0);
        let t = TestApp::spawn_with(&backend, |_| {}, shared.clone()).await;
        let users = &t.app().users;
        let actor = Actor::new("alice", "10.0.0.1");
        for id in 1..=6 {
            audit::append(
                users,
                &shared,
                &actor,
                change("mother.create", id, json!({"n": id})),
            )
            .await
            .unwrap();
            clock.advance_ms(DAY_MS);
        }
        // tail: the newest rows, oldest first, one JSON object a line.
        let mut cmd = poolkeeper(&t);
        cmd.args(["audit", "tail", "-n", "3"]);
        let (code, out, err) = run(cmd);
        assert_eq!(code, 0, "{err}");
        let ids: Vec<i64> = out
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["id"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        assert_eq!(ids, vec![4, 5, 6]);

        // export: only the range asked for (rows 2..=4 are on Jan 2-4).
        let mut cmd = poolkeeper(&t);
        cmd.args([
            "audit",
            "export",
            "--from",
            "2026-01-02",
            "--to",
            "2026-01-04",
        ]);
        let (code, out, err) = run(cmd);
        assert_eq!(code, 0, "{err}");
        let rows: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            rows.iter()
                .map(|r| r["id"].as_i64().unwrap())
                .collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert_eq!(rows[0]["actor"], "alice");
        assert!(err.contains("exported 3"), "{err}");
        let mut cmd = poolkeeper(&t);
        cmd.args(["audit", "export", "--from", "soon"]);
        let (code, _, err) = run(cmd);
        assert_ne!(code, 0);
        assert!(err.contains("from"), "{err}");

        // A CLI change is recorded as cli:<os user>, address local.
        let mut cmd = poolkeeper(&t);
        cmd.args(["token", "create", "--name", "from-cli", "--scope", "worker"]);
        let (code, token, err) = run(cmd);
        assert_eq!(code, 0, "{err}");
        let (rows, _) = audit::list_page(users, &Default::default(), 1, 0)
            .await
            .unwrap();
        assert_eq!(
            (
                rows[0].action.as_str(),
                rows[0].actor.as_str(),
                rows[0].address.as_str()
            ),
            ("token.create", "cli:operator", "local")
        );
        assert!(!rows[0].summary.contains(token.trim()));

        // tail --follow prints rows written after it started.
        let mut follow = tokio::process::Command::from(poolkeeper(&t));
        follow
            .args(["audit", "tail", "-n", "0", "--follow"])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = follow.spawn().unwrap();
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
            child.stdout.take().unwrap(),
        ));
        // Give it time to read the head before the new row is written.
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        audit::append(
            users,
            &shared,
            &actor,
            change("mother.delete", 9, json!({})),
        )
        .await
        .unwrap();
        let line = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
            .await
            .expect("tail --follow printed the new row")
            .unwrap()
            .unwrap();
        let row: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            (row["action"].as_str(), row["target_id"].as_str()),
            (Some("mother.delete"), Some("9"))
        );
        child.kill().await.unwrap();

        // verify: ok, then exactly the tampered link.
        let mut cmd = poolkeeper(&t);
        cmd.args(["audit", "verify"]);
        let (code, out, err) = run(cmd);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("8 row(s) checked"), "{out}");
        tamper(&t, 4).await;
        let mut cmd = poolkeeper(&t);
        cmd.args(["audit", "verify"]);
        let (code, out, _) = run(cmd);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("broken at row 4"), "{out}");
        assert!(out.contains("3 row(s) before it verified"), "{out}");
        let report = audit::verify(users).await.unwrap();
        assert_eq!(report.broken.map(|b| b.id), Some(4));
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn changes_to_admin_users_are_audited_without_their_passwords() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let token = t.token("boss", Scope::Admin).await;
        let (status, body) = t
            .send_json(
                &token,
                Method::POST,
                "/api/admin/admins",
                Some(json!({"username": "olga", "password": "olga-secret-1", "role": "operator"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_i64().unwrap();
        for (path, body) in [
            ("role", Some(json!({"role": "viewer"}))),
            ("password", Some(json!({"password": "olga-secret-2"}))),
            ("disable", None),
            ("enable", None),
        ] {
            let (status, answer) = t
                .send_json(
                    &token,
                    Method::POST,
                    &format!("/api/admin/admins/olga/{path}"),
                    body,
                )
                .await;
            assert_eq!(status, 200, "{path}: {answer}");
        }
        let page = audit_rows(&t, &token, "?target=admin").await;
        for action in [
            "admin.create",
            "admin.role",
            "admin.password",
            "admin.disable",
            "admin.enable",
        ] {
            let rows = rows_with(&page, action);
            assert_eq!(rows.len(), 1, "{action}: {page}");
            assert_eq!(rows[0]["actor"], "token:boss");
            assert_eq!(rows[0]["target_id"], id.to_string());
        }
        let role = rows_with(&page, "admin.role")[0]["summary"]
            .as_str()
            .unwrap();
        assert!(role.contains("\"viewer\""), "{role}");
        let text = page.to_string();
        assert!(
            !text.contains("olga-secret"),
            "a password reached the audit log: {text}"
        );
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn credential_account_create_update_and_delete_are_audited_without_passwords() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let token = t.token("ops", Scope::Admin).await;
        let (status, body) = t
            .send_json(
                &token,
                Method::POST,
                "/api/admin/accounts",
                Some(json!({"login": "w1@example.org", "password": "acct-secret-1"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_i64().unwrap();
        let path = format!("/api/admin/accounts/{id}");
        let patch = json!({"is_active": false, "password": "acct-secret-2"});
        let (status, body) = t.send_json(&token, Method::PATCH, &path, Some(patch)).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = t.send_json(&token, Method::DELETE, &path, None).await;
        assert_eq!(status, 204, "{body}");
        let page = audit_rows(&t, &token, "?action=account.*").await;
        for action in ["account.create", "account.update", "account.delete"] {
            let rows = rows_with(&page, action);
            assert_eq!(rows.len(), 1, "{action}: {page}");
            assert_eq!(rows[0]["target_id"], id.to_string());
            assert_eq!(rows[0]["actor"], "token:ops");
        }
        let update = rows_with(&page, "account.update")[0]["summary"]
            .as_str()
            .unwrap();
        assert!(
            update.contains("\"fields\":[\"is_active\",\"password\"]"),
            "{update}"
        );
        assert!(!page.to_string().contains("acct-secret"), "{page}");
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bulk_invite_jobs_are_audited_with_who_queued_them() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let token = t.token("desk", Scope::Admin).await;
        let (status, body) = t
            .send_json(
                &token,
                Method::POST,
                "/api/admin/invites/cancel",
                Some(json!({"ids": [41, 42]})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        let job_id = body["job_id"].as_str().unwrap().to_string();
        let page = audit_rows(&t, &token, "?action=invites.*").await;
        let rows = rows_with(&page, "invites.cancel");
        assert_eq!(rows.len(), 1, "{page}");
        assert_eq!(rows[0]["actor"], "token:desk");
        assert_eq!(rows[0]["target_type"], "job");
        assert_eq!(rows[0]["target_id"], job_id.as_str());
        let actor = audit::job_actor(&t.app().users, &job_id).await.unwrap();
        assert_eq!(actor.as_deref(), Some("token:desk"));
        t.stop().await;
    })
    .await;
}
