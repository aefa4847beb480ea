//! The pool domain over HTTP and through its services: groups and naming templates, daily sequences,
//! mothers with teams and seats, batch import, stats and quota, sealed credentials and rotation.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use common::{TestApp, api_error, each_backend, url_encoded};
use poolkeeper::auth::Scope;
use poolkeeper::clock::ManualClock;
use poolkeeper::crypto::{Credential, Keyring};
use poolkeeper::store;
use poolkeeper::store::pool_groups::SequenceKind;
use serde_json::{Value, json};

const SECRET: &str = "s3cr3t-credential-value-42";
/// 2026-11-23T10:00:00Z.
const DAY1_MS: i64 = 1_795_428_000_000;

/// Every log line of this test binary, captured at TRACE.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || Capture(writer.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Api<'a> {
    t: &'a TestApp,
    token: String,
}

impl<'a> Api<'a> {
    async fn new(t: &'a TestApp) -> Self {
        let token = t.token("pool", Scope::Admin).await;
        Self { t, token }
    }
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self
            .t
            .client
            .request(method, self.t.url(path))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.unwrap()
    }
    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let res = self.send(method.clone(), path, body).await;
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        assert!(status < 300, "{method} {path}: {status} {text}");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
    async fn get(&self, path: &str) -> Value {
        self.ok(reqwest::Method::GET, path, None).await.1
    }
    async fn post(&self, path: &str, body: Value) -> Value {
        self.ok(reqwest::Method::POST, path, Some(body)).await.1
    }
    async fn err(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> common::ApiErr {
        api_error(self.send(method, path, body).await).await
    }
    async fn group(&self, name: &str) -> i64 {
        let g = self
            .post("/api/admin/pool-groups", json!({"name": name}))
            .await;
        g["id"].as_i64().unwrap()
    }
    async fn mother(&self, body: Value) -> Value {
        self.post("/api/admin/mothers", body).await
    }
}

fn post() -> reqwest::Method {
    reqwest::Method::POST
}

#[tokio::test]
async fn bad_templates_are_400_invalid_template_naming_the_part() {
    each_backend(|backend| async move {
        let t = TestApp::spawn_with(
            &backend,
            |c| c.child_email_domain = Some("kids.example.org".into()),
            poolkeeper::clock::system(),
        )
        .await;
        let api = Api::new(&t).await;
        let id = api.group("alpha").await;
        let path = format!("/api/admin/pool-groups/{id}/settings");
        let cases = [
            (json!({"team_template": "{group}-{seq}"}), "{seq}"),
            (json!({"child_name_template": "{group}-{date"}), "unclosed"),
            (json!({"team_template": ""}), "empty"),
            (
                json!({"child_email_template": "{group} {seq3}@{domain}"}),
                "valid email",
            ),
            (
                json!({"child_email_template": "{group}-{seq3}"}),
                "valid email",
            ),
            (
                json!({"team_template": "{seq3}{group}{seq3}"}),
                "{seq3} may appear at most once",
            ),
            (
                json!({"child_name_template": "{date}-{date}-{seq3}"}),
                "{date} may appear at most once",
            ),
        ];
        for (body, needle) in cases {
            let err = api.err(post(), &path, Some(body.clone())).await;
            assert_eq!(
                (err.status, err.code.as_str()),
                (400, "invalid_template"),
                "{body}"
            );
            assert!(err.message.contains(needle), "{body}: {}", err.message);
            let field = body.as_object().unwrap().keys().next().unwrap().clone();
            assert!(
                err.message.contains(&field),
                "names the field: {}",
                err.message
            );
        }
        // Nothing was saved by the refused requests.
        let g = api.get(&format!("/api/admin/pool-groups/{id}")).await;
        assert_eq!(g["settings"]["team_template"], "{group}-{date}-{seq3}");
        let good = api
            .post(
                &path,
                json!({"team_template": "T-{group}-{seq3}", "email_domain": "a.example.org"}),
            )
            .await;
        assert_eq!(good["settings"]["team_template"], "T-{group}-{seq3}");
        assert_eq!(good["settings"]["email_domain"], "a.example.org");
        let err = api
            .err(post(), &path, Some(json!({"email_domain": "not a domain"})))
            .await;
        assert_eq!(
            (err.status, err.code.as_str()),
            (400, "invalid_email_domain")
        );
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn domain_placeholder_without_a_domain_is_refused_clearly() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let api = Api::new(&t).await;
        let id = api.group("nodomain").await;
        let err = api
            .err(
                post(),
                &format!("/api/admin/pool-groups/{id}/settings"),
                Some(json!({"child_email_template": "x-{seq3}@{domain}"})),
            )
            .await;
        assert_eq!((err.status, err.code.as_str()), (400, "invalid_template"));
        assert!(
            err.message.contains("{domain}") && err.message.contains("child_email_domain"),
            "{}",
            err.message
        );
        // Preview of the default templates says the same instead of inventing a domain.
        let err = api
            .err(
                reqwest::Method::GET,
                &format!("/api/admin/pool-groups/{id}/preview"),
                None,
            )
            .await;
        assert_eq!((err.status, err.code.as_str()), (400, "invalid_template"));
        // With a group domain it works.
        api.post(
            &format!("/api/admin/pool-groups/{id}/settings"),
            json!({"email_domain": "grp.example.org"}),
        )
        .await;
        let p = api
            .get(&format!("/api/admin/pool-groups/{id}/preview?count=1"))
            .await;
        assert!(
            p["child_emails"][0]
                .as_str()
                .unwrap()
                .ends_with("@grp.example.org"),
            "{p}"
        );
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn sequence_is_1_then_2_then_1_on_the_next_day() {
    each_backend(|backend| async move {
        let clock = ManualClock::new(DAY1_MS);
        let t = TestApp::spawn_with(
            &backend,
            |c| c.child_email_domain = Some("kids.example.org".into()),
            clock.clone(),
        )
        .await;
        let api = Api::new(&t).await;
        let gid = api.group("seq").await;
        let team_of = |m: &Value| m["teams"][0]["name"].as_str().unwrap().to_string();
        let body = |name: &str| {
            json!({"name": name, "provider": "sim", "credential": SECRET, "pool_group_id": gid})
        };
        let m1 = api.mother(body("m1")).await;
        let m2 = api.mother(body("m2")).await;
        assert_eq!(team_of(&m1), "seq-20261123-001");
        assert_eq!(team_of(&m2), "seq-20261123-002");
        clock.advance_ms(86_400_000);
        let m3 = api.mother(body("m3")).await;
        assert_eq!(team_of(&m3), "seq-20261124-001");
        // A refused mother (duplicate name) does not use up a number.
        let err = api.err(post(), "/api/admin/mothers", Some(body("m3"))).await;
        assert_eq!(err.status, 409);
        let m4 = api.mother(body("m4")).await;
        assert_eq!(team_of(&m4), "seq-20261124-002");
        // Store level, child kind: independent of the team kind.
        let pool = &t.app().pool;
        for want in 1..=2 {
            let got = store::pool_groups::allocate_sequence(pool, gid, "20261124", SequenceKind::Child)
                .await
                .unwrap();
            assert_eq!(got, want);
        }
        t.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_allocations_get_fifty_distinct_numbers() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let api = Api::new(&t).await;
        let gid = api.group("race").await;
        let pool = t.app().pool.clone();
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    store::pool_groups::allocate_sequence(
                        &pool,
                        gid,
                        "20261123",
                        SequenceKind::Child,
                    )
                    .await
                    .unwrap()
                })
            })
            .collect();
        let mut got = HashSet::new();
        for task in tasks {
            got.insert(task.await.unwrap());
        }
        assert_eq!(got, (1..=50).collect::<HashSet<i64>>());
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn preview_does_not_consume_sequence() {
    each_backend(|backend| async move {
        let clock = ManualClock::new(DAY1_MS);
        let t = TestApp::spawn_with(
            &backend,
            |c| c.child_email_domain = Some("kids.example.org".into()),
            clock,
        )
        .await;
        let api = Api::new(&t).await;
        let gid = api.group("pv").await;
        let path = format!("/api/admin/pool-groups/{gid}/preview?count=3");
        let a = api.get(&path).await;
        let b = api.get(&path).await;
        assert_eq!(a, b);
        assert_eq!(
            a,
            json!({
                "date": "20261123",
                "team_names": ["pv-20261123-001", "pv-20261123-002", "pv-20261123-003"],
                "child_names": ["pv-20261123-001", "pv-20261123-002", "pv-20261123-003"],
                "child_emails": ["pv-20261123-001@kids.example.org", "pv-20261123-002@kids.example.org", "pv-20261123-003@kids.example.org"],
            })
        );
        let pool = &t.app().pool;
        assert_eq!(
            store::pool_groups::last_sequence(pool, gid, "20261123", SequenceKind::Team).await.unwrap(),
            0
        );
        let next = store::pool_groups::allocate_sequence(pool, gid, "20261123", SequenceKind::Team)
            .await
            .unwrap();
        assert_eq!(next, 1, "preview used up nothing");
        let c = api.get(&path).await;
        assert_eq!(c["team_names"][0], "pv-20261123-002");
        let err = api
            .err(reqwest::Method::GET, &format!("/api/admin/pool-groups/{gid}/preview?count=0"), None)
            .await;
        assert_eq!(err.status, 400);
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn groups_list_duplicate_and_delete_rules() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let api = Api::new(&t).await;
        let gid = api.group("g1").await;
        let err = api
            .err(
                post(),
                "/api/admin/pool-groups",
                Some(json!({"name": "g1"})),
            )
            .await;
        assert_eq!(err.status, 409);
        let err = api
            .err(
                post(),
                "/api/admin/pool-groups",
                Some(json!({"name": "bad name"})),
            )
            .await;
        assert_eq!((err.status, err.code.as_str()), (400, "invalid_name"));
        api.mother(
            json!({"name": "m", "provider": "sim", "credential": SECRET, "pool_group_id": gid}),
        )
        .await;
        let list = api.get("/api/admin/pool-groups").await;
        assert_eq!(list["total"], 1);
        assert_eq!(list["items"][0]["mother_count"], 1);
        assert_eq!(list["items"][0]["settings"]["is_active"], true);
        let err = api
            .err(
                reqwest::Method::DELETE,
                &format!("/api/admin/pool-groups/{gid}"),
                None,
            )
            .await;
        assert_eq!(err.status, 409, "{}", err.message);
        let m = api.get("/api/admin/mothers").await;
        let mid = m["items"][0]["id"].as_i64().unwrap();
        api.ok(
            reqwest::Method::PATCH,
            &format!("/api/admin/mothers/{mid}"),
            Some(json!({"pool_group_id": null})),
        )
        .await;
        api.ok(
            reqwest::Method::DELETE,
            &format!("/api/admin/pool-groups/{gid}"),
            None,
        )
        .await;
        let err = api
            .err(
                reqwest::Method::GET,
                &format!("/api/admin/pool-groups/{gid}"),
                None,
            )
            .await;
        assert_eq!(err.status, 404);
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn creating_a_mother_creates_seat_limit_seats_and_checks_input() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let api = Api::new(&t).await;
        let m = api
            .mother(json!({"name": "seven", "provider": "sim", "credential": SECRET}))
            .await;
        assert_eq!(m["seats"].as_array().unwrap().len(), 7);
        assert!(m["seats"].as_array().unwrap().iter().all(|s| s["status"] == "free"));
        assert_eq!(m["usage"], json!({"seats_total": 7, "seats_used": 0, "seats_held": 0, "seats_free": 7, "teams": 1}));
        let m = api
            .mother(json!({"name": "three", "provider": "scim", "credential": SECRET, "seat_limit": 3,
                "provider_config": {"base_url": "https://scim.example.org", "owner_email": "admin@example.org"},
                "teams": [{"name": "a", "provider_team_id": "t-1"}, {"name": "b", "is_default": true}]}))
            .await;
        assert_eq!(m["seats"].as_array().unwrap().len(), 3);
        assert_eq!(m["teams"].as_array().unwrap().len(), 2);
        assert_eq!(m["teams"][1]["is_default"], true);
        assert_eq!(m["provider_config"]["base_url"], "https://scim.example.org");

        let err = api.err(post(), "/api/admin/mothers", Some(json!({"name": "seven", "provider": "sim", "credential": "x"}))).await;
        assert_eq!(err.status, 409);
        let cases = [
            (json!({"name": "p", "provider": "ldap", "credential": "x"}), "invalid_provider", "provider"),
            (json!({"name": "p", "provider": "sim", "credential": "x", "seat_limit": 5000}), "invalid_seat_limit", "seat_limit"),
            (json!({"name": "", "provider": "sim", "credential": "x"}), "invalid_name", "name"),
            (json!({"name": "p", "provider": "sim", "credential": "x", "pool_group_id": 999}), "invalid_pool_group", "pool_group_id"),
            (json!({"name": "p", "provider": "sim"}), "invalid_body", "credential"),
        ];
        for (body, code, field) in cases {
            let err = api.err(post(), "/api/admin/mothers", Some(body.clone())).await;
            assert_eq!((err.status, err.code.as_str()), (400, code), "{body}");
            assert!(err.message.contains(field), "{body}: {}", err.message);
        }
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn seat_limit_grow_shrink_and_delete_rules() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let api = Api::new(&t).await;
        let m = api
            .mother(json!({"name": "m", "provider": "sim", "credential": SECRET}))
            .await;
        let id = m["id"].as_i64().unwrap();
        let path = format!("/api/admin/mothers/{id}");
        let pool = &t.app().pool;
        for i in 0..3 {
            store::seats::mark_used(pool, id, &format!("c{i}@example.org"), 1)
                .await
                .unwrap();
        }
        let (_, grown) = api
            .ok(
                reqwest::Method::PATCH,
                &path,
                Some(json!({"seat_limit": 10})),
            )
            .await;
        assert_eq!(grown["usage"]["seats_total"], 10);
        assert_eq!(grown["usage"]["seats_free"], 7);
        let d = api.get(&path).await;
        assert_eq!(d["seats"].as_array().unwrap().len(), 10);
        let err = api
            .err(
                reqwest::Method::PATCH,
                &path,
                Some(json!({"seat_limit": 2})),
            )
            .await;
        assert_eq!(err.status, 409, "{}", err.message);
        assert!(err.message.contains('3'), "{}", err.message);
        let (_, shrunk) = api
            .ok(
                reqwest::Method::PATCH,
                &path,
                Some(json!({"seat_limit": 3, "status": "disabled", "notes": "n"})),
            )
            .await;
        assert_eq!(
            shrunk["usage"],
            json!({"seats_total": 3, "seats_used": 3, "seats_held": 0, "seats_free": 0, "teams": 1})
        );
        assert_eq!(shrunk["status"], "disabled");
        let d = api.get(&path).await;
        assert!(
            d["seats"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["status"] == "used")
        );
        let err = api
            .err(
                reqwest::Method::PATCH,
                &path,
                Some(json!({"status": "gone"})),
            )
            .await;
        assert_eq!((err.status, err.code.as_str()), (400, "invalid_status"));
        // No free seat left.
        assert!(
            store::seats::mark_used(pool, id, "x@example.org", 1)
                .await
                .is_err()
        );

        let err = api.err(reqwest::Method::DELETE, &path, None).await;
        assert_eq!(err.status, 409);
        assert!(err.message.contains("force"), "{}", err.message);
        api.ok(reqwest::Method::DELETE, &format!("{path}?force=true"), None)
            .await;
        let err = api.err(reqwest::Method::GET, &path, None).await;
        assert_eq!(err.status, 404);
        let free = api
            .mother(json!({"name": "free", "provider": "sim", "credential": SECRET}))
            .await;
        api.ok(
            reqwest::Method::DELETE,
            &format!("/api/admin/mothers/{}", free["id"]),
            None,
        )
        .await;
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn list_search_filter_and_pagination() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let api = Api::new(&t).await;
        for i in 0..12 {
            api.mother(
                json!({"name": format!("Alpha-{i:02}"), "provider": "sim", "credential": SECRET}),
            )
            .await;
        }
        api.mother(json!({"name": "beta_1", "provider": "sim", "credential": SECRET}))
            .await;
        let page = api.get("/api/admin/mothers?page=2&page_size=5").await;
        assert_eq!(page["total"], 13);
        assert_eq!(page["page"], 2);
        assert_eq!(page["items"].as_array().unwrap().len(), 5);
        assert_eq!(page["items"][0]["usage"]["seats_total"], 7);
        let found = api.get("/api/admin/mothers?search=alpha-1").await;
        assert_eq!(found["total"], 2, "case-insensitive: {found}");
        // `_` is literal in a search, not a wildcard.
        let found = api.get("/api/admin/mothers?search=a_1").await;
        assert_eq!(found["total"], 1, "{found}");
        let id = found["items"][0]["id"].as_i64().unwrap();
        api.ok(
            reqwest::Method::PATCH,
            &format!("/api/admin/mothers/{id}"),
            Some(json!({"status": "invalid"})),
        )
        .await;
        let invalid = api.get("/api/admin/mothers?status=invalid").await;
        assert_eq!(invalid["total"], 1);
        // The name index follows a rename.
        api.ok(
            reqwest::Method::PATCH,
            &format!("/api/admin/mothers/{id}"),
            Some(json!({"name": "Gamma-Renamed"})),
        )
        .await;
        assert_eq!(
            api.get("/api/admin/mothers?search=renamed").await["total"],
            1
        );
        assert_eq!(api.get("/api/admin/mothers?search=beta").await["total"], 0);
        for bad in ["status=weird", "page=0", "page_size=501", "page_size=x"] {
            let err = api
                .err(
                    reqwest::Method::GET,
                    &format!("/api/admin/mothers?{bad}"),
                    None,
                )
                .await;
            assert_eq!(err.status, 400, "{bad}");
        }
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn batch_validate_writes_nothing_and_import_takes_only_valid_rows() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let api = Api::new(&t).await;
        api.mother(json!({"name": "taken", "provider": "sim", "credential": SECRET}))
            .await;
        let rows = json!({"rows": [
            {"name": "ok1", "provider": "sim", "credential": SECRET},
            {"name": "bad", "provider": "nope", "credential": SECRET},
            {"name": "taken", "provider": "sim", "credential": SECRET},
            {"name": "ok2", "provider": "scim", "credential": SECRET, "seat_limit": 2,
                "provider_config": {"base_url": "https://scim.example.org/v2", "owner_email": "a@example.org"}},
            {"name": "ok2", "provider": "sim", "credential": SECRET},
            {"provider": "sim"},
        ]});
        let report = api
            .post("/api/admin/mothers/batch/validate", rows.clone())
            .await;
        assert_eq!(
            (
                report["total"].as_i64(),
                report["valid"].as_i64(),
                report["invalid"].as_i64(),
                report["imported"].as_i64()
            ),
            (Some(6), Some(2), Some(4), Some(0)),
            "{report}"
        );
        let errors = |r: &Value, i: usize| r["rows"][i]["errors"].to_string();
        assert!(errors(&report, 1).contains("provider"), "{report}");
        assert!(errors(&report, 2).contains("already exists"), "{report}");
        assert!(errors(&report, 4).contains("more than once"), "{report}");
        assert!(errors(&report, 5).contains("name"), "{report}");
        assert_eq!(report["rows"][0]["row"], 1);
        assert_eq!(
            api.get("/api/admin/mothers").await["total"],
            1,
            "validate wrote nothing"
        );

        let report = api.post("/api/admin/mothers/batch/import", rows).await;
        assert_eq!(report["imported"], 2, "{report}");
        assert!(report["rows"][0]["id"].is_i64());
        assert!(report["rows"][1]["id"].is_null());
        let list = api.get("/api/admin/mothers").await;
        assert_eq!(list["total"], 3);
        let err = api
            .err(
                post(),
                "/api/admin/mothers/batch/import",
                Some(json!({"rows": []})),
            )
            .await;
        assert_eq!(err.status, 400);
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn stats_and_quota_numbers() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let api = Api::new(&t).await;
        let g = api.group("q").await;
        let a = api
            .mother(
                json!({"name": "a", "provider": "sim", "credential": SECRET, "pool_group_id": g}),
            )
            .await;
        api.mother(json!({"name": "b", "provider": "sim", "credential": SECRET, "seat_limit": 3}))
            .await;
        let c = api
            .mother(
                json!({"name": "c", "provider": "sim", "credential": SECRET, "pool_group_id": g}),
            )
            .await;
        let pool = &t.app().pool;
        let aid = a["id"].as_i64().unwrap();
        store::seats::mark_used(pool, aid, "u1@example.org", 1)
            .await
            .unwrap();
        let seat = store::seats::mark_used(pool, aid, "u2@example.org", 1)
            .await
            .unwrap();
        store::seats::release(pool, seat.id, 2).await.unwrap();
        store::seats::mark_used(pool, aid, "u3@example.org", 1)
            .await
            .unwrap();
        api.ok(
            reqwest::Method::PATCH,
            &format!("/api/admin/mothers/{}", c["id"]),
            Some(json!({"status": "disabled"})),
        )
        .await;

        let stats = api.get("/api/admin/stats").await;
        assert_eq!(
            stats,
            json!({
                "mothers": {"total": 3, "active": 2, "invalid": 0, "disabled": 1},
                "seats": {"total": 17, "free": 15, "held": 0, "used": 2},
                "groups": 1, "children": 0,
                "codes": {"unused": 0, "reserved": 0, "used": 0, "expired": 0, "disabled": 0},
                "invites": {"pending": 0, "sent": 0, "accepted": 0, "failed": 0,
                    "cancelled": 0, "removed": 0}
            })
        );
        let quota = api.get("/api/admin/quota").await;
        assert_eq!(quota["overall"]["seats_total"], 10, "{quota}");
        assert_eq!(quota["overall"]["available"], 8, "{quota}");
        let groups = quota["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 2, "{quota}");
        let grouped = groups.iter().find(|l| l["pool_group_id"] == g).unwrap();
        assert_eq!(
            (
                grouped["available"].as_i64(),
                grouped["seats_used"].as_i64()
            ),
            (Some(5), Some(2))
        );
        assert_eq!(grouped["pool_group_name"], "q");
        let ungrouped = groups
            .iter()
            .find(|l| l["pool_group_id"].is_null())
            .unwrap();
        assert_eq!(ungrouped["available"], 3);
        t.stop().await;
    })
    .await;
}

/// The tallies that stats, quota and the list's total read always equal a recount of the rows,
/// whatever changed: new mothers, seats used, held and released, a resize, a move to another
/// group, a status change, children added, a forced delete (children go with the mother), and a
/// fold by housekeeping.
#[tokio::test]
async fn tallies_always_equal_a_recount() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let api = Api::new(&t).await;
        let pool = &t.app().pool;
        let check = |step: &'static str| async move {
            let tallied = (
                store::tallies::mothers(pool).await.unwrap(),
                store::tallies::count_children(pool).await.unwrap(),
            );
            let counted = store::tallies::recount(pool).await.unwrap();
            assert_eq!(tallied, counted, "after {step}");
            let all = store::mothers::MotherFilter::default();
            let (_, total) = store::mothers::list_with_usage(pool, &all, 1, 0)
                .await
                .unwrap();
            assert_eq!(
                total,
                counted.0.iter().map(|t| t.mothers).sum::<i64>(),
                "after {step}"
            );
        };
        check("nothing").await;
        let g1 = api.group("one").await;
        let g2 = api.group("two").await;
        let a = api
            .mother(
                json!({"name": "a", "provider": "sim", "credential": SECRET, "pool_group_id": g1}),
            )
            .await["id"]
            .as_i64()
            .unwrap();
        let b = api
            .mother(json!({"name": "b", "provider": "sim", "credential": SECRET, "seat_limit": 3}))
            .await["id"]
            .as_i64()
            .unwrap();
        let c = api
            .mother(
                json!({"name": "c", "provider": "sim", "credential": SECRET, "pool_group_id": g1}),
            )
            .await["id"]
            .as_i64()
            .unwrap();
        check("three mothers").await;
        store::seats::mark_used(pool, a, "u1@example.org", 1)
            .await
            .unwrap();
        let seat = store::seats::mark_used(pool, a, "u2@example.org", 1)
            .await
            .unwrap();
        store::seats::release(pool, seat.id, 2).await.unwrap();
        store::seats::mark_used(pool, b, "u3@example.org", 1)
            .await
            .unwrap();
        check("seats used and released").await;
        let patch = |id: i64, body: Value| {
            let api = &api;
            async move {
                api.ok(
                    reqwest::Method::PATCH,
                    &format!("/api/admin/mothers/{id}"),
                    Some(body),
                )
                .await;
            }
        };
        patch(a, json!({"seat_limit": 10})).await;
        check("a resize").await;
        patch(a, json!({"pool_group_id": g2})).await;
        check("a move to another group").await;
        patch(c, json!({"status": "disabled"})).await;
        patch(b, json!({"pool_group_id": g1, "status": "invalid"})).await;
        check("status changes").await;
        let detail = api.get(&format!("/api/admin/mothers/{b}")).await;
        let team = detail["teams"][0]["id"].as_i64().unwrap();
        let members: Vec<store::mothers::ChildInput> = (0..3)
            .map(|i| store::mothers::ChildInput {
                email: format!("m{i}@example.org"),
                name: format!("m{i}"),
                status: "active".into(),
            })
            .collect();
        store::mothers::sync_team_children(pool, b, team, &members, 3)
            .await
            .unwrap();
        check("children added").await;
        store::tallies::compact(pool).await.unwrap();
        check("a fold").await;
        api.ok(
            reqwest::Method::DELETE,
            &format!("/api/admin/mothers/{b}?force=true"),
            None,
        )
        .await;
        check("a forced delete").await;
        assert_eq!(store::tallies::count_children(pool).await.unwrap(), 0);
        store::tallies::compact(pool).await.unwrap();
        store::tallies::compact(pool).await.unwrap();
        check("two more folds").await;
        let stats = api.get("/api/admin/stats").await;
        assert_eq!(
            stats["mothers"],
            json!({"total": 2, "active": 1, "invalid": 0, "disabled": 1})
        );
        assert_eq!(
            stats["seats"],
            json!({"total": 17, "free": 16, "held": 0, "used": 1})
        );
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn credentials_never_appear_in_responses_logs_or_debug() {
    let logs = captured_logs();
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let api = Api::new(&t).await;
        let mut bodies = Vec::new();
        let m = api
            .mother(json!({"name": "secretive", "provider": "sim", "credential": SECRET}))
            .await;
        let id = m["id"].as_i64().unwrap();
        bodies.push(m.to_string());
        bodies.push(
            api.get(&format!("/api/admin/mothers/{id}"))
                .await
                .to_string(),
        );
        bodies.push(api.get("/api/admin/mothers").await.to_string());
        bodies.push(
            api.get("/api/admin/mothers?search=secret")
                .await
                .to_string(),
        );
        let (_, patched) = api
            .ok(
                reqwest::Method::PATCH,
                &format!("/api/admin/mothers/{id}"),
                Some(json!({"notes": "x"})),
            )
            .await;
        bodies.push(patched.to_string());
        let rotated = api
            .post(
                &format!("/api/admin/mothers/{id}/credential"),
                json!({"credential": format!("{SECRET}-2")}),
            )
            .await;
        bodies.push(rotated.to_string());
        bodies.push(
            api.post(
                "/api/admin/mothers/batch/validate",
                json!({"rows": [{"name": "v", "provider": "sim", "credential": SECRET}]}),
            )
            .await
            .to_string(),
        );
        bodies.push(
            api.post(
                "/api/admin/mothers/batch/import",
                json!({"rows": [{"name": "w", "provider": "bad", "credential": SECRET}]}),
            )
            .await
            .to_string(),
        );
        let sealed = store::mothers::credential_sealed(&t.app().pool, id)
            .await
            .unwrap();
        for body in &bodies {
            assert!(!body.contains(SECRET), "credential in a response: {body}");
            assert!(
                !body.contains(&sealed),
                "sealed credential in a response: {body}"
            );
            assert!(!body.contains("credential_sealed"), "{body}");
        }
        assert!(!sealed.contains(SECRET));
        // It is stored sealed, and opens to the rotated value.
        let opened = poolkeeper::service::mothers::open_credential(t.app().pool_ctx(), id)
            .await
            .unwrap();
        assert_eq!(opened.expose(), format!("{SECRET}-2"));
        let input: poolkeeper::domain::mothers::MotherInput =
            serde_json::from_value(json!({"name": "d", "provider": "sim", "credential": SECRET}))
                .unwrap();
        assert!(!format!("{input:?}").contains(SECRET));
        assert!(!format!("{:?}", input.check().unwrap()).contains(SECRET));
        assert!(!format!("{opened:?}").contains(SECRET));
        t.stop().await;
    })
    .await;
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    assert!(!text.is_empty(), "logs were captured");
    assert!(!text.contains(SECRET), "credential in the logs");
}

#[tokio::test]
async fn corrupted_sealed_value_is_a_clear_error_not_a_panic() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let api = Api::new(&t).await;
        let m = api
            .mother(json!({"name": "m", "provider": "sim", "credential": SECRET}))
            .await;
        let id = m["id"].as_i64().unwrap();
        let pool = &t.app().pool;
        let sealed = store::mothers::credential_sealed(pool, id).await.unwrap();
        let key_id = Keyring::key_id_of(&sealed).unwrap().to_string();
        let corrupted = format!("v1:{key_id}:{}", "A".repeat(80));
        store::mothers::set_credential(pool, id, &corrupted, 1)
            .await
            .unwrap();
        let err = poolkeeper::service::mothers::open_credential(t.app().pool_ctx(), id)
            .await
            .unwrap_err();
        assert_eq!(err.code, "credential_unreadable");
        assert!(
            err.message.contains(&key_id) && err.message.contains("corrupted"),
            "{}",
            err.message
        );
        store::mothers::set_credential(pool, id, "garbage", 1)
            .await
            .unwrap();
        let err = poolkeeper::service::mothers::open_credential(t.app().pool_ctx(), id)
            .await
            .unwrap_err();
        assert!(err.message.contains("malformed"), "{}", err.message);
        // The mother is still readable through the API.
        api.get(&format!("/api/admin/mothers/{id}")).await;
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn secrets_rotate_reseals_with_the_new_key_and_values_still_open() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let api = Api::new(&t).await;
        let mut ids = Vec::new();
        for i in 0..3 {
            let m = api
                .mother(json!({"name": format!("m{i}"), "provider": "sim", "credential": format!("{SECRET}-{i}")}))
                .await;
            ids.push(m["id"].as_i64().unwrap());
        }
        let pool = &t.app().pool;
        let old_text = std::fs::read_to_string(t.dbs.dir.path().join("secret.key")).unwrap();
        let old_id = t.app().keyring.current_key_id().to_string();
        let new_ring = Keyring::parse(&format!("{}\n{old_text}", Keyring::generate_key_text())).unwrap();
        assert_ne!(new_ring.current_key_id(), old_id);
        let report = poolkeeper::service::mothers::reseal_all(pool, &new_ring).await.unwrap();
        assert_eq!((report.resealed, report.already_current), (3, 0));
        assert!(report.failed.is_empty());
        for (i, id) in ids.iter().enumerate() {
            let sealed = store::mothers::credential_sealed(pool, *id).await.unwrap();
            assert_eq!(Keyring::key_id_of(&sealed), Some(new_ring.current_key_id()));
            assert_eq!(new_ring.open(&sealed).unwrap(), Credential::new(format!("{SECRET}-{i}")));
        }
        let again = poolkeeper::service::mothers::reseal_all(pool, &new_ring).await.unwrap();
        assert_eq!((again.resealed, again.already_current), (0, 3));
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn cli_import_mothers_from_csv_and_json_lines() {
    use std::process::Command;
    each_backend(|backend| async move {
        let dbs = common::TestDbs::new(&backend).await;
        let run = |args: &[&str]| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_poolkeeper"));
            cmd.current_dir(dbs.dir.path())
                .env("RUST_LOG", "warn")
                .env_remove("POOLKEEPER_SECRET_KEY")
                .arg("--data-dir")
                .arg(dbs.dir.path());
            if let Some(url) = &dbs.config.pool_database_url {
                cmd.arg("--pool-database-url").arg(url.expose());
            }
            if let Some(url) = &dbs.config.users_database_url {
                cmd.arg("--users-database-url").arg(url.expose());
            }
            let out = cmd.args(args).output().unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).to_string(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        };
        let csv = dbs.dir.path().join("mothers.csv");
        std::fs::write(
            &csv,
            format!(
                "name,provider,credential,seat_limit,notes,provider_config\n\
                 c1,sim,{SECRET},3,\"a, b\",\n\
                 c2,ldap,{SECRET},,,\n\
                 c3,scim,{SECRET},,,\"{{\"\"base_url\"\": \"\"https://scim.example.org/v2\"\", \"\"owner_email\"\": \"\"a@example.org\"\"}}\"\n\
                 c1,sim,{SECRET},,,\n"
            ),
        )
        .unwrap();
        let (code, out, err) = run(&["import", "mothers", csv.to_str().unwrap()]);
        assert_eq!(code, 1, "some rows were refused: {out}{err}");
        assert!(out.contains("imported 2") && out.contains("refused 2"), "{out}");
        assert!(out.contains("row 2") && out.contains("provider"), "{out}");
        assert!(!out.contains(SECRET) && !err.contains(SECRET));

        let jsonl = dbs.dir.path().join("more.data");
        std::fs::write(
            &jsonl,
            format!("{{\"name\": \"j1\", \"provider\": \"sim\", \"credential\": \"{SECRET}\", \"seat_limit\": 2}}\n\n{{\"name\": \"j2\", \"provider\": \"sim\", \"credential\": \"{SECRET}\"}}\n"),
        )
        .unwrap();
        let (code, out, err) = run(&["import", "mothers", jsonl.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("imported 2") && out.contains("refused 0"), "{out}");

        let (code, _, err) = run(&["import", "mothers", "/no/such/file.csv"]);
        assert_ne!(code, 0);
        assert!(err.contains("/no/such/file.csv"), "{err}");

        let (pool, _) = poolkeeper::server::open_databases(&dbs.config, false).await.unwrap();
        let (items, total) = store::mothers::list_with_usage(&pool, &Default::default(), 50, 0).await.unwrap();
        assert_eq!(total, 4);
        let c1 = items.iter().find(|m| m.name == "c1").unwrap();
        assert_eq!((c1.seat_limit, c1.notes.as_str()), (3, "a, b"));

        // `secrets rotate` from the CLI: a new key first in the key file, the old one after it.
        let key_file = dbs.dir.path().join("secret.key");
        let old = std::fs::read_to_string(&key_file).unwrap();
        std::fs::write(&key_file, format!("{}\n{old}", Keyring::generate_key_text())).unwrap();
        let (code, out, err) = run(&["secrets", "rotate"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("re-sealed 4"), "{out}");
        let ring = Keyring::parse(&std::fs::read_to_string(&key_file).unwrap()).unwrap();
        let sealed = store::mothers::credential_sealed(&pool, c1.id).await.unwrap();
        assert_eq!(Keyring::key_id_of(&sealed), Some(ring.current_key_id()));
        assert_eq!(ring.open(&sealed).unwrap().expose(), SECRET);
        pool.database().close().await;
    })
    .await;
}

#[tokio::test]
async fn web_pages_for_groups_and_mothers_with_csrf_and_inline_errors() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let (c, csrf) = t.login().await;
        let csrf = csrf.as_str();
        let form = |path: &str, fields: &[(&str, &str)]| {
            c.post(t.url(path))
                .header("origin", &t.base)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(url_encoded(fields))
        };
        let page = c.get(t.url("/pool-groups")).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.text().await.unwrap().contains("New group"));

        // Without the CSRF field: refused.
        let res = form("/pool-groups", &[("name", "web")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
        let res = form("/pool-groups", &[("csrf", csrf), ("name", "web")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let gid = res.url().path().rsplit('/').next().unwrap().to_string();
        let html = res.text().await.unwrap();
        assert!(
            html.contains("Naming settings") && html.contains("preview-error"),
            "no domain yet: preview explains"
        );

        let settings = format!("/pool-groups/{gid}/settings");
        let res = form(
            &settings,
            &[
                ("csrf", csrf),
                ("team_template", "{group}-{nope}"),
                ("child_name_template", "{group}-{seq3}"),
                ("child_email_template", "{group}-{seq3}@{domain}"),
                ("email_domain", "web.example.org"),
                ("is_active", "1"),
            ],
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 400);
        let html = res.text().await.unwrap();
        assert!(
            html.contains("settings-error") && html.contains("{nope}"),
            "inline error names the part"
        );
        assert!(
            html.contains("value=\"{group}-{nope}\""),
            "the form keeps what was typed"
        );
        let res = form(
            &settings,
            &[
                ("csrf", csrf),
                ("team_template", "{group}-{seq3}"),
                ("child_name_template", "{group}-{seq3}"),
                ("child_email_template", "{group}-{seq3}@{domain}"),
                ("email_domain", "web.example.org"),
                ("is_active", "1"),
            ],
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 200);
        let html = res.text().await.unwrap();
        assert!(
            html.contains("Settings saved.") && html.contains("web-001@web.example.org"),
            "preview shows names"
        );

        // A sim mother's credential is checked with the simulator (as an import does): make it
        // one the simulator knows.
        t.app()
            .providers
            .sim
            .put_org(
                &Credential::new(SECRET),
                poolkeeper::providers::sim::SimOrg::new("webmother", "owner@web.example", 4),
            )
            .unwrap();
        let res = form(
            "/mothers",
            &[
                ("csrf", csrf),
                ("name", "webmother"),
                ("provider", "sim"),
                ("credential", SECRET),
                ("seat_limit", "4"),
                ("pool_group_id", &gid),
            ],
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 200);
        let html = res.text().await.unwrap();
        assert!(html.contains("webmother") && html.contains("id=\"seats\""));
        assert!(!html.contains(SECRET));
        let res = form(
            "/mothers",
            &[
                ("csrf", csrf),
                ("name", "x"),
                ("provider", "ldap"),
                ("credential", SECRET),
            ],
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 400);
        let html = res.text().await.unwrap();
        assert!(html.contains("mother-error") && html.contains("provider"));
        assert!(!html.contains(SECRET), "the credential is not echoed back");

        let list = c
            .get(t.url("/mothers?search=WEB&status=active"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            list.contains("class=\"seatbar\"") && list.contains("webmother"),
            "usage bar per mother"
        );
        let rows = format!("name,provider,credential\nb1,sim,{SECRET}\nb2,nope,{SECRET}\n");
        let html = form(
            "/mothers/batch",
            &[("csrf", csrf), ("rows", &rows), ("action", "import")],
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
        assert!(
            html.contains("batch-summary") && html.contains("1 imported"),
            "{html}"
        );
        assert!(html.contains("provider must be"), "per-row error");
        assert!(!html.contains(SECRET), "import does not echo credentials");
        // Validate only, and text that does not parse: the pasted credentials are not shown again.
        let bad_rows = format!("name,provider,credential\n\"b3,sim,{SECRET}\n");
        for (rows, action) in [
            (&rows, "validate"),
            (&bad_rows, "validate"),
            (&bad_rows, "import"),
        ] {
            let html = form(
                "/mothers/batch",
                &[("csrf", csrf), ("rows", rows), ("action", action)],
            )
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
            assert!(html.contains("batch-import"), "{html}");
            assert!(!html.contains(SECRET), "{action} echoed the pasted rows");
        }
        t.stop().await;
    })
    .await;
}

/// The sync and a mother's creation read a group through `name_and_settings`, which skips the
/// count of the group's mothers (issue 18: the count grew with the group, once per mother synced);
/// it must return what the full read does.
#[tokio::test]
async fn a_groups_name_and_settings_match_the_full_read() {
    each_backend(|backend| async move {
        let t = TestApp::spawn_with(
            &backend,
            |c| c.child_email_domain = Some("kids.example.org".into()),
            ManualClock::new(DAY1_MS),
        )
        .await;
        let api = Api::new(&t).await;
        let gid = api
            .post(
                "/api/admin/pool-groups",
                json!({"name": "settings", "auto_invite": true}),
            )
            .await["id"]
            .as_i64()
            .unwrap();
        let pool = &t.app().pool;
        let mut changed = store::pool_groups::get(pool, gid).await.unwrap().settings;
        changed.team_template = "{group}-t-{seq3}".into();
        changed.email_domain = Some("settings.example.org".into());
        store::pool_groups::update_settings(pool, gid, &changed, DAY1_MS)
            .await
            .unwrap();
        // A mother's creation names her team by the group's settings, read without the count.
        for (name, team) in [("s1", "settings-t-001"), ("s2", "settings-t-002")] {
            let m = api
                .mother(
                    json!({"name": name, "provider": "sim", "credential": SECRET,
                               "pool_group_id": gid}),
                )
                .await;
            assert_eq!(m["teams"][0]["name"], team);
        }
        let full = store::pool_groups::get(pool, gid).await.unwrap();
        assert_eq!(full.mother_count, 2);
        assert_eq!(full.settings.team_template, "{group}-t-{seq3}");
        assert!(full.settings.auto_invite);
        let (name, settings) = store::pool_groups::name_and_settings(pool, gid)
            .await
            .unwrap();
        assert_eq!(name, full.name);
        assert_eq!(settings, full.settings);
        assert!(matches!(
            store::pool_groups::name_and_settings(pool, gid + 1000).await,
            Err(store::StoreError::NotFound)
        ));
        t.stop().await;
    })
    .await;
}
