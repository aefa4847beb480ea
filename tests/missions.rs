//! Missions over HTTP: requests queued under a mission key, claimed with a lease by one worker at a
//! time, completed or expired. Races run many claims at once and count what the database holds;
//! time rules run on a manual clock. Each test runs on SQLite and, with `POOLKEEPER_TEST_PG`,
//! PostgreSQL.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::{Backend, TestApp, each_backend};
use poolkeeper::auth::Scope;
use poolkeeper::clock::{Clock, ManualClock};
use poolkeeper::store::missions as store;
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
    async fn new(backend: &Backend, accounts: usize, max_concurrent: u32) -> Self {
        let clock = ManualClock::new(T0);
        let t = TestApp::spawn_with(
            backend,
            |c| c.missions.max_concurrent = max_concurrent,
            clock.clone(),
        )
        .await;
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
                        "password": format!("secret-{i}")})),
                )
                .await;
            assert_eq!(status, 201, "{body}");
        }
        env
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.t.send_json(&self.admin, method, path, body).await
    }

    async fn post_as(&self, token: &str, path: &str, body: Value) -> (u16, Value, Option<u64>) {
        let res = self
            .t
            .client
            .post(self.t.url(path))
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

    /// Queues a request; returns its id.
    async fn queue(&self, mission: &str, payload: Value) -> i64 {
        let (status, body, _) = self
            .post_as(
                &self.worker,
                "/api/pool/requests",
                json!({"mission": mission, "payload": payload}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["status"], "pending");
        body["id"].as_i64().unwrap()
    }

    async fn claim_as(&self, token: &str, body: Value) -> (u16, Value, Option<u64>) {
        self.post_as(token, "/api/pool/missions/claim", body).await
    }

    async fn claim(&self) -> (u16, Value) {
        let (status, body, _) = self.claim_as(&self.worker, json!({"worker": "w1"})).await;
        (status, body)
    }

    async fn complete_as(&self, token: &str, claim: &str, body: Value) -> (u16, Value) {
        let (status, body, _) = self
            .post_as(token, &format!("/api/pool/missions/{claim}/complete"), body)
            .await;
        (status, body)
    }

    async fn request(&self, id: i64) -> store::MissionRequest {
        store::get_request(&self.t.app().pool, id).await.unwrap()
    }

    async fn usage_rows(&self) -> Vec<Value> {
        let (status, report) = self
            .admin(
                Method::GET,
                &format!(
                    "/api/admin/accounts/usage?group_by=mission&from=0&to={}",
                    T0 + 86_400 * SEC
                ),
                None,
            )
            .await;
        assert_eq!(status, 200, "{report}");
        report["groups"].as_array().unwrap().clone()
    }

    async fn stop(self) {
        self.t.stop().await;
    }
}

fn ids(claim: &Value) -> Vec<i64> {
    claim["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

fn message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn missions_match_case_insensitively() {
    each_backend(|backend| async move {
        let env = Env::new(&backend, 3, 5).await;
        let de1 = env.queue("de", json!({"n": 1})).await;
        let fr = env.queue("fr", json!({"n": 2})).await;
        let de2 = env.queue("DE", json!({"n": 3})).await;
        let de3 = env.queue(" De ", json!({"n": 4})).await;

        // The oldest mission is `de`, whatever case its requests gave.
        let (status, claim) = env.claim().await;
        assert_eq!(status, 200, "{claim}");
        assert_eq!(claim["mission_key"], "de");
        assert_eq!(claim["mission"], "de", "the name of its oldest request");
        assert_eq!(ids(&claim), [de1, de2, de3]);
        assert_eq!(claim["requests"][1]["mission"], "DE");
        assert_eq!(claim["requests"][0]["payload"], json!({"n": 1}));
        assert_eq!(claim["requests"][0]["attempts"], 1);
        assert_eq!(claim["lease"]["account"]["password"], "secret-0");
        assert_eq!(claim["expires_at"], T0 + 300 * SEC);

        // A request for `dE` while `de` runs waits: the mission is running.
        let late = env.queue("dE", json!({"n": 5})).await;
        let (status, claim2) = env.claim().await;
        assert_eq!(status, 200, "{claim2}");
        assert_eq!(claim2["mission_key"], "fr");
        assert_eq!(ids(&claim2), [fr]);
        let (status, body) = env.claim().await;
        assert_eq!(
            status, 204,
            "`de` runs and `fr` runs: nothing to claim: {body}"
        );
        assert_eq!(env.request(late).await.status, "pending");
        env.stop().await;
    })
    .await;
}

#[tokio::test]
async fn one_mission_is_never_claimed_twice_at_once() {
    each_backend(|backend| async move {
        let env = Arc::new(Env::new(&backend, 10, 5).await);
        let mut queued = Vec::new();
        for (i, m) in ["de", "DE", "De"].iter().enumerate() {
            queued.push(env.queue(m, json!({"i": i})).await);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..16 {
            let env = env.clone();
            tasks.spawn(async move {
                env.claim_as(&env.worker, json!({"worker": format!("w{i}")}))
                    .await
            });
        }
        let mut claims = Vec::new();
        let mut none = 0;
        while let Some(res) = tasks.join_next().await {
            let (status, body, _) = res.unwrap();
            match status {
                200 => claims.push(body),
                204 => none += 1,
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!(claims.len(), 1, "one run of `de`: {claims:?}");
        assert_eq!(none, 15);
        assert_eq!(ids(&claims[0]), queued);
        let running = store::running_claims(&env.t.app().pool).await.unwrap();
        assert_eq!(running.len(), 1);
        // Exactly one lease was taken: the losers' transactions wrote nothing.
        let (_, leases) = env
            .admin(Method::GET, "/api/admin/leases?active=true", None)
            .await;
        assert_eq!(leases["total"], 1, "{leases}");
        assert!(env.usage_rows().await.is_empty());

        // Completed, the mission can run again with what was queued meanwhile.
        let more = env.queue("dE", json!({})).await;
        let claim_id = claims[0]["claim_id"].as_str().unwrap().to_string();
        let (status, done) = env
            .complete_as(
                &env.worker,
                &claim_id,
                json!({"result": "success", "requests": []}),
            )
            .await;
        assert_eq!(status, 200, "{done}");
        let (status, again) = env.claim().await;
        assert_eq!(status, 200, "{again}");
        let mut want = queued.clone();
        want.push(more);
        assert_eq!(
            ids(&again),
            want,
            "unreported requests went back to pending"
        );
        assert_eq!(again["requests"][0]["attempts"], 2);
        match Arc::try_unwrap(env) {
            Ok(env) => env.stop().await,
            Err(_) => panic!("env still shared"),
        }
    })
    .await;
}

#[tokio::test]
async fn never_more_than_max_concurrent_missions_run() {
    each_backend(|backend| async move {
        let env = Arc::new(Env::new(&backend, 20, 3).await);
        for m in 0..10 {
            env.queue(&format!("m{m}"), json!({"m": m})).await;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..24 {
            let env = env.clone();
            tasks.spawn(async move {
                env.claim_as(&env.worker, json!({"worker": format!("w{i}")}))
                    .await
            });
        }
        let mut missions = Vec::new();
        let mut slots = HashSet::new();
        while let Some(res) = tasks.join_next().await {
            let (status, body, _) = res.unwrap();
            match status {
                200 => missions.push(body["mission_key"].as_str().unwrap().to_string()),
                204 => {}
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!(
            missions.len(),
            3,
            "missions.max_concurrent = 3: {missions:?}"
        );
        let distinct: HashSet<&String> = missions.iter().collect();
        assert_eq!(distinct.len(), 3, "{missions:?}");
        let running = store::running_claims(&env.t.app().pool).await.unwrap();
        assert_eq!(running.len(), 3);
        for c in &running {
            let slot = c.slot.unwrap();
            assert!((1..=3).contains(&slot), "{c:?}");
            slots.insert(slot);
        }
        assert_eq!(slots.len(), 3);
        let (_, leases) = env
            .admin(Method::GET, "/api/admin/leases?active=true", None)
            .await;
        assert_eq!(
            leases["total"], 3,
            "one lease per running mission: {leases}"
        );
        // The oldest missions won.
        let mut sorted = missions.clone();
        sorted.sort();
        assert_eq!(sorted, ["m0", "m1", "m2"]);
        match Arc::try_unwrap(env) {
            Ok(env) => env.stop().await,
            Err(_) => panic!("env still shared"),
        }
    })
    .await;
}

#[tokio::test]
async fn no_account_means_503_and_no_usage_row() {
    each_backend(|backend| async move {
        let env = Env::new(&backend, 1, 5).await;
        let request = env.queue("de", json!({})).await;
        // The only account is lent outside any mission.
        let (status, lease, _) = env
            .post_as(&env.worker, "/api/pool/leases", json!({"worker": "other"}))
            .await;
        assert_eq!(status, 201, "{lease}");

        let (status, body, retry) = env.claim_as(&env.worker, json!({"worker": "w1"})).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "no_account_available");
        assert_eq!(retry, Some(300 + 600), "lease expiry + cooldown");
        let r = env.request(request).await;
        assert_eq!((r.status.as_str(), r.attempts), ("pending", 0));
        assert!(
            store::running_claims(&env.t.app().pool)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(env.usage_rows().await.is_empty(), "no usage row");

        // No work at all: 204 even without accounts.
        let env2 = Env::new(&backend, 0, 5).await;
        assert_eq!(env2.claim().await.0, 204);
        env2.stop().await;
        env.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_expired_claim_puts_its_requests_back_to_pending() {
    each_backend(|backend| async move {
        let env = Env::new(&backend, 2, 5).await;
        let a = env.queue("de", json!({"a": 1})).await;
        let b = env.queue("de", json!({"b": 2})).await;
        let (status, claim, _) = env
            .claim_as(&env.worker, json!({"worker": "w1", "ttl_seconds": 60}))
            .await;
        assert_eq!(status, 200, "{claim}");
        let claim_id = claim["claim_id"].as_str().unwrap().to_string();
        assert_eq!(env.request(a).await.status, "claimed");

        env.clock.advance_ms(59 * SEC);
        assert_eq!(env.claim().await.0, 204, "still running at 59 s");
        env.clock.advance_ms(SEC);
        // Housekeeping sees it first here; a claim would too. The server's own housekeeping pass
        // (one at start-up) may run at the same moment on a slow machine and close the lease or
        // the claim first, so each call closes at most one, and the state below is what counts.
        let policy = env.t.app().config.leases.policy();
        let now = env.clock.now_ms();
        let leases_closed =
            poolkeeper::service::leasing::expire_overdue(&env.t.app().pool, now, &policy)
                .await
                .unwrap();
        assert!(leases_closed <= 1, "{leases_closed}");
        let n = poolkeeper::service::missions::expire_overdue(&env.t.app().pool, now, &policy)
            .await
            .unwrap();
        assert!(n <= 1, "{n}");
        for id in [a, b] {
            let r = env.request(id).await;
            assert_eq!((r.status.as_str(), r.claim_id), ("pending", None), "{id}");
        }
        let c = store::get_claim(&env.t.app().pool, &claim_id)
            .await
            .unwrap();
        assert_eq!((c.status.as_str(), c.slot), ("expired", None));
        let usage = env.usage_rows().await;
        assert_eq!(usage.len(), 1, "{usage:?}");
        assert_eq!(usage[0]["key"], "de");
        assert_eq!(usage[0]["failures"], 1, "the expired lease: {usage:?}");

        let (status, body) = env
            .complete_as(
                &env.worker,
                &claim_id,
                json!({"result": "success", "requests": []}),
            )
            .await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"]["code"], "claim_expired");

        // The next run gets the same requests, on the other account.
        let (status, again) = env.claim().await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(ids(&again), [a, b]);
        assert_eq!(again["requests"][0]["attempts"], 2);
        assert_ne!(
            again["lease"]["account"]["id"],
            claim["lease"]["account"]["id"]
        );
        env.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_claim_expires_without_housekeeping_when_the_next_claim_looks() {
    each_backend(|backend| async move {
        let env = Env::new(&backend, 2, 1).await;
        let a = env.queue("de", json!({})).await;
        let fr = env.queue("fr", json!({})).await;
        let (_, first, _) = env
            .claim_as(&env.worker, json!({"worker": "w1", "ttl_seconds": 30}))
            .await;
        assert_eq!(first["mission_key"], "de");
        assert_eq!(env.claim().await.0, 204, "the only slot is taken");
        env.clock.advance_ms(30 * SEC);
        // The slot comes free; `de` is oldest again.
        let (status, next) = env.claim().await;
        assert_eq!(status, 200, "{next}");
        assert_eq!(next["mission_key"], "de");
        assert_eq!(ids(&next), [a]);
        assert_eq!(env.request(fr).await.status, "pending");
        env.stop().await;
    })
    .await;
}

#[tokio::test]
async fn complete_finishes_requests_and_releases_the_lease_once_for_its_holder() {
    each_backend(|backend| async move {
        let env = Env::new(&backend, 1, 5).await;
        let other = env.t.token("worker-2", Scope::Worker).await;
        let a = env.queue("de", json!({"a": 1})).await;
        let b = env.queue("de", json!({"b": 2})).await;
        let c = env.queue("de", json!({"c": 3})).await;
        let (_, claim) = env.claim().await;
        let claim_id = claim["claim_id"].as_str().unwrap().to_string();
        let account = claim["lease"]["account"]["id"].as_i64().unwrap();
        env.clock.advance_ms(42 * SEC);

        let body = json!({"result": "success", "requests": [
            {"id": a, "status": "done", "result": {"ok": true}},
            {"id": b, "status": "failed"},
        ]});
        let (status, err) = env.complete_as(&other, &claim_id, body.clone()).await;
        assert_eq!(status, 403, "{err}");
        assert_eq!(err["error"]["code"], "not_claim_holder");
        assert_eq!(env.request(a).await.status, "claimed", "nothing written");

        let (status, done) = env.complete_as(&env.worker, &claim_id, body.clone()).await;
        assert_eq!(status, 200, "{done}");
        assert_eq!(
            (done["done"].clone(), done["failed"].clone()),
            (json!(1), json!(1))
        );
        assert_eq!(done["returned"], 1);
        assert_eq!(done["claim"]["status"], "completed");
        assert_eq!(done["lease"]["result"], "success");
        let ra = env.request(a).await;
        assert_eq!(ra.status, "done");
        assert_eq!(ra.result.as_deref(), Some("{\"ok\":true}"));
        assert_eq!(ra.finished_at, Some(T0 + 42 * SEC));
        assert_eq!(env.request(b).await.status, "failed");
        assert_eq!(env.request(c).await.status, "pending");

        // The lease ended under the leasing rules: cooldown, a usage row with the mission.
        let (_, acc) = env
            .admin(Method::GET, &format!("/api/admin/accounts/{account}"), None)
            .await;
        assert_eq!(acc["status"], "cooldown", "{acc}");
        assert_eq!(acc["total_successes"], 1);
        assert_eq!(acc["recent_usage"][0]["mission"], "de");
        assert_eq!(acc["recent_usage"][0]["duration_ms"], 42 * SEC);

        let (status, err) = env.complete_as(&env.worker, &claim_id, body).await;
        assert_eq!(status, 409, "{err}");
        assert_eq!(err["error"]["code"], "claim_completed");
        let (status, _) = env
            .complete_as(
                &env.worker,
                "00000000-0000-4000-8000-000000000000",
                json!({"result": "success", "requests": []}),
            )
            .await;
        assert_eq!(status, 404);
        // The lease itself was released by the complete.
        let lease = claim["lease"]["lease_id"].as_str().unwrap();
        let (status, err, _) = env
            .post_as(
                &env.worker,
                &format!("/api/pool/leases/{lease}/release"),
                json!({"result": "success"}),
            )
            .await;
        assert_eq!(status, 409, "{err}");
        env.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bad_input_is_a_4xx_naming_the_field() {
    each_backend(|backend| async move {
        let env = Env::new(&backend, 1, 5).await;
        let long = "x".repeat(129);
        let queue_cases = [
            (json!({"payload": {}}), "mission"),
            (json!({"mission": "  ", "payload": {}}), "mission"),
            (json!({"mission": long, "payload": {}}), "mission"),
            (json!({"mission": "a\u{7}b", "payload": {}}), "mission"),
            (json!({"mission": "de"}), "payload"),
            (json!({"mission": "de", "payload": null}), "payload"),
            (json!({"mission": 5, "payload": {}}), "mission"),
            (json!({"mission": "de", "payload": {}, "extra": 1}), "extra"),
        ];
        for (body, field) in queue_cases {
            let (status, err, _) = env.post_as(&env.worker, "/api/pool/requests", body.clone()).await;
            assert_eq!(status, 400, "{body}: {err}");
            assert!(message(&err).contains(field), "{body}: {err}");
        }
        let claim_cases = [
            (json!({}), "worker"),
            (json!({"worker": "w", "ttl_seconds": 0}), "ttl_seconds"),
            (json!({"worker": "w", "max_requests": 0}), "max_requests"),
            (json!({"worker": "w", "max_requests": 1001}), "max_requests"),
            (json!({"worker": "w", "pool": "a b"}), "pool"),
            (json!({"worker": "w", "max_requests": "ten"}), "max_requests"),
        ];
        for (body, field) in claim_cases {
            let (status, err, _) = env.claim_as(&env.worker, body.clone()).await;
            assert_eq!(status, 400, "{body}: {err}");
            assert!(message(&err).contains(field), "{body}: {err}");
        }
        // Worker routes want a worker token.
        assert_eq!(env.claim_as(&env.admin, json!({"worker": "w"})).await.0, 403);
        assert_eq!(env.claim_as("nope", json!({"worker": "w"})).await.0, 401);

        let a = env.queue("de", json!({})).await;
        let b = env.queue("fr", json!({})).await;
        let (_, claim, _) = env
            .claim_as(&env.worker, json!({"worker": "w", "max_requests": 1}))
            .await;
        let claim_id = claim["claim_id"].as_str().unwrap().to_string();
        let complete_cases = [
            (json!({"requests": []}), "result"),
            (json!({"result": "expired", "requests": []}), "result"),
            (json!({"result": "success"}), "requests"),
            (json!({"result": "success", "requests": [{"status": "done"}]}), "requests[0].id"),
            (json!({"result": "success", "requests": [{"id": a, "status": "maybe"}]}), "requests[0].status"),
            (json!({"result": "success", "requests": [{"id": a, "status": "done"}, {"id": b, "status": "done"}]}), "requests[1].id"),
            (json!({"result": "success", "requests": [{"id": a, "status": "done"}, {"id": a, "status": "failed"}]}), "requests[1].id"),
            (json!({"result": "success", "requests": [], "error_message": "x".repeat(2001)}), "error_message"),
        ];
        for (body, field) in complete_cases {
            let (status, err) = env.complete_as(&env.worker, &claim_id, body.clone()).await;
            assert_eq!(status, 400, "{body}: {err}");
            assert!(message(&err).contains(field), "{body}: {err}");
        }
        // None of that was written: the claim still completes.
        let (status, done) = env
            .complete_as(
                &env.worker,
                &claim_id,
                json!({"result": "success", "requests": [{"id": a, "status": "done"}]}),
            )
            .await;
        assert_eq!(status, 200, "{done}");
        assert_eq!(env.request(b).await.status, "pending");
        env.stop().await;
    })
    .await;
}

#[tokio::test]
async fn mission_routes_are_in_the_openapi_document() {
    let doc = poolkeeper::http::openapi();
    for path in [
        "/api/pool/requests",
        "/api/pool/missions/claim",
        "/api/pool/missions/{claim_id}/complete",
    ] {
        let item = doc
            .paths
            .paths
            .get(path)
            .unwrap_or_else(|| panic!("{path}"));
        let op = item.post.as_ref().unwrap_or_else(|| panic!("POST {path}"));
        assert_eq!(
            op.tags.as_deref(),
            Some(&["pool".to_string()][..]),
            "{path}"
        );
        assert!(op.request_body.is_some(), "{path}");
    }
}
