//! Redeem codes against the simulated provider: one winner per code, no overselling under a burst,
//! one answer for every bad code, the per-address limit, a revoked mother skipped, the generation
//! quota, and reservations left by a crash settled by maintenance.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Backend, TestApp, each_backend};
use poolkeeper::auth::Scope;
use poolkeeper::clock;
use poolkeeper::crypto::Credential;
use poolkeeper::providers::sim::SimOrg;
use poolkeeper::store;
use poolkeeper::store::redeem_codes::NewCode;
use serde_json::{Value, json};

struct Pool {
    t: TestApp,
    token: String,
}

impl Pool {
    /// A server whose redeem limit is `per_hour` per address.
    async fn spawn(backend: &Backend, per_hour: u32) -> Self {
        let t = TestApp::spawn_with(
            backend,
            |c| {
                c.redeem.per_hour = per_hour;
                c.child_email_domain = Some("kids.test".into());
                c.jobs.poll_interval_ms = 20;
            },
            clock::system(),
        )
        .await;
        let token = t.token("redeem-test", Scope::Admin).await;
        Self { t, token }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.t.send_json(&self.token, method, path, body).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn group(&self, name: &str) -> i64 {
        let (status, body) = self
            .post("/api/admin/pool-groups", json!({"name": name}))
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_i64().unwrap()
    }

    /// A sim mother of `seats` seats in `group` (her team has one more, for the owner), synced
    /// once so her team is linked.
    async fn mother(&self, name: &str, group: i64, seats: i64) -> i64 {
        let credential = format!("cred-{name}");
        let org = SimOrg::new(name, &format!("owner@{name}.test"), seats + 1);
        self.t
            .app()
            .providers
            .sim
            .put_org(&Credential::new(&credential), org)
            .unwrap();
        let (status, body) = self
            .post(
                "/api/admin/mothers",
                json!({"name": name, "provider": "sim", "credential": credential,
                    "seat_limit": seats, "pool_group_id": group}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_i64().unwrap();
        let (status, body) = self
            .post(
                &format!("/api/admin/pool-groups/{group}/sync/mother/{id}"),
                json!({}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        let job = self
            .t
            .job_ended(body["job_id"].as_str().unwrap(), Duration::from_secs(15))
            .await;
        assert_eq!(job.status, "succeeded", "{:?}", job.last_error);
        id
    }

    fn sim_org(&self, mother: &str) -> SimOrg {
        self.t
            .app()
            .providers
            .sim
            .org(&Credential::new(format!("cred-{mother}")))
            .unwrap()
            .unwrap()
    }

    async fn codes(&self, count: i64) -> Vec<String> {
        let (status, body) = self.post("/api/admin/codes", json!({"count": count})).await;
        assert_eq!(status, 201, "{body}");
        body["codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect()
    }

    async fn redeem(&self, code: &str, email: &str) -> (u16, Value) {
        let res = self
            .t
            .client
            .post(self.t.url("/api/redeem"))
            .json(&json!({"code": code, "email": email}))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn mother_row(&self, id: i64) -> store::mothers::Mother {
        store::mothers::get(&self.t.app().pool, id).await.unwrap()
    }

    async fn code_statuses(&self) -> std::collections::BTreeMap<String, i64> {
        store::redeem_codes::count_by_status(&self.t.app().users)
            .await
            .unwrap()
            .into_iter()
            .collect()
    }
}

#[tokio::test]
async fn five_redeems_of_one_code_have_one_winner() {
    each_backend(|backend| async move {
        let p = Pool::spawn(&backend, 1000).await;
        let group = p.group("g").await;
        let mother = p.mother("m1", group, 5).await;
        let code = p.codes(1).await.remove(0);
        let p = Arc::new(p);
        let tasks: Vec<_> = (0..5)
            .map(|i| {
                let p = p.clone();
                let code = code.clone();
                tokio::spawn(async move { p.redeem(&code, &format!("user{i}@x.test")).await })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            let (status, body) = t.await.unwrap();
            match status {
                200 => ok += 1,
                400 => assert_eq!(body["error"]["code"], "invalid_code", "{body}"),
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!(ok, 1);
        let m = p.mother_row(mother).await;
        assert_eq!((m.usage.seats_used, m.usage.seats_held), (1, 0));
        assert_eq!(p.code_statuses().await.get("used"), Some(&1));
        Arc::try_unwrap(p).ok().unwrap().t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_burst_of_redeems_never_oversells() {
    each_backend(|backend| async move {
        const SEATS_EACH: i64 = 50;
        const CODES: usize = 1000;
        let p = Pool::spawn(&backend, 100_000).await;
        let group = p.group("g").await;
        let mut mothers = Vec::new();
        for name in ["m1", "m2", "m3", "m4"] {
            mothers.push(p.mother(name, group, SEATS_EACH).await);
        }
        // More codes than seats cannot be generated through the API (the quota), so they are
        // written straight to the store, as codes from before seats were removed would be.
        let codes: Vec<String> = (0..CODES).map(|i| format!("BURST{i:06}")).collect();
        let rows: Vec<NewCode> = codes
            .iter()
            .map(|c| NewCode {
                code_hash: poolkeeper::auth::token_hash(c),
                prefix: c[..6].to_string(),
            })
            .collect();
        store::redeem_codes::insert_batch(&p.t.app().users, &rows, "burst", None, None, 0)
            .await
            .unwrap();

        let p = Arc::new(p);
        let limit = Arc::new(tokio::sync::Semaphore::new(100));
        let tasks: Vec<_> = codes
            .iter()
            .enumerate()
            .map(|(i, code)| {
                let (p, limit, code) = (p.clone(), limit.clone(), code.clone());
                tokio::spawn(async move {
                    let _permit = limit.acquire().await.unwrap();
                    p.redeem(&code, &format!("burst{i}@x.test")).await
                })
            })
            .collect();
        let (mut invited, mut no_seat) = (0, 0);
        for t in tasks {
            let (status, body) = t.await.unwrap();
            match (status, body["error"]["code"].as_str()) {
                (200, _) => invited += 1,
                (503, Some("no_seat_available")) => no_seat += 1,
                other => panic!("unexpected {other:?}: {body}"),
            }
        }
        assert_eq!((invited, no_seat), (200, 800));
        let statuses = p.code_statuses().await;
        assert_eq!(statuses.get("used"), Some(&200), "{statuses:?}");
        assert_eq!(statuses.get("unused"), Some(&800), "{statuses:?}");
        for (id, name) in mothers.iter().zip(["m1", "m2", "m3", "m4"]) {
            let m = p.mother_row(*id).await;
            assert_eq!(
                (m.usage.seats_used, m.usage.seats_held),
                (SEATS_EACH, 0),
                "{name}"
            );
            let invited = p.sim_org(name).invites_sent as i64;
            assert_eq!(invited, SEATS_EACH, "{name} at the provider");
        }
        Arc::try_unwrap(p).ok().unwrap().t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bad_codes_get_one_answer_and_a_repeat_gets_the_same_seat() {
    each_backend(|backend| async move {
        let p = Pool::spawn(&backend, 1000).await;
        let group = p.group("g").await;
        let mother = p.mother("m1", group, 3).await;
        let code = p.codes(1).await.remove(0);

        for bad in ["NOSUCHCODE123", "short", "has-dash-1234"] {
            let (status, body) = p.redeem(bad, "a@x.test").await;
            assert_eq!(status, 400, "{bad}: {body}");
            assert_eq!(body["error"]["code"], "invalid_code");
        }
        let (status, body) = p.redeem(&code, "not-an-address").await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], "invalid_email");

        let (status, first) = p.redeem(&code, "a@x.test").await;
        assert_eq!(status, 200, "{first}");
        assert_eq!(first["status"], "invited");
        // The same address again: the same answer, no second seat.
        let (status, again) = p.redeem(&code, "A@x.test").await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again, first);
        assert_eq!(p.mother_row(mother).await.usage.seats_used, 1);
        // Another address with a used code: the same answer as an unknown code.
        let (status, body) = p.redeem(&code, "b@x.test").await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], "invalid_code");

        // Disabled codes cannot be redeemed either.
        let other = p.codes(1).await.remove(0);
        let (status, listed) = p
            .send(reqwest::Method::GET, "/api/admin/codes?status=unused", None)
            .await;
        assert_eq!(status, 200);
        assert!(
            !listed.to_string().contains(&other),
            "no plaintext in lists"
        );
        let id = listed["items"][0]["id"].as_i64().unwrap();
        let (status, body) = p
            .post("/api/admin/codes/disable", json!({"ids": [id]}))
            .await;
        assert_eq!((status, body["disabled"].as_i64()), (200, Some(1)));
        let (status, body) = p.redeem(&other, "c@x.test").await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_code"))
        );
        p.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_sixth_redeem_from_one_address_in_an_hour_is_refused() {
    each_backend(|backend| async move {
        let p = Pool::spawn(&backend, 5).await;
        for i in 0..5 {
            let (status, _) = p.redeem("NOSUCHCODE123", &format!("u{i}@x.test")).await;
            assert_eq!(status, 400);
        }
        let res =
            p.t.client
                .post(p.t.url("/api/redeem"))
                .json(&json!({"code": "NOSUCHCODE123", "email": "u6@x.test"}))
                .send()
                .await
                .unwrap();
        assert_eq!(res.status(), 429);
        let retry: u64 = res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=3600).contains(&retry), "{retry}");
        p.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_revoked_mother_is_marked_invalid_and_the_redeem_lands_on_the_next() {
    each_backend(|backend| async move {
        let p = Pool::spawn(&backend, 1000).await;
        let group = p.group("g").await;
        // The fuller mother is tried first: give m1 more seats in use.
        let m1 = p.mother("m1", group, 4).await;
        let m2 = p.mother("m2", group, 4).await;
        let code = p.codes(2).await;
        let (status, _) = p.redeem(&code[0], "first@x.test").await;
        assert_eq!(status, 200);
        let (first, second) = if p.mother_row(m1).await.usage.seats_used == 1 {
            (("m1", m1), ("m2", m2))
        } else {
            (("m2", m2), ("m1", m1))
        };
        p.t.app()
            .providers
            .sim
            .update_org(&Credential::new(format!("cred-{}", first.0)), |o| {
                o.faults.revoked = true
            })
            .unwrap();
        let (status, body) = p.redeem(&code[1], "second@x.test").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(p.mother_row(first.1).await.status, "invalid");
        let next = p.mother_row(second.1).await;
        assert_eq!((next.usage.seats_used, next.usage.seats_held), (1, 0));
        assert_eq!(p.mother_row(first.1).await.usage.seats_held, 0);
        assert!(
            p.sim_org(second.0).teams[0]
                .members
                .iter()
                .any(|m| m.email == "second@x.test")
        );
        p.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn generation_stays_within_the_free_seats() {
    each_backend(|backend| async move {
        let p = Pool::spawn(&backend, 1000).await;
        let group = p.group("g").await;
        p.mother("m1", group, 3).await;
        let (status, quota) = p
            .send(reqwest::Method::GET, "/api/admin/codes/quota", None)
            .await;
        assert_eq!(status, 200);
        assert_eq!(quota["available"], 3);
        p.codes(2).await;
        let (status, body) = p.post("/api/admin/codes", json!({"count": 2})).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"]["code"], "insufficient_seats");
        for (bad, code) in [
            (json!({"count": 0}), "invalid_count"),
            (json!({"count": 1, "prefix": "a-b"}), "invalid_prefix"),
            (json!({"count": 1, "expires_at": 1}), "invalid_expires_at"),
        ] {
            let (status, body) = p.post("/api/admin/codes", bad.clone()).await;
            assert_eq!(status, 400, "{bad}: {body}");
            assert_eq!(body["error"]["code"], code);
        }
        let (status, _) = p
            .post(
                "/api/admin/codes",
                json!({"count": 1, "pool_group_id": 999}),
            )
            .await;
        assert_eq!(status, 404);
        // Generated codes are well formed and distinct.
        let one = p.codes(1).await.remove(0);
        assert!(one.len() >= 16 && one.chars().all(|c| c.is_ascii_alphanumeric()));
        p.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn maintenance_settles_what_an_interrupted_redeem_left() {
    each_backend(|backend| async move {
        let p = Pool::spawn(&backend, 1000).await;
        let group = p.group("g").await;
        let mother = p.mother("m1", group, 2).await;
        let codes = p.codes(2).await;
        let app = p.t.app();
        let now = app.clock.now_ms();
        // A redeem that reserved its code and held a seat, then died before the provider call.
        let hash = poolkeeper::auth::token_hash(&codes[0]);
        assert!(
            store::redeem_codes::reserve(&app.users, &hash, "x@x.test", now - 1, now)
                .await
                .unwrap()
                .is_some()
        );
        let hold = store::seats::hold_for_redeem(&app.pool, None, &[], "x@x.test", now - 1, now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hold.seat.mother_id, mother);
        // A second one that got its invite out, then died before marking the code used.
        let hash2 = poolkeeper::auth::token_hash(&codes[1]);
        let reserved2 = store::redeem_codes::reserve(&app.users, &hash2, "y@x.test", now - 1, now)
            .await
            .unwrap()
            .unwrap();
        let invite = store::invites::insert(
            &app.users,
            &store::invites::NewInvite {
                email: "y@x.test",
                code_id: Some(reserved2.id),
                mother_id: mother,
                team_id: hold.team_id,
                seat_id: None,
            },
            now,
        )
        .await
        .unwrap();
        store::invites::finish(&app.users, invite, "sent", None, now)
            .await
            .unwrap();

        let (used, unused) = poolkeeper::service::redeem::settle_stale(app)
            .await
            .unwrap();
        assert_eq!((used, unused), (1, 1));
        assert_eq!(
            store::seats::expire_held(&app.pool, app.clock.now_ms())
                .await
                .unwrap(),
            1
        );
        let statuses = p.code_statuses().await;
        assert_eq!(statuses.get("unused"), Some(&1), "{statuses:?}");
        assert_eq!(statuses.get("used"), Some(&1), "{statuses:?}");
        assert_eq!(p.mother_row(mother).await.usage.seats_held, 0);
        // The returned code redeems normally.
        let (status, body) = p.redeem(&codes[0], "x@x.test").await;
        assert_eq!(status, 200, "{body}");
        p.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_public_page_redeems_without_javascript_and_shows_nothing_of_the_admin() {
    each_backend(|backend| async move {
        let p = Pool::spawn(&backend, 1000).await;
        let group = p.group("g").await;
        p.mother("m1", group, 2).await;
        let code = p.codes(1).await.remove(0);

        let res = p.t.client.get(p.t.url("/redeem")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let html = res.text().await.unwrap();
        assert!(html.contains(r#"<form method="post" action="/redeem">"#));
        assert!(!html.contains("<script"), "works without JavaScript");
        for admin in ["/mothers", "/jobs", "/pool-groups", "/logout"] {
            assert!(
                !html.contains(admin),
                "{admin} reachable from the public page"
            );
        }

        let post = |fields: Vec<(&'static str, String)>| {
            let p = &p;
            async move {
                let fields: Vec<(&str, &str)> =
                    fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let res =
                    p.t.client
                        .post(p.t.url("/redeem"))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(common::url_encoded(&fields))
                        .send()
                        .await
                        .unwrap();
                (res.status().as_u16(), res.text().await.unwrap())
            }
        };
        let (status, html) = post(vec![
            ("code", "NOSUCHCODE123".into()),
            ("email", "a@x.test".into()),
        ])
        .await;
        assert_eq!(status, 400);
        assert!(html.contains("This code cannot be redeemed"), "{html}");

        let (status, html) = post(vec![("code", code.clone()), ("email", "<b>@x".into())]).await;
        assert_eq!(status, 400);
        assert!(html.contains("email address does not look right"), "{html}");
        assert!(!html.contains("<b>@x"), "input is escaped");

        let (status, html) = post(vec![("code", code), ("email", "a@x.test".into())]).await;
        assert_eq!(status, 200, "{html}");
        assert!(html.contains(r#"id="redeem-done""#), "{html}");
        assert!(html.contains("a@x.test"));
        p.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_invite_can_be_resent_by_its_address_only_and_is_listed() {
    each_backend(|backend| async move {
        let p = Pool::spawn(&backend, 1000).await;
        let group = p.group("g").await;
        let mother = p.mother("m1", group, 2).await;
        let code = p.codes(1).await.remove(0);
        let (status, _) = p.redeem(&code, "a@x.test").await;
        assert_eq!(status, 200);

        let resend = |email: &'static str| {
            let (p, code) = (&p, code.clone());
            async move {
                let res =
                    p.t.client
                        .post(p.t.url("/api/redeem/resend"))
                        .json(&json!({"code": code, "email": email}))
                        .send()
                        .await
                        .unwrap();
                (
                    res.status().as_u16(),
                    res.json::<Value>().await.unwrap_or(Value::Null),
                )
            }
        };
        let (status, body) = resend("a@x.test").await;
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("resent")),
            "{body}"
        );
        let (status, body) = resend("b@x.test").await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_code"))
        );
        let (status, _) = resend("a@x.test").await;
        assert_eq!(status, 200);
        // The fourth resend from this address within the hour.
        let (status, _) = resend("a@x.test").await;
        assert_eq!(status, 429);

        let (status, list) = p
            .send(
                reqwest::Method::GET,
                &format!("/api/admin/invites?status=sent&mother_id={mother}&email=A@X"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["total"], 1, "{list}");
        let invite = &list["items"][0];
        assert_eq!(invite["email"], "a@x.test");
        assert_eq!(invite["attempts"], 3, "one invite and two resends");
        let (status, body) = p
            .send(
                reqwest::Method::GET,
                "/api/admin/invites?status=bogus",
                None,
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_status"))
        );
        p.t.stop().await;
    })
    .await;
}
