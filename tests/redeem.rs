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
        self.codes_in(None, count).await
    }

    /// `count` new codes of `group` (of any group when `None`).
    async fn codes_in(&self, group: Option<i64>, count: i64) -> Vec<String> {
        let (status, body) = self
            .post(
                "/api/admin/codes",
                json!({"count": count, "pool_group_id": group}),
            )
            .await;
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

/// A burst is placed as the same redeems one after another would be (on SQLite they are held
/// together, in batches): the fullest mother of the code's group first, filled to her limit, then
/// the next, lowest-numbered seats first; a code of another group only in its own group.
#[tokio::test]
async fn a_burst_fills_the_fullest_mother_of_each_group_first() {
    each_backend(|backend| async move {
        let p = Arc::new(Pool::spawn(&backend, 100_000).await);
        let (g, h) = (p.group("g").await, p.group("h").await);
        let mut in_g = Vec::new();
        for name in ["m1", "m2", "m3"] {
            in_g.push(p.mother(name, g, 10).await);
        }
        let in_h = p.mother("m4", h, 5).await;
        let g_codes = p.codes_in(Some(g), 12).await;
        let h_codes = p.codes_in(Some(h), 3).await;

        // One at a time first: every mother empty, the first (lowest id) takes them.
        for (i, code) in g_codes[..4].iter().enumerate() {
            let (status, body) = p.redeem(code, &format!("one{i}@x.test")).await;
            assert_eq!(status, 200, "{body}");
        }
        // Then a burst over both groups at once.
        let burst: Vec<_> = g_codes[4..]
            .iter()
            .chain(&h_codes)
            .enumerate()
            .map(|(i, code)| {
                let (p, code) = (p.clone(), code.clone());
                tokio::spawn(async move { p.redeem(&code, &format!("burst{i}@x.test")).await })
            })
            .collect();
        for task in burst {
            let (status, body) = task.await.unwrap();
            assert_eq!(status, 200, "{body}");
        }

        let used = |id: i64| {
            let p = p.clone();
            async move {
                let detail = store::mothers::get_detail(&p.t.app().pool, id)
                    .await
                    .unwrap();
                assert_eq!(detail.mother.usage.seats_held, 0);
                let mut seats: Vec<i64> = detail
                    .seats
                    .iter()
                    .filter(|s| s.status == "used")
                    .map(|s| s.seat_no)
                    .collect();
                seats.sort_unstable();
                assert_eq!(seats.len() as i64, detail.mother.usage.seats_used);
                seats
            }
        };
        assert_eq!(
            used(in_g[0]).await,
            (1..=10).collect::<Vec<_>>(),
            "m1, the fullest, filled"
        );
        assert_eq!(
            used(in_g[1]).await,
            vec![1, 2],
            "then m2, lowest seats first"
        );
        assert!(used(in_g[2]).await.is_empty(), "m3 untouched");
        assert_eq!(used(in_h).await, vec![1, 2, 3], "group h's codes in h only");
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

/// Writes `count` codes of batch `batch` straight to the store (past the quota, as codes from
/// before seats were removed would be); returns their ids, lowest first.
async fn stored_batch(p: &Pool, batch: &str, count: usize) -> Vec<i64> {
    let rows: Vec<NewCode> = (0..count)
        .map(|i| {
            let code = format!("{batch}{i:07}");
            NewCode {
                code_hash: poolkeeper::auth::token_hash(&code),
                prefix: code[..6].to_string(),
            }
        })
        .collect();
    let users = &p.t.app().users;
    store::redeem_codes::insert_batch(users, &rows, batch, None, None, 0)
        .await
        .unwrap();
    let filter = store::redeem_codes::CodeFilter {
        batch_id: Some(batch.to_string()),
        ..Default::default()
    };
    let (codes, total) = store::redeem_codes::list(users, &filter, 10_000, 0)
        .await
        .unwrap();
    assert_eq!(total, count as i64);
    let mut ids: Vec<i64> = codes.iter().map(|c| c.id).collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn disabling_more_than_a_thousand_codes_runs_as_a_job_and_fewer_at_once() {
    each_backend(|backend| async move {
        let p = Pool::spawn(&backend, 1000).await;
        let small = stored_batch(&p, "small", 10).await;
        let big = stored_batch(&p, "bigids", 1500).await;
        stored_batch(&p, "bigbatch", 1100).await;

        // Small sets: done in the request, 200 with the count.
        let (status, body) = p
            .post("/api/admin/codes/disable", json!({"ids": &small[..4]}))
            .await;
        assert_eq!((status, &body), (200, &json!({"disabled": 4})));
        let (status, body) = p
            .post("/api/admin/codes/disable", json!({"batch_id": "small"}))
            .await;
        assert_eq!(
            (status, &body),
            (200, &json!({"disabled": 6})),
            "the rest of the batch"
        );

        // 1,200 ids: a codes_disable job, 202 with its id.
        let (status, body) = p
            .post("/api/admin/codes/disable", json!({"ids": &big[..1200]}))
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["codes"], 1200);
        let job =
            p.t.job_ended(body["job_id"].as_str().unwrap(), Duration::from_secs(30))
                .await;
        assert_eq!(job.job_type, "codes_disable");
        assert_eq!(job.status, "succeeded", "{:?}", job.last_error);
        let result: Value = serde_json::from_str(job.result.as_deref().unwrap()).unwrap();
        assert_eq!(result["disabled"], 1200);
        // The job knows who queued it.
        let queued_by = poolkeeper::service::audit::job_actor(&p.t.app().users, &job.id)
            .await
            .unwrap();
        assert!(queued_by.is_some(), "no actor recorded for {}", job.id);

        // A batch of 1,100 unused codes: a job too.
        let (status, body) = p
            .post("/api/admin/codes/disable", json!({"batch_id": "bigbatch"}))
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["codes"], 1100);
        let job =
            p.t.job_ended(body["job_id"].as_str().unwrap(), Duration::from_secs(30))
                .await;
        assert_eq!(job.status, "succeeded", "{:?}", job.last_error);

        let statuses = p.code_statuses().await;
        assert_eq!(
            statuses.get("disabled"),
            Some(&(10 + 1200 + 1100)),
            "{statuses:?}"
        );
        assert_eq!(statuses.get("unused"), Some(&300), "{statuses:?}");
        // The 300 left of `bigids` are now a batch of fewer than 1,000: done at once.
        let (status, body) = p
            .post("/api/admin/codes/disable", json!({"batch_id": "bigids"}))
            .await;
        assert_eq!((status, &body), (200, &json!({"disabled": 300})));

        for bad in [
            json!({}),
            json!({"ids": []}),
            json!({"ids": [1], "batch_id": "small"}),
            json!({"ids": vec![1; 100_001]}),
        ] {
            let (status, body) = p.post("/api/admin/codes/disable", bad).await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(body["error"]["code"], "invalid_selection");
        }
        p.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn new_codes_download_as_csv_through_the_api() {
    each_backend(|backend| async move {
        let p = Pool::spawn(&backend, 1000).await;
        let group = p.group("g").await;
        p.mother("m1", group, 10).await;
        let generate = |query: &'static str, accept: &'static str| {
            p.t.client
                .post(p.t.url(&format!("/api/admin/codes{query}")))
                .bearer_auth(&p.token)
                .header("accept", accept)
                .json(&json!({"count": 2, "prefix": "CSV"}))
                .send()
        };
        for (query, accept) in [("?format=csv", "application/json"), ("", "text/csv")] {
            let res = generate(query, accept).await.unwrap();
            assert_eq!(res.status(), 201);
            assert!(
                res.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/csv")
            );
            let disposition = res.headers()["content-disposition"].to_str().unwrap();
            assert!(
                disposition.starts_with("attachment; filename=\"codes-"),
                "{disposition}"
            );
            let text = res.text().await.unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines[0], "code,batch_id,expires_at,pool_group_id");
            assert_eq!(lines.len(), 3, "{text}");
            let code = lines[1].split(',').next().unwrap();
            assert!(code.starts_with("CSV") && code.len() >= 16, "{code}");
            // A code from the file redeems.
            let (status, body) = p.redeem(code, &format!("csv{}@x.test", query.len())).await;
            assert_eq!(status, 200, "{body}");
        }
        // JSON stays the default, and an unknown format is named.
        let res = generate("", "application/json").await.unwrap();
        assert_eq!(res.status(), 201);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["codes"].as_array().unwrap().len(), 2);
        let res = generate("?format=xml", "application/json").await.unwrap();
        assert_eq!(res.status(), 400);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_query");

        // The OpenAPI document names both answers of generation and of disabling.
        let doc: Value =
            p.t.client
                .get(p.t.url("/api/openapi.json"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        let created = &doc["paths"]["/api/admin/codes"]["post"]["responses"]["201"]["content"];
        assert!(
            created.get("text/csv").is_some() && created.get("application/json").is_some(),
            "{created}"
        );
        let disable = &doc["paths"]["/api/admin/codes/disable"]["post"]["responses"];
        assert!(
            disable.get("200").is_some() && disable.get("202").is_some(),
            "{disable}"
        );
        p.t.stop().await;
    })
    .await;
}

/// The text between `start` and the next `end` after it, for each occurrence.
fn all_between<'a>(html: &'a str, start: &str, end: &str) -> Vec<&'a str> {
    html.split(start)
        .skip(1)
        .filter_map(|rest| rest.split(end).next())
        .collect()
}

#[tokio::test]
async fn the_codes_page_shows_a_batch_once_downloads_it_once_and_disables_after_asking() {
    each_backend(|backend| async move {
        let p = Pool::spawn(&backend, 1000).await;
        let group = p.group("g").await;
        p.mother("m1", group, 5).await;
        let (c, csrf) = p.t.login_without_redirects().await;
        let form = |path: &str, fields: &[(&str, &str)]| {
            c.post(p.t.url(path))
                .header("origin", &p.t.base)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(common::url_encoded(fields))
        };
        let get = |path: String| c.get(p.t.url(&path)).send();

        let page = get("/codes".into()).await.unwrap().text().await.unwrap();
        assert!(page.contains(r#"id="quota-available">5<"#), "{page}");
        assert!(page.contains(r#"id="group-quota-"#), "a line per group");

        // Without the CSRF token nothing is generated.
        let res = form("/codes/generate", &[("count", "3")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
        let res = form(
            "/codes/generate",
            &[
                ("csrf", &csrf),
                ("count", "3"),
                ("prefix", "UI"),
                ("expires_at", "2099-01-01T00:00"),
            ],
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 303);
        let new_page = res.headers()["location"].to_str().unwrap().to_string();
        assert!(new_page.starts_with("/codes/new/"), "{new_page}");

        // Shown once.
        let res = get(new_page.clone()).await.unwrap();
        assert_eq!(res.status(), 200);
        let html = res.text().await.unwrap();
        let shown: Vec<String> = all_between(&html, "<li><code>", "</code>")
            .into_iter()
            .map(str::to_string)
            .collect();
        assert_eq!(shown.len(), 3, "{html}");
        assert!(shown.iter().all(|c| c.starts_with("UI") && c.len() >= 16));
        let res = get(new_page.clone()).await.unwrap();
        assert_eq!(res.status(), 410);
        let again = res.text().await.unwrap();
        assert!(shown.iter().all(|code| !again.contains(code.as_str())));

        // Downloaded once, the same codes.
        let res = get(format!("{new_page}/csv")).await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(
            res.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .contains("codes-")
        );
        let csv = res.text().await.unwrap();
        let in_csv: Vec<&str> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap())
            .collect();
        assert_eq!(in_csv, shown.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            csv.lines().nth(1).unwrap().contains("2099-01-01T00:00:00Z"),
            "{csv}"
        );
        assert_eq!(get(format!("{new_page}/csv")).await.unwrap().status(), 410);
        // No list shows a plaintext code.
        let page = get("/codes".into()).await.unwrap().text().await.unwrap();
        assert!(shown.iter().all(|code| !page.contains(code.as_str())));
        assert!(page.contains(r#"id="quota-available">2<"#), "{page}");
        assert!(page.contains("3 code(s) match"), "{page}");

        // Filters and pager.
        let page = get("/codes?status=used".into())
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("0 code(s) match"), "{page}");
        let res = get("/codes?page=abc".into()).await.unwrap();
        assert_eq!(res.status(), 200);
        let page = res.text().await.unwrap();
        assert!(
            page.contains("page must be a whole number") && page.contains("3 code(s) match"),
            "the first page, with the error: {page}"
        );
        let page = get("/codes?search=UI&page=9".into())
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            page.contains("Page 1 of 1") && page.contains("3 code(s) match"),
            "{page}"
        );

        // Disable one selected code: asked first, nothing changes until confirmed.
        let (codes, _) = store::redeem_codes::list(&p.t.app().users, &Default::default(), 10, 0)
            .await
            .unwrap();
        let batch = codes[0].batch_id.clone();
        let one = codes[0].id.to_string();
        let res = form("/codes/disable", &[("csrf", &csrf), ("ids", &one)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let ask = res.text().await.unwrap();
        assert!(ask.contains("Disable 1 selected code(s)?"), "{ask}");
        assert_eq!(p.code_statuses().await.get("disabled"), None);
        let res = form(
            "/codes/disable",
            &[("csrf", &csrf), ("ids", &one), ("confirm", "yes")],
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 303);
        assert_eq!(p.code_statuses().await.get("disabled"), Some(&1));
        let page = get("/codes".into()).await.unwrap().text().await.unwrap();
        assert!(page.contains("Disabled 1 code(s)"), "the flash: {page}");

        // The batch: asked with its count of unused codes, then done.
        let res = form("/codes/disable", &[("csrf", &csrf), ("batch_id", &batch)])
            .send()
            .await
            .unwrap();
        let ask = res.text().await.unwrap();
        assert!(
            ask.contains(&format!("the 2 unused code(s) of batch {batch}")),
            "{ask}"
        );
        let res = form(
            "/codes/disable",
            &[("csrf", &csrf), ("batch_id", &batch), ("confirm", "yes")],
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 303);
        assert_eq!(p.code_statuses().await.get("disabled"), Some(&3));

        // Beyond the quota: not done, and the page says why.
        let res = form("/codes/generate", &[("csrf", &csrf), ("count", "99")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 303);
        assert_eq!(res.headers()["location"], "/codes");
        let page = get("/codes".into()).await.unwrap().text().await.unwrap();
        assert!(page.contains("Not done: only 5 more code(s)"), "{page}");
        p.t.stop().await;
    })
    .await;
}

/// A `poolkeeper serve` child on a free port, and its address.
struct Served {
    child: tokio::process::Child,
    base: String,
}

/// Starts the real binary on the test's databases; returns once it prints its address.
async fn serve(dbs: &common::TestDbs, env: &[(&str, &str)]) -> Served {
    use tokio::io::AsyncBufReadExt;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_poolkeeper"));
    cmd.current_dir(dbs.dir.path())
        .env("RUST_LOG", "warn")
        .arg("--data-dir")
        .arg(dbs.dir.path());
    if let Some(url) = &dbs.config.pool_database_url {
        cmd.arg("--pool-database-url").arg(url.expose());
    }
    if let Some(url) = &dbs.config.users_database_url {
        cmd.arg("--users-database-url").arg(url.expose());
    }
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn serve");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("serve prints its address")
            .unwrap()
            .expect("serve exited early");
        if let Some(url) = line.split("listening on ").nth(1) {
            break url.trim().to_string();
        }
    };
    // Keep reading what it prints, so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Served { child, base }
}

fn signal(child: &tokio::process::Child, sig: &str) {
    let pid = child.id().expect("running").to_string();
    let ok = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// The real binary killed with SIGKILL while a redeem waits on a slow provider: after a restart,
/// maintenance frees the held seat and returns the reserved code to `unused`, and the code
/// redeems again, with one invite at the provider in all.
#[tokio::test]
async fn a_redeem_killed_mid_flight_returns_its_seat_and_code_after_a_restart() {
    use poolkeeper::providers::SIM_STATE_DIR;
    use poolkeeper::providers::sim::SimProvider;

    each_backend(|backend| async move {
        let dbs = common::TestDbs::new(&backend).await;
        // Short holds and reservations, so the restarted process finds them overdue at once.
        let env = [
            ("POOLKEEPER_ADMIN_PASSWORD", "configured-pass-1"),
            ("POOLKEEPER_CHILD_EMAIL_DOMAIN", "kids.test"),
            ("POOLKEEPER_JOBS__POLL_INTERVAL_MS", "50"),
            ("POOLKEEPER_REDEEM__HOLD_SECONDS", "1"),
            ("POOLKEEPER_REDEEM__RESERVATION_TIMEOUT_SECONDS", "1"),
        ];
        let sim_dir = dbs.dir.path().join(SIM_STATE_DIR);
        let cred = Credential::new("cred-slow");
        SimProvider::new(sim_dir.clone())
            .put_org(&cred, SimOrg::new("slow", "owner@slow.test", 3))
            .unwrap();
        let set_latency = |ms: u64| {
            SimProvider::new(sim_dir.clone())
                .update_org(&cred, |org| org.faults.latency_ms = ms)
                .unwrap()
        };

        // First run: a mother synced, one code.
        let mut first = serve(&dbs, &env).await;
        let users =
            poolkeeper::db::UsersDb::open(&dbs.config.users_database_url(), &Default::default())
                .await
                .unwrap();
        let pool =
            poolkeeper::db::PoolDb::open(&dbs.config.pool_database_url(), &Default::default())
                .await
                .unwrap();
        let (_, token) =
            poolkeeper::auth::create_api_token(&users, &clock::system(), "kill-test", Scope::Admin)
                .await
                .unwrap();
        let client = reqwest::Client::new();
        let call = |base: &str, path: &str, body: Value| {
            client
                .post(format!("{base}{path}"))
                .bearer_auth(&token)
                .json(&body)
                .send()
        };
        let json_of = |res: reqwest::Response| async move {
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        };
        let (status, group) = json_of(
            call(&first.base, "/api/admin/pool-groups", json!({"name": "g"}))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 201, "{group}");
        let group = group["id"].as_i64().unwrap();
        let (status, mother) = json_of(
            call(
                &first.base,
                "/api/admin/mothers",
                json!({"name": "slow", "provider": "sim", "credential": "cred-slow",
                    "seat_limit": 2, "pool_group_id": group}),
            )
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(status, 201, "{mother}");
        let mother = mother["id"].as_i64().unwrap();
        let (status, queued) = json_of(
            call(
                &first.base,
                &format!("/api/admin/pool-groups/{group}/sync/mother/{mother}"),
                json!({}),
            )
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(status, 202, "{queued}");
        let job_id = queued["job_id"].as_str().unwrap().to_string();
        common::wait_until("the sync to succeed", Duration::from_secs(30), || async {
            let job = store::jobs::get(&users, &job_id).await.unwrap();
            assert_ne!(job.status, "failed", "{:?}", job.last_error);
            job.status == "succeeded"
        })
        .await;
        let (status, batch) = json_of(
            call(&first.base, "/api/admin/codes", json!({"count": 1}))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 201, "{batch}");
        let code = batch["codes"][0].as_str().unwrap().to_string();
        signal(&first.child, "-TERM");
        first.child.wait().await.unwrap();

        // Second run: the provider answers invites only after a minute; the redeem is in flight
        // (code reserved, seat held) when the process is killed.
        set_latency(60_000);
        let mut second = serve(&dbs, &env).await;
        let redeem = |base: String, code: String| async move {
            reqwest::Client::new()
                .post(format!("{base}/api/redeem"))
                .json(&json!({"code": code, "email": "late@x.test"}))
                .send()
                .await
        };
        let in_flight = tokio::spawn(redeem(second.base.clone(), code.clone()));
        let statuses = || async {
            store::redeem_codes::count_by_status(&users)
                .await
                .unwrap()
                .into_iter()
                .collect::<std::collections::BTreeMap<String, i64>>()
        };
        common::wait_until(
            "the redeem to hold a seat",
            Duration::from_secs(30),
            || async {
                let m = store::mothers::get(&pool, mother).await.unwrap();
                m.usage.seats_held == 1 && statuses().await.get("reserved") == Some(&1)
            },
        )
        .await;
        signal(&second.child, "-KILL");
        second.child.wait().await.unwrap();
        assert!(
            in_flight.await.unwrap().is_err(),
            "the redeem never answered"
        );
        let m = store::mothers::get(&pool, mother).await.unwrap();
        assert_eq!(
            (m.usage.seats_held, m.usage.seats_used),
            (1, 0),
            "left held by the kill"
        );

        // Third run, the provider fast again: its first maintenance pass (at start) finds the
        // hold and the reservation overdue. Both were set to end a second after the redeem began.
        set_latency(0);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let mut third = serve(&dbs, &env).await;
        common::wait_until(
            "maintenance to settle the redeem",
            Duration::from_secs(30),
            || async {
                let m = store::mothers::get(&pool, mother).await.unwrap();
                m.usage.seats_held == 0 && statuses().await.get("unused") == Some(&1)
            },
        )
        .await;
        let m = store::mothers::get(&pool, mother).await.unwrap();
        assert_eq!(
            (m.usage.seats_held, m.usage.seats_used),
            (0, 0),
            "the seat is free"
        );

        // The code redeems again, and the provider saw one invite in all.
        let res = redeem(third.base.clone(), code.clone()).await.unwrap();
        let (status, body) = json_of(res).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(statuses().await.get("used"), Some(&1));
        let m = store::mothers::get(&pool, mother).await.unwrap();
        assert_eq!((m.usage.seats_held, m.usage.seats_used), (0, 1));
        signal(&third.child, "-TERM");
        third.child.wait().await.unwrap();
        let org = SimProvider::new(sim_dir.clone())
            .org(&cred)
            .unwrap()
            .unwrap();
        assert_eq!(
            org.invites_sent, 1,
            "the killed invite never reached the provider"
        );
        users.database().close().await;
        pool.database().close().await;
    })
    .await;
}
