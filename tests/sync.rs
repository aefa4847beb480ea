//! Pool sync against the simulated provider: renames, backfill, seats, auto-invite, dedup of
//! concurrent enqueues, and how provider errors end a job.

mod common;

use std::time::Duration;

use common::{Backend, TestApp, each_backend, url_encoded, wait_until};
use poolkeeper::auth::Scope;
use poolkeeper::clock;
use poolkeeper::crypto::Credential;
use poolkeeper::providers::MemberStatus;
use poolkeeper::providers::sim::{SimMember, SimOrg, SimTeam};
use poolkeeper::store;
use serde_json::{Value, json};

struct Sync {
    t: TestApp,
    token: String,
}

impl Sync {
    async fn spawn(backend: &Backend, auto_invite: bool) -> Self {
        Self::spawn_with(backend, auto_invite, 4).await
    }

    async fn spawn_with(backend: &Backend, auto_invite: bool, concurrency: usize) -> Self {
        Self::spawn_configured(backend, |c| {
            c.pool_auto_invite_missing = auto_invite;
            c.jobs.concurrency = concurrency;
            c.jobs.batch_size = concurrency;
        })
        .await
    }

    /// A server with the sync tests' settings, then `tweak`.
    async fn spawn_configured(
        backend: &Backend,
        tweak: impl FnOnce(&mut poolkeeper::config::Config),
    ) -> Self {
        let t = TestApp::spawn_with(
            backend,
            |c| {
                c.child_email_domain = Some("kids.test".into());
                c.jobs.poll_interval_ms = 20;
                c.jobs.concurrency = 4;
                c.jobs.batch_size = 4;
                tweak(c);
            },
            clock::system(),
        )
        .await;
        let token = t.token("sync", Scope::Admin).await;
        Self { t, token }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.t
            .send_json(&self.token, reqwest::Method::POST, path, Some(body))
            .await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.t
            .send_json(&self.token, reqwest::Method::GET, path, None)
            .await
    }

    async fn session(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/api/admin/sync-sessions/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn group(&self, name: &str) -> i64 {
        let (status, body) = self
            .post("/api/admin/pool-groups", json!({"name": name}))
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_i64().unwrap()
    }

    /// A sim mother in `group` whose organisation is `org`.
    async fn mother(&self, name: &str, group: Option<i64>, seats: i64, org: SimOrg) -> i64 {
        let credential = format!("cred-{name}");
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
        body["id"].as_i64().unwrap()
    }

    fn org(&self, mother: &str) -> SimOrg {
        self.t
            .app()
            .providers
            .sim
            .org(&Credential::new(format!("cred-{mother}")))
            .unwrap()
            .unwrap()
    }

    fn update_org(&self, mother: &str, f: impl FnOnce(&mut SimOrg)) {
        self.t
            .app()
            .providers
            .sim
            .update_org(&Credential::new(format!("cred-{mother}")), f)
            .unwrap();
    }

    async fn enqueue(&self, group: i64, mother: i64) -> (String, bool) {
        let (status, body) = self
            .post(
                &format!("/api/admin/pool-groups/{group}/sync/mother/{mother}"),
                json!({}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        (
            body["job_id"].as_str().unwrap().to_string(),
            body["deduplicated"].as_bool().unwrap(),
        )
    }

    /// Waits for the job to end; returns it.
    async fn finished(&self, id: &str) -> store::jobs::Job {
        self.t.job_ended(id, Duration::from_secs(15)).await
    }

    /// Waits for every job to end; returns their ids.
    async fn finished_all(&self) -> Vec<String> {
        let (_, list) = self.get("/api/admin/jobs?page_size=500").await;
        let ids: Vec<String> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect();
        for id in &ids {
            self.finished(id).await;
        }
        ids
    }

    /// Enqueues a sync, waits for success, returns the report.
    async fn sync(&self, group: i64, mother: i64) -> Value {
        let (id, _) = self.enqueue(group, mother).await;
        let job = self.finished(&id).await;
        assert_eq!(job.status, "succeeded", "{:?}", job.last_error);
        serde_json::from_str(job.result.as_deref().unwrap()).unwrap()
    }

    async fn detail(&self, mother: i64) -> store::mothers::MotherDetail {
        store::mothers::get_detail(&self.t.app().pool, mother)
            .await
            .unwrap()
    }
}

fn member(email: &str, status: MemberStatus) -> SimMember {
    SimMember {
        email: email.into(),
        name: email.split('@').next().unwrap().into(),
        status,
    }
}

/// `acme` with the owner and `extra` active members in one team of `seats` seats.
fn org(name: &str, seats: i64, extra: &[&str]) -> SimOrg {
    let mut org = SimOrg::new(name, &format!("owner@{name}.test"), seats);
    for e in extra {
        org.teams[0].members.push(member(e, MemberStatus::Active));
    }
    org
}

#[tokio::test]
async fn second_sync_renames_nothing_and_adds_no_children() {
    each_backend(|backend| async move {
        let s = Sync::spawn(&backend, false).await;
        let group = s.group("g1").await;
        let mut o = org("acme", 10, &["a@acme.test", "b@acme.test"]);
        o.teams.push(SimTeam {
            id: "acme-team-2".into(),
            name: "second".into(),
            seats: 5,
            members: vec![member("c@acme.test", MemberStatus::Active)],
        });
        let m = s.mother("acme", Some(group), 7, o).await;
        let day = poolkeeper::domain::naming::utc_day(s.t.app().clock.now_ms());
        let teams_before = store::pool_groups::last_sequence(
            &s.t.app().pool,
            group,
            &day,
            store::pool_groups::SequenceKind::Team,
        )
        .await
        .unwrap();

        let first = s.sync(group, m).await;
        // The default team keeps the name the group gave it at creation; the second team takes
        // the next number.
        assert_eq!(first["teams_renamed"], 2, "{first}");
        assert_eq!(first["teams_added"], 1, "{first}");
        assert_eq!(first["children_created"], 3, "{first}");
        let sim = s.org("acme");
        let names: Vec<&str> = sim.teams.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                format!("g1-{day}-{:03}", teams_before),
                format!("g1-{day}-{:03}", teams_before + 1)
            ]
        );
        let d = s.detail(m).await;
        assert_eq!(d.children.len(), 3);
        assert!(d.children.iter().all(|c| !c.email.starts_with("owner")));
        assert_eq!(d.mother.usage.seats_used, 3);
        assert!(d.mother.last_synced_at.is_some());

        let second = s.sync(group, m).await;
        common::assert_idle_sync(&second);
        assert_eq!(s.org("acme").renames, 2);
        let after = store::pool_groups::last_sequence(
            &s.t.app().pool,
            group,
            &day,
            store::pool_groups::SequenceKind::Team,
        )
        .await
        .unwrap();
        assert_eq!(after, teams_before + 1, "a rerun uses no team number");
        let d2 = s.detail(m).await;
        assert_eq!(d2.children.len(), 3, "no duplicate children");
        assert_eq!(d2.mother.usage.seats_used, 3);
        s.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn departed_members_are_marked_removed_and_free_their_seats() {
    each_backend(|backend| async move {
        let s = Sync::spawn(&backend, false).await;
        let group = s.group("g1").await;
        let m = s
            .mother(
                "acme",
                Some(group),
                5,
                org("acme", 5, &["a@acme.test", "b@acme.test"]),
            )
            .await;
        s.sync(group, m).await;
        s.update_org("acme", |o| {
            o.teams[0].members.retain(|x| x.email != "b@acme.test");
            o.teams[0].members[1].name = "Alice".into();
        });
        let report = s.sync(group, m).await;
        assert_eq!(report["children_removed"], 1, "{report}");
        assert_eq!(report["children_updated"], 1, "{report}");
        let d = s.detail(m).await;
        assert_eq!(d.mother.usage.seats_used, 1);
        let b = d
            .children
            .iter()
            .find(|c| c.email == "b@acme.test")
            .unwrap();
        assert_eq!(b.status, "removed");
        s.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn auto_invite_fills_free_seats_once() {
    each_backend(|backend| async move {
        let s = Sync::spawn(&backend, true).await;
        let group = s.group("g1").await;
        let m = s
            .mother("acme", Some(group), 3, org("acme", 10, &["a@acme.test"]))
            .await;
        let first = s.sync(group, m).await;
        assert_eq!(first["invites_sent"], 2, "{first}");
        let d = s.detail(m).await;
        assert_eq!(d.mother.usage.seats_used, 1);
        assert_eq!(
            d.mother.usage.seats_held, 2,
            "seats of pending invites are held"
        );
        let invited: Vec<_> = d
            .children
            .iter()
            .filter(|c| c.status == "invited")
            .collect();
        assert_eq!(invited.len(), 2);
        assert!(invited.iter().all(|c| c.email.ends_with("@kids.test")));
        assert_eq!(s.org("acme").invites_sent, 2);

        let second = s.sync(group, m).await;
        common::assert_idle_sync(&second);
        assert_eq!(s.org("acme").invites_sent, 2, "no invite is sent twice");
        let d2 = s.detail(m).await;
        assert_eq!(d2.children.len(), 3);
        assert_eq!(d2.mother.usage.seats_held, 2);

        // An invitee who accepts takes her held seat as used.
        let email = invited[0].email.clone();
        s.update_org("acme", |o| {
            for x in &mut o.teams[0].members {
                if x.email == email {
                    x.status = MemberStatus::Active;
                }
            }
        });
        let third = s.sync(group, m).await;
        assert_eq!(third["invites_sent"], 0, "{third}");
        let d3 = s.detail(m).await;
        assert_eq!(d3.mother.usage.seats_used, 2);
        assert_eq!(d3.mother.usage.seats_held, 1);
        s.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn group_auto_invite_invites_once_without_the_global_switch() {
    each_backend(|backend| async move {
        // pool_auto_invite_missing is off: only the group's setting turns auto-invite on.
        let s = Sync::spawn(&backend, false).await;
        let (status, g) = s
            .post(
                "/api/admin/pool-groups",
                json!({"name": "inviting", "auto_invite": true}),
            )
            .await;
        assert_eq!(status, 201, "{g}");
        assert_eq!(g["settings"]["auto_invite"], true);
        let group = g["id"].as_i64().unwrap();
        let (_, fetched) = s.get(&format!("/api/admin/pool-groups/{group}")).await;
        assert_eq!(fetched["settings"]["auto_invite"], true, "{fetched}");
        let m = s
            .mother("acme", Some(group), 3, org("acme", 10, &["a@acme.test"]))
            .await;
        let first = s.sync(group, m).await;
        assert_eq!(first["invites_sent"], 2, "two free seats: {first}");
        assert_eq!(s.org("acme").invites_sent, 2);
        assert_eq!(s.detail(m).await.mother.usage.seats_held, 2);
        let second = s.sync(group, m).await;
        assert_eq!(second["invites_sent"], 0, "{second}");
        assert_eq!(s.org("acme").invites_sent, 2, "no invite is sent twice");

        // A group with the setting off (the default) invites no one.
        let (_, quiet) = s
            .post("/api/admin/pool-groups", json!({"name": "quiet"}))
            .await;
        assert_eq!(quiet["settings"]["auto_invite"], false, "{quiet}");
        let quiet = quiet["id"].as_i64().unwrap();
        let b = s.mother("beta", Some(quiet), 3, org("beta", 10, &[])).await;
        let report = s.sync(quiet, b).await;
        assert_eq!(report["invites_sent"], 0, "{report}");
        assert_eq!(s.org("beta").invites_sent, 0);
        assert_eq!(s.detail(b).await.mother.usage.seats_free, 3);

        // Turned on through the settings endpoint, the next sync fills beta's seats.
        let (status, updated) = s
            .post(
                &format!("/api/admin/pool-groups/{quiet}/settings"),
                json!({"auto_invite": true}),
            )
            .await;
        assert_eq!(status, 200, "{updated}");
        assert_eq!(updated["settings"]["auto_invite"], true);
        let report = s.sync(quiet, b).await;
        assert_eq!(report["invites_sent"], 3, "{report}");
        let (status, bad) = s
            .post(
                &format!("/api/admin/pool-groups/{quiet}/settings"),
                json!({"auto_invite": "yes"}),
            )
            .await;
        assert_eq!(status, 400, "{bad}");
        s.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn auto_invite_stops_when_the_provider_team_is_full_and_leaves_no_trace() {
    each_backend(|backend| async move {
        let s = Sync::spawn(&backend, true).await;
        let group = s.group("g1").await;
        // Five seats here, but the provider's team takes only the owner and two more.
        let m = s.mother("acme", Some(group), 5, org("acme", 3, &[])).await;
        let first = s.sync(group, m).await;
        assert_eq!(first["invites_sent"], 2, "{first}");
        let d = s.detail(m).await;
        assert_eq!(d.children.len(), 2, "unsent reservations leave no child");
        assert!(d.children.iter().all(|c| c.status == "invited"));
        assert_eq!(d.mother.usage.seats_held, 2);
        assert_eq!(d.mother.usage.seats_free, 3, "their seats are free again");
        let second = s.sync(group, m).await;
        common::assert_idle_sync(&second);
        assert_eq!(s.detail(m).await.children.len(), 2);
        assert_eq!(s.org("acme").invites_sent, 2);
        s.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn hundred_concurrent_enqueues_make_one_job() {
    each_backend(|backend| async move {
        let s = Sync::spawn(&backend, false).await;
        let group = s.group("g1").await;
        let m = s.mother("acme", None, 5, org("acme", 5, &[])).await;
        // Slow provider calls keep the first job live while the requests arrive.
        s.update_org("acme", |o| o.faults.latency_ms = 3000);
        let path =
            s.t.url(&format!("/api/admin/pool-groups/{group}/sync/mother/{m}"));
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let client = s.t.client.clone();
            let path = path.clone();
            let token = s.token.clone();
            tasks.push(tokio::spawn(async move {
                let res = client.post(path).bearer_auth(token).send().await.unwrap();
                assert_eq!(res.status(), 202);
                let body: Value = res.json().await.unwrap();
                (
                    body["job_id"].as_str().unwrap().to_string(),
                    body["deduplicated"].as_bool().unwrap(),
                    body["session_id"].as_str().unwrap().to_string(),
                )
            }));
        }
        let mut ids = std::collections::HashSet::new();
        let mut sessions = std::collections::HashSet::new();
        let mut fresh = 0;
        for t in tasks {
            let (id, dedup, session) = t.await.unwrap();
            ids.insert(id);
            sessions.insert(session);
            fresh += usize::from(!dedup);
        }
        assert_eq!(ids.len(), 1, "every response carries the one job's id");
        assert_eq!(fresh, 1, "exactly one request created the job");
        assert_eq!(sessions.len(), 1, "and the one job's session");
        let (_, stats) = s.get("/api/admin/sync-sessions/statistics").await;
        assert_eq!(stats["total_sessions"], 1, "{stats}");
        assert_eq!(stats["manual"], 1, "{stats}");
        s.update_org("acme", |o| o.faults.latency_ms = 0);
        let id = ids.into_iter().next().unwrap();
        assert_eq!(s.finished(&id).await.status, "succeeded");
        assert_eq!(
            s.detail(m).await.mother.pool_group_id,
            Some(group),
            "enqueue puts the mother in the group"
        );
        s.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn revoked_credential_marks_mother_invalid_and_fails_without_retry() {
    each_backend(|backend| async move {
        let s = Sync::spawn(&backend, false).await;
        let group = s.group("g1").await;
        let m = s.mother("acme", Some(group), 5, org("acme", 5, &[])).await;
        s.update_org("acme", |o| o.faults.revoked = true);
        let (id, _) = s.enqueue(group, m).await;
        let job = s.finished(&id).await;
        assert_eq!(job.status, "failed");
        assert_eq!(job.attempts, 1, "no retry");
        let error = job.last_error.unwrap();
        assert!(error.contains("invalid"), "{error}");
        assert!(
            !error.contains("cred-acme"),
            "the credential is never in a message"
        );
        assert_eq!(s.detail(m).await.mother.status, "invalid");
        s.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn rate_limited_sync_is_retried_and_succeeds() {
    each_backend(|backend| async move {
        let s = Sync::spawn(&backend, false).await;
        let group = s.group("g1").await;
        let m = s
            .mother("acme", Some(group), 5, org("acme", 5, &["a@acme.test"]))
            .await;
        // The first attempt makes 4 calls (identify, list teams, rename, list members): the 4th
        // is rate limited; the retry needs 3 (the team is named by then) and gets through.
        s.update_org("acme", |o| {
            o.faults.rate_limit_every = 4;
            o.faults.retry_after_ms = 100;
        });
        let (id, _) = s.enqueue(group, m).await;
        let job = s.finished(&id).await;
        assert_eq!(job.status, "succeeded", "{:?}", job.last_error);
        assert_eq!(job.attempts, 2);
        assert_eq!(s.detail(m).await.children.len(), 1);
        s.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn sync_of_unknown_mother_or_group_is_404() {
    each_backend(|backend| async move {
        let s = Sync::spawn(&backend, false).await;
        let group = s.group("g1").await;
        let (status, body) = s
            .post(
                &format!("/api/admin/pool-groups/{group}/sync/mother/999"),
                json!({}),
            )
            .await;
        assert_eq!(status, 404, "{body}");
        let (status, _) = s
            .post("/api/admin/pool-groups/999/sync/all", json!({}))
            .await;
        assert_eq!(status, 404);
        let (status, _) = s
            .post(
                &format!("/api/admin/pool-groups/{group}/sync/mother/x"),
                json!({}),
            )
            .await;
        assert_eq!(status, 400);
        s.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn sync_all_queues_one_job_per_active_mother() {
    each_backend(|backend| async move {
        let s = Sync::spawn(&backend, false).await;
        let group = s.group("g1").await;
        let a = s
            .mother("a", Some(group), 2, org("a", 2, &["x@a.test"]))
            .await;
        let b = s.mother("b", Some(group), 2, org("b", 2, &[])).await;
        let (status, body) = s
            .post(
                &format!("/api/admin/pool-groups/{group}/sync/all"),
                json!({}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["count"], 2);
        for id in body["job_ids"].as_array().unwrap() {
            assert_eq!(s.finished(id.as_str().unwrap()).await.status, "succeeded");
        }
        assert_eq!(s.detail(a).await.children.len(), 1);
        assert!(s.detail(b).await.mother.last_synced_at.is_some());
        s.t.stop().await;
    })
    .await;
}

/// Waits until `check` holds for the session; returns it.
async fn session_when(s: &Sync, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let what = format!("session {id}: {what}");
    wait_until(&what, Duration::from_secs(8), || async {
        let body = s.session(id).await;
        check(&body).then_some(body)
    })
    .await
}

fn records_with(body: &Value, status: &str) -> usize {
    body["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == status)
        .count()
}

#[tokio::test]
async fn batch_session_stays_running_until_the_third_record_ends() {
    each_backend(|backend| async move {
        let s = Sync::spawn(&backend, false).await;
        let group = s.group("g1").await;
        s.mother("a", Some(group), 2, org("a", 2, &["x@a.test"]))
            .await;
        s.mother("b", Some(group), 2, org("b", 2, &[])).await;
        let slow = s.mother("c", Some(group), 2, org("c", 2, &[])).await;
        s.update_org("c", |o| o.faults.latency_ms = 700);
        let (status, body) = s
            .post(
                &format!("/api/admin/pool-groups/{group}/sync/all"),
                json!({}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["count"], 3);
        let id = body["session_id"].as_str().unwrap().to_string();

        let two = session_when(&s, &id, "two records completed", |b| {
            records_with(b, "completed") == 2
        })
        .await;
        assert_eq!(two["status"], "running", "{two}");
        assert_eq!(two["sync_type"], "manual_batch");
        assert!(two["completed_at"].is_null());
        assert!(
            (two["progress"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-6,
            "{two}"
        );
        let slow_record = two["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["mother_id"] == slow)
            .unwrap();
        assert_ne!(slow_record["status"], "completed");

        let done = session_when(&s, &id, "session ended", |b| b["status"] != "running").await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["total_instances"], 3);
        assert_eq!(done["successful"], 3);
        assert_eq!(done["failed"], 0);
        assert_eq!(done["progress"], 1.0);
        assert!(done["completed_at"].is_i64());
        for r in done["records"].as_array().unwrap() {
            assert!(r["job_id"].is_string(), "{r}");
        }
        let a = done["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["items_created"] == 1)
            .expect("mother a's member was created");
        assert_eq!(
            a["items_synced"], 2,
            "one child created, one team renamed: {a}"
        );
        s.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn batch_session_with_a_failed_record_ends_failed() {
    each_backend(|backend| async move {
        let s = Sync::spawn(&backend, false).await;
        let group = s.group("g1").await;
        s.mother("a", Some(group), 2, org("a", 2, &[])).await;
        s.mother("b", Some(group), 2, org("b", 2, &[])).await;
        s.update_org("b", |o| o.faults.revoked = true);
        let (_, body) = s
            .post(
                &format!("/api/admin/pool-groups/{group}/sync/all"),
                json!({}),
            )
            .await;
        let id = body["session_id"].as_str().unwrap().to_string();
        let done = session_when(&s, &id, "session ended", |b| b["status"] != "running").await;
        assert_eq!(done["status"], "failed", "{done}");
        assert_eq!(done["successful"], 1);
        assert_eq!(done["failed"], 1);
        let failed = done["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["status"] == "failed")
            .unwrap();
        assert!(
            failed["error_message"]
                .as_str()
                .unwrap()
                .contains("invalid"),
            "{failed}"
        );
        let (_, list) = s.get("/api/admin/sync-sessions?status=failed").await;
        assert_eq!(list["total"], 1, "{list}");
        let (_, list) = s.get("/api/admin/sync-sessions?status=completed").await;
        assert_eq!(list["total"], 0, "{list}");
        s.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn cancel_stops_pending_records_and_only_while_running() {
    each_backend(|backend| async move {
        // One job at a time, so the later records are still pending when cancel arrives.
        let s = Sync::spawn_with(&backend, false, 1).await;
        let group = s.group("g1").await;
        for name in ["a", "b", "c"] {
            s.mother(name, Some(group), 2, org(name, 2, &[])).await;
            s.update_org(name, |o| o.faults.latency_ms = 300);
        }
        let (_, body) = s
            .post(
                &format!("/api/admin/pool-groups/{group}/sync/all"),
                json!({}),
            )
            .await;
        let id = body["session_id"].as_str().unwrap().to_string();
        let (status, cancelled) = s
            .post(&format!("/api/admin/sync-sessions/{id}/cancel"), json!({}))
            .await;
        assert_eq!(status, 200, "{cancelled}");
        assert_eq!(cancelled["status"], "cancelled");
        let n = records_with(&cancelled, "cancelled");
        assert!(n >= 2, "pending records are cancelled: {cancelled}");
        assert_eq!(cancelled["cancelled_jobs"], n);
        for r in cancelled["records"].as_array().unwrap() {
            if r["status"] == "cancelled" {
                let job = s.finished(r["job_id"].as_str().unwrap()).await;
                assert_eq!(job.status, "cancelled");
            }
        }
        let (status, again) = s
            .post(&format!("/api/admin/sync-sessions/{id}/cancel"), json!({}))
            .await;
        assert_eq!(status, 409, "{again}");
        // The cancel is in the audit log once (the refused second one is not).
        let (_, audit) = s
            .get(&format!(
                "/api/admin/audit?action=sync_session.cancel&target=sync_session:{id}"
            ))
            .await;
        assert_eq!(audit["total"], 1, "{audit}");
        assert!(
            audit["items"][0]["summary"]
                .as_str()
                .unwrap()
                .contains(&format!("\"cancelled_jobs\":{n}")),
            "{audit}"
        );
        // A record that was already running ends on its own; the session stays cancelled.
        let settled = session_when(&s, &id, "every record finished", |b| {
            records_with(b, "pending") + records_with(b, "running") == 0
        })
        .await;
        assert_eq!(settled["status"], "cancelled");
        let (_, stats) = s.get("/api/admin/sync-sessions/statistics").await;
        assert_eq!(stats["cancelled"], 1, "{stats}");
        assert_eq!(stats["by_category"]["pool"], 1, "{stats}");
        s.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn session_queries_check_their_input() {
    each_backend(|backend| async move {
        let s = Sync::spawn(&backend, false).await;
        let (status, body) = s.get("/api/admin/sync-sessions?status=bogus").await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_status");
        let (status, _) = s.get("/api/admin/sync-sessions?page_size=0").await;
        assert_eq!(status, 400);
        let (status, _) = s.get("/api/admin/sync-sessions/nope").await;
        assert_eq!(status, 404);
        let (status, _) = s
            .post("/api/admin/sync-sessions/nope/cancel", json!({}))
            .await;
        assert_eq!(status, 404);
        let (status, body) = s
            .get("/api/admin/sync-sessions?sync_type=manual_single&category=pool")
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["total"], 0);
        s.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn import_cookie_rejected_by_the_provider_is_422_with_its_reason() {
    each_backend(|backend| async move {
        let s = Sync::spawn(&backend, false).await;
        let (status, body) = s
            .post(
                "/api/admin/import-cookie",
                json!({"cookie": "nobody-knows-me", "mode": "user"}),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "credential_rejected");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("knows no organisation"),
            "{body}"
        );
        assert!(!body.to_string().contains("nobody-knows-me"));
        let cred = Credential::new("revoked-cookie");
        let mut o = org("acme", 3, &[]);
        o.faults.revoked = true;
        s.t.app().providers.sim.put_org(&cred, o).unwrap();
        let (status, body) = s
            .post(
                "/api/admin/import-cookie",
                json!({"cookie": "revoked-cookie", "mode": "user"}),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("revoked"),
            "{body}"
        );
        let (_, list) = s.get("/api/admin/mothers").await;
        assert_eq!(list["total"], 0, "nothing is stored: {list}");
        s.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn import_cookie_in_pool_mode_creates_the_mother_and_syncs_her() {
    each_backend(|backend| async move {
        let s = Sync::spawn(&backend, false).await;
        let group = s.group("g1").await;
        let cred = Credential::new("cookie-acme");
        s.t.app()
            .providers
            .sim
            .put_org(&cred, org("acme", 5, &["a@acme.test"]))
            .unwrap();
        let (status, body) = s
            .post(
                "/api/admin/import-cookie",
                json!({"cookie": "cookie-acme", "mode": "pool", "pool_group_id": group}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert!(!body.to_string().contains("cookie-acme"));
        let mother = body["mother_id"].as_i64().unwrap();
        let job = s.finished(body["job_id"].as_str().unwrap()).await;
        assert_eq!(job.status, "succeeded", "{:?}", job.last_error);
        let d = s.detail(mother).await;
        assert_eq!(d.mother.name, "acme");
        assert_eq!(d.mother.pool_group_id, Some(group));
        assert_eq!(d.children.len(), 1);
        let session = s.session(body["session_id"].as_str().unwrap()).await;
        assert_eq!(session["sync_type"], "manual_single");

        // Importing the same account again updates her instead of adding another mother.
        let (status, again) = s
            .post(
                "/api/admin/import-cookie",
                json!({"cookie": "cookie-acme", "mode": "user"}),
            )
            .await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["mother_id"], mother);
        assert_eq!(again["updated"], true);
        assert!(again["job_id"].is_null());
        let (_, list) = s.get("/api/admin/mothers").await;
        assert_eq!(list["total"], 1);
        s.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn import_cookie_onto_a_mother_of_another_provider_or_config_is_409() {
    each_backend(|backend| async move {
        let s = Sync::spawn(&backend, false).await;
        // A mother named "acme" on another provider config than the one the import will use.
        let (status, body) = s
            .post(
                "/api/admin/mothers",
                json!({"name": "acme", "provider": "sim", "credential": "old-credential",
                    "provider_config": {"tenant": "eu"}}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let mother = body["id"].as_i64().unwrap();
        let cred = Credential::new("cookie-acme");
        s.t.app()
            .providers
            .sim
            .put_org(&cred, org("acme", 3, &[]))
            .unwrap();
        let (status, res) = s
            .post(
                "/api/admin/import-cookie",
                json!({"cookie": "cookie-acme", "mode": "user"}),
            )
            .await;
        assert_eq!(status, 409, "{res}");
        assert_eq!(res["error"]["code"], "provider_mismatch", "{res}");
        assert!(!res.to_string().contains("cookie-acme"), "{res}");
        // Her credential is untouched.
        let sealed = store::mothers::credential_sealed(&s.t.app().pool, mother)
            .await
            .unwrap();
        let opened = s.t.app().keyring.open(&sealed).unwrap();
        assert_eq!(opened.expose(), "old-credential");

        // With her provider and config, the import updates her.
        let (status, res) = s
            .post(
                "/api/admin/import-cookie",
                json!({"cookie": "cookie-acme", "mode": "user",
                    "provider_config": {"tenant": "eu"}}),
            )
            .await;
        assert_eq!(status, 200, "{res}");
        assert_eq!(res["mother_id"], mother);
        s.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn import_cookie_checks_its_input() {
    each_backend(|backend| async move {
        let s = Sync::spawn(&backend, false).await;
        for (body, code) in [
            (json!({"cookie": "c", "mode": "both"}), "invalid_mode"),
            (json!({"cookie": "c", "mode": "pool"}), "invalid_pool_group"),
            (
                json!({"cookie": "c", "mode": "pool", "pool_group_id": 999}),
                "invalid_pool_group",
            ),
            (json!({"cookie": " ", "mode": "user"}), "invalid_cookie"),
            (
                json!({"cookie": "c", "mode": "user", "provider": "ldap"}),
                "invalid_provider",
            ),
        ] {
            let (status, res) = s.post("/api/admin/import-cookie", body.clone()).await;
            assert_eq!(status, 400, "{body} -> {res}");
            assert_eq!(res["error"]["code"], code, "{body} -> {res}");
        }
        let (status, _) = s
            .post("/api/admin/import-cookie", json!({"mode": "user"}))
            .await;
        assert_eq!(status, 400);
        s.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn housekeeping_frees_expired_holds_and_drops_old_sessions() {
    each_backend(|backend| async move {
        let s = Sync::spawn(&backend, false).await;
        let app = s.t.app();
        let m = s.mother("acme", None, 3, org("acme", 3, &[])).await;
        let now = app.clock.now_ms();
        store::seats::hold_free_seat(&app.pool, m, "late@x.test", now - 1, now - 10)
            .await
            .unwrap()
            .unwrap();
        store::seats::hold_free_seat(&app.pool, m, "soon@x.test", now + 60_000, now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.detail(m).await.mother.usage.seats_held, 2);
        assert_eq!(store::seats::expire_held(&app.pool, now).await.unwrap(), 1);
        let d = s.detail(m).await;
        assert_eq!(
            d.mother.usage.seats_held, 1,
            "only the hold past its time is freed"
        );
        assert!(
            d.seats
                .iter()
                .all(|x| x.holder_email.as_deref() != Some("late@x.test"))
        );
        assert_eq!(store::seats::expire_held(&app.pool, now).await.unwrap(), 0);

        let session = |sync_type: &'static str| store::sync_sessions::NewSession {
            sync_type,
            category: "pool",
            pool_group_id: None,
            created_by: None,
        };
        let retention = poolkeeper::server::SYNC_SESSION_RETENTION_MS;
        store::sync_sessions::create(
            &app.pool,
            "old",
            &session("scheduled"),
            &[],
            now - retention - 1,
        )
        .await
        .unwrap();
        store::sync_sessions::create(&app.pool, "new", &session("scheduled"), &[], now)
            .await
            .unwrap();
        let removed = store::sync_sessions::delete_started_before(&app.pool, now - retention)
            .await
            .unwrap();
        assert_eq!(removed, 1);
        let (status, _) = s.get("/api/admin/sync-sessions/old").await;
        assert_eq!(status, 404);
        let kept = s.session("new").await;
        assert_eq!(
            kept["status"], "completed",
            "a session without records is done"
        );
        s.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn scheduler_lock_has_one_holder_at_a_time() {
    each_backend(|backend| async move {
        let s = Sync::spawn(&backend, false).await;
        let pool = &s.t.app().pool;
        let key = 4242;
        let first = store::leader::try_lead(pool, key).await.unwrap();
        assert!(first.is_some());
        let second = store::leader::try_lead(pool, key).await.unwrap();
        match backend {
            // One process per SQLite file: it always leads.
            Backend::Sqlite => assert!(second.is_some()),
            Backend::Postgres { .. } => {
                assert!(second.is_none(), "a second session cannot lead");
                drop(first);
                let mut leader =
                    lead_within_2s(pool, key, "leadership to pass on when the holder lets go")
                        .await;
                assert!(leader.still_leads().await);
                // The server cuts the leader's connection: the leader notices, and the lock is
                // free for another session.
                let pg = sqlx::PgPool::connect(&s.t.dbs.config.pool_database_url())
                    .await
                    .unwrap();
                let cut: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_locks \
                     WHERE locktype = 'advisory' AND granted AND database = \
                     (SELECT oid FROM pg_database WHERE datname = current_database())) t",
                )
                .fetch_one(&pg)
                .await
                .unwrap();
                assert_eq!(cut, 1);
                assert!(
                    !leader.still_leads().await,
                    "a cut connection no longer leads"
                );
                lead_within_2s(
                    pool,
                    key,
                    "the lock of a cut session to be free once its backend has ended",
                )
                .await;
            }
        }
        s.t.stop().await;
    })
    .await;
}

/// Takes the scheduler lock, trying for up to 2 s: a session that lets go, or whose connection the
/// server cut, releases the lock as its backend ends, a moment later.
async fn lead_within_2s(
    pool: &poolkeeper::db::PoolDb,
    key: i64,
    what: &str,
) -> store::leader::LeaderGuard {
    wait_until(what, Duration::from_secs(2), || async {
        store::leader::try_lead(pool, key).await.unwrap()
    })
    .await
}

#[tokio::test]
async fn scheduler_syncs_every_active_group_in_scheduled_sessions() {
    each_backend(|backend| async move {
        let t = TestApp::spawn_with(
            &backend,
            |c| {
                c.jobs.poll_interval_ms = 20;
                c.child_email_domain = Some("kids.test".into());
                c.pool_sync_interval_seconds = 1;
            },
            clock::system(),
        )
        .await;
        let token = t.token("sync", Scope::Admin).await;
        let s = Sync { t, token };
        let active = s.group("on").await;
        let paused = s.group("off").await;
        let (status, body) = s
            .post(
                &format!("/api/admin/pool-groups/{paused}/settings"),
                json!({"is_active": false}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let a = s
            .mother("a", Some(active), 2, org("a", 2, &["x@a.test"]))
            .await;
        let b = s
            .mother("b", Some(paused), 2, org("b", 2, &["y@b.test"]))
            .await;
        wait_until(
            "the active group's mother to be synced by the scheduler",
            Duration::from_secs(6),
            || async { s.detail(a).await.mother.last_synced_at.is_some() },
        )
        .await;
        let (_, list) = s.get("/api/admin/sync-sessions?sync_type=scheduled").await;
        assert!(list["total"].as_i64().unwrap() >= 1, "{list}");
        for item in list["items"].as_array().unwrap() {
            assert_eq!(item["pool_group_id"], active, "{item}");
            assert_eq!(item["created_by"], "scheduler");
        }
        assert!(s.detail(b).await.mother.last_synced_at.is_none());
        s.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn sync_sessions_page_shows_statistics_progress_records_and_cancels() {
    each_backend(|backend| async move {
        let s = Sync::spawn_with(&backend, false, 1).await;
        let group = s.group("g1").await;
        for name in ["a", "b"] {
            s.mother(name, Some(group), 2, org(name, 2, &[])).await;
            s.update_org(name, |o| o.faults.latency_ms = 300);
        }
        // Signed in first: the password check is slow in a debug build, and the session must
        // still be running when the page is read.
        let (client, csrf) = s.t.login().await;
        let (_, body) = s
            .post(
                &format!("/api/admin/pool-groups/{group}/sync/all"),
                json!({}),
            )
            .await;
        let id = body["session_id"].as_str().unwrap().to_string();
        let page = client
            .get(s.t.url("/sync-sessions?status=running"))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(html.contains(&id), "the running session is listed");
        assert!(html.contains("<progress"), "with a progress bar");
        assert!(html.contains("id=\"stat-running\">1<"), "and statistics");
        let html = client
            .get(s.t.url("/sync-sessions?status=bogus"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            html.contains("status must be one of"),
            "a bad filter is explained"
        );

        let html = client
            .get(s.t.url(&format!("/sync-sessions/{id}")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            html.contains("Records") && html.contains("/mothers/"),
            "records are shown"
        );
        assert!(html.contains("id=\"cancel\""));
        let origin = s.t.base.clone();
        let res = client
            .post(s.t.url(&format!("/sync-sessions/{id}/cancel")))
            .header("Origin", origin)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("csrf={csrf}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "redirected to the session");
        let html = res.text().await.unwrap();
        assert!(
            html.contains("id=\"session-status\">cancelled<"),
            "cancelled"
        );
        assert_eq!(s.session(&id).await["status"], "cancelled");
        let missing = client
            .get(s.t.url("/sync-sessions/nope"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
        s.t.stop().await;
    })
    .await;
}

/// A logged-in browser-like client posting page forms with the session's CSRF token.
struct Pages {
    client: reqwest::Client,
    csrf: String,
    base: String,
}

impl Pages {
    async fn new(s: &Sync) -> Self {
        let (client, csrf) = s.t.login().await;
        Self {
            client,
            csrf,
            base: s.t.base.clone(),
        }
    }

    /// Posts a form (with the CSRF token unless `csrf` is false); returns status and page.
    async fn post(&self, path: &str, fields: &[(&str, &str)], csrf: bool) -> (u16, String) {
        let mut all = fields.to_vec();
        if csrf {
            all.push(("csrf", &self.csrf));
        }
        let res = self
            .client
            .post(format!("{}{path}", self.base))
            .header("origin", &self.base)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(url_encoded(&all))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }
}

/// The text of `attr="..."` on the first element carrying it.
fn attribute<'h>(html: &'h str, attr: &str) -> Option<&'h str> {
    let start = html.find(&format!("{attr}=\""))? + attr.len() + 2;
    html[start..].split('"').next()
}

#[tokio::test]
async fn import_form_imports_through_the_service_and_points_at_the_sync_job() {
    each_backend(|backend| async move {
        let s = Sync::spawn(&backend, false).await;
        let group = s.group("g1").await;
        let group_id = group.to_string();
        let p = Pages::new(&s).await;
        let (status, html) = p.get("/mothers").await;
        assert_eq!(status, 200);
        assert!(
            html.contains("id=\"import-dialog\"")
                && html.contains("data-show-when=\"mode=pool\"")
                && html.contains("data-show-when=\"provider=scim\"")
                && html.contains(&format!("<option value=\"{group}\"")),
            "the dialog with its mode switch, provider choice and groups: {html}"
        );

        let fields = |cookie: &'static str, mode: &'static str| {
            vec![
                ("cookie", cookie),
                ("mode", mode),
                ("provider", "sim"),
                ("provider_config", ""),
            ]
        };
        let (status, _) = p.post("/mothers/import", &fields("x", "user"), false).await;
        assert_eq!(status, 403, "no CSRF token, no import");

        // A credential the provider does not know: its reason, in the dialog, and no cookie.
        let (status, html) = p
            .post("/mothers/import", &fields("nobody-knows-me", "user"), true)
            .await;
        assert_eq!(status, 422);
        assert!(
            html.contains("id=\"import-error\"") && html.contains("knows no organisation"),
            "{html}"
        );
        assert!(
            html.contains("<dialog id=\"import-dialog\" aria-labelledby=\"import-title\" open>")
        );
        assert!(
            !html.contains("nobody-knows-me"),
            "the cookie is not echoed back"
        );

        let (status, html) = p
            .post("/mothers/import", &fields("cookie-acme", "pool"), true)
            .await;
        assert_eq!(status, 400, "pool mode needs a group");
        assert!(html.contains("pool_group_id is required"), "{html}");
        let mut scim = fields("cookie-acme", "user");
        scim[2] = ("provider", "scim");
        scim[3] = ("provider_config", "{not json");
        let (status, html) = p.post("/mothers/import", &scim, true).await;
        assert_eq!(status, 400);
        assert!(html.contains("provider_config: not JSON"), "{html}");
        assert!(html.contains("{not json"), "what was typed stays");

        // Pool mode: the mother joins the group, and the page follows her sync job.
        s.t.app()
            .providers
            .sim
            .put_org(
                &Credential::new("cookie-acme"),
                org("acme", 5, &["a@acme.test"]),
            )
            .unwrap();
        let mut pool = fields("cookie-acme", "pool");
        pool.push(("pool_group_id", &group_id));
        let (status, html) = p.post("/mothers/import", &pool, true).await;
        assert_eq!(status, 200, "{html}");
        assert!(html.contains("id=\"import-result\"") && html.contains("was created"));
        assert!(!html.contains("cookie-acme"));
        let job = attribute(&html, "data-follow-job").expect("the page follows the job");
        assert!(
            html.contains(&format!("href=\"/jobs/{job}\"")),
            "and links to it"
        );
        assert!(html.contains("href=\"/sync-sessions/"));
        assert_eq!(s.finished(job).await.status, "succeeded");
        // What the page polls: the job's JSON, read with the session cookie.
        let (status, polled) = p.get(&format!("/api/admin/jobs/{job}")).await;
        assert_eq!(status, 200);
        let polled: Value = serde_json::from_str(&polled).unwrap();
        assert_eq!(polled["status"], "succeeded");
        let (_, list) = s
            .get(&format!("/api/admin/mothers?pool_group_id={group}"))
            .await;
        assert_eq!(list["total"], 1, "{list}");
        assert_eq!(list["items"][0]["name"], "acme");

        // User mode on a known account: the mother takes the new credential, nothing is synced.
        let (status, html) = p
            .post("/mothers/import", &fields("cookie-acme", "user"), true)
            .await;
        assert_eq!(status, 200);
        assert!(html.contains("took the new credential"), "{html}");
        assert!(attribute(&html, "data-follow-job").is_none());
        let (_, list) = s.get("/api/admin/mothers").await;
        assert_eq!(list["total"], 1);
        s.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn sync_all_button_queues_every_active_mother_and_links_to_jobs_and_session() {
    each_backend(|backend| async move {
        let s = Sync::spawn(&backend, false).await;
        let group = s.group("g1").await;
        for name in ["a", "b"] {
            s.mother(name, Some(group), 2, org(name, 3, &[])).await;
        }
        let p = Pages::new(&s).await;
        let path = format!("/pool-groups/{group}/sync-all");
        let (_, page) = p.get(&format!("/pool-groups/{group}")).await;
        assert!(
            page.contains(&format!("action=\"{path}\" data-confirm=")),
            "Sync all asks first: {page}"
        );
        let (status, _) = p.post(&path, &[], false).await;
        assert_eq!(status, 403);
        let (status, html) = p.post(&path, &[], true).await;
        assert_eq!(status, 200, "{html}");
        assert!(
            html.contains("id=\"sync-queued\" role=\"status\">Queued 2 sync job(s).<"),
            "{html}"
        );
        assert!(html.contains("href=\"/jobs?type=pool_sync_mother\""));
        let session = attribute(
            &html[html.find("sync-session-link").unwrap() - 80..],
            "href",
        )
        .unwrap()
        .trim_start_matches("/sync-sessions/")
        .to_string();
        let body = s.session(&session).await;
        assert_eq!(body["sync_type"], "manual_batch");
        assert_eq!(body["records"].as_array().unwrap().len(), 2);
        let (status, _) = p.get("/jobs?type=pool_sync_mother").await;
        assert_eq!(status, 200, "the linked Jobs page takes the filter");
        let (status, _) = p.post("/pool-groups/999/sync-all", &[], true).await;
        assert_eq!(status, 404);

        // The settings form carries the group's auto-invite switch.
        let settings = format!("/pool-groups/{group}/settings");
        let templates = [
            ("team_template", "{group}-{date}-{seq3}"),
            ("child_name_template", "{group}-{date}-{seq3}"),
            ("child_email_template", "{group}-{date}-{seq3}@{domain}"),
            ("email_domain", ""),
            ("is_active", "1"),
        ];
        let mut on = templates.to_vec();
        on.push(("auto_invite", "1"));
        let (status, html) = p.post(&settings, &on, true).await;
        assert_eq!(status, 200, "{html}");
        assert!(html.contains("name=\"auto_invite\" value=\"1\" checked"));
        let (_, g) = s.get(&format!("/api/admin/pool-groups/{group}")).await;
        assert_eq!(g["settings"]["auto_invite"], true);
        let (status, _) = p.post(&settings, &templates, true).await;
        assert_eq!(status, 200);
        let (_, g) = s.get(&format!("/api/admin/pool-groups/{group}")).await;
        assert_eq!(
            g["settings"]["auto_invite"], false,
            "unchecked turns it off"
        );
        s.t.stop().await;
    })
    .await;
}

/// The session's `[total, successful, failed, finished]` and status.
fn session_counts(body: &Value) -> ([i64; 4], String) {
    let n = |k: &str| body[k].as_i64().unwrap();
    (
        [
            n("total_instances"),
            n("successful"),
            n("failed"),
            n("finished"),
        ],
        body["status"].as_str().unwrap().to_string(),
    )
}

/// The only record of `mother` in a session body.
fn record_of(body: &Value, mother: i64) -> Value {
    body["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["mother_id"] == mother)
        .cloned()
        .unwrap_or_else(|| panic!("no record of mother {mother} in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retried_sync_runs_again_under_its_reopened_record() {
    each_backend(|backend| async move {
        // One attempt per job: a failure is final at once.
        let s = Sync::spawn_configured(&backend, |c| c.jobs.max_attempts = 1).await;
        let group = s.group("g1").await;

        // Through the API: a sync that fails, retried twice at once.
        let m = s
            .mother("acme", Some(group), 3, org("acme", 3, &["a@acme.test"]))
            .await;
        s.update_org("acme", |o| o.faults.error_rate = 1.0);
        let (status, queued) = s
            .post(
                &format!("/api/admin/pool-groups/{group}/sync/mother/{m}"),
                json!({}),
            )
            .await;
        assert_eq!(status, 202, "{queued}");
        let job = queued["job_id"].as_str().unwrap().to_string();
        let session = queued["session_id"].as_str().unwrap().to_string();
        assert_eq!(s.finished(&job).await.status, "failed");
        let body = s.session(&session).await;
        assert_eq!(session_counts(&body), ([1, 0, 1, 1], "failed".into()));
        assert_eq!(record_of(&body, m)["status"], "failed");

        s.update_org("acme", |o| o.faults.error_rate = 0.0);
        let retry = format!("/api/admin/jobs/{job}/retry");
        let (a, b) = tokio::join!(s.post(&retry, json!({})), s.post(&retry, json!({})));
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "one retry wins: {a:?} {b:?}");
        let done = s.finished(&job).await;
        assert_eq!(done.status, "succeeded", "{:?}", done.last_error);
        assert_eq!(done.attempts, 1, "a fresh attempt budget");
        let body = s.session(&session).await;
        assert_eq!(
            session_counts(&body),
            ([1, 1, 0, 1], "completed".into()),
            "the failure was taken back out: {body}"
        );
        let record = record_of(&body, m);
        assert_eq!(record["status"], "completed");
        assert_eq!(record["job_id"], job.as_str(), "the same record, reopened");
        assert!(record["error_message"].is_null(), "{record}");
        assert_eq!(s.detail(m).await.children.len(), 1, "the sync ran again");
        let (status, _) = s.post(&retry, json!({})).await;
        assert_eq!(status, 409, "a succeeded job is not retried");
        assert_eq!(
            session_counts(&s.session(&session).await),
            ([1, 1, 0, 1], "completed".into()),
            "a refused retry changes no counter"
        );

        // Through the Jobs page: one record of a batch failed; its retry ends the batch well.
        let a = s.mother("a", Some(group), 2, org("a", 2, &[])).await;
        let b = s.mother("b", Some(group), 2, org("b", 2, &[])).await;
        s.update_org("b", |o| o.faults.error_rate = 1.0);
        let (status, queued) = s
            .post(
                &format!("/api/admin/pool-groups/{group}/sync/all"),
                json!({}),
            )
            .await;
        assert_eq!(status, 202, "{queued}");
        let batch = queued["session_id"].as_str().unwrap().to_string();
        for id in queued["job_ids"].as_array().unwrap() {
            s.finished(id.as_str().unwrap()).await;
        }
        let body = s.session(&batch).await;
        assert_eq!(session_counts(&body), ([3, 2, 1, 3], "failed".into()));
        assert_eq!(record_of(&body, a)["status"], "completed");
        let failed = record_of(&body, b);
        assert_eq!(failed["status"], "failed");
        let failed_job = failed["job_id"].as_str().unwrap().to_string();

        s.update_org("b", |o| o.faults.error_rate = 0.0);
        let (client, csrf) = s.t.login_without_redirects().await;
        let res = client
            .post(s.t.url(&format!("/jobs/{failed_job}/retry")))
            .header("origin", &s.t.base)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(url_encoded(&[("csrf", &csrf)]))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 303);
        assert_eq!(
            res.headers()["location"],
            format!("/jobs/{failed_job}").as_str()
        );
        let html = client
            .get(s.t.url(&format!("/jobs/{failed_job}")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            html.contains("Queued again with a fresh attempt budget."),
            "{html}"
        );
        let done = s.finished(&failed_job).await;
        assert_eq!(done.status, "succeeded", "{:?}", done.last_error);
        let body = s.session(&batch).await;
        assert_eq!(
            session_counts(&body),
            ([3, 3, 0, 3], "completed".into()),
            "{body}"
        );
        assert_eq!(record_of(&body, b)["status"], "completed");
        s.t.stop().await;
    })
    .await;
}

/// Sets `cancel_requested` on a job row the way another poolkeeper process would: straight in the
/// database, without this process hearing of it.
async fn request_cancel_from_elsewhere(t: &TestApp, job: &str) {
    const SQL: &str = "UPDATE job_queue SET cancel_requested = TRUE WHERE id = $1";
    let url = t.dbs.config.users_database_url();
    let n = match t.dbs.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            let n = sqlx::query(SQL).bind(job).execute(&pool).await.unwrap();
            pool.close().await;
            n.rows_affected()
        }
        Backend::Postgres { .. } => {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let n = sqlx::query(SQL).bind(job).execute(&pool).await.unwrap();
            pool.close().await;
            n.rows_affected()
        }
    };
    assert_eq!(n, 1, "job {job} is in the queue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_stops_a_sync_whose_provider_never_answers_within_seconds() {
    each_backend(|backend| async move {
        let s = Sync::spawn(&backend, false).await;
        let group = s.group("g1").await;
        for (name, from_elsewhere) in [("here", false), ("elsewhere", true)] {
            let m = s.mother(name, Some(group), 2, org(name, 2, &[])).await;
            // Ten minutes per provider call: only cancellation ends this sync.
            s.update_org(name, |o| o.faults.latency_ms = 600_000);
            let (status, queued) = s
                .post(
                    &format!("/api/admin/pool-groups/{group}/sync/mother/{m}"),
                    json!({}),
                )
                .await;
            assert_eq!(status, 202, "{queued}");
            let job = queued["job_id"].as_str().unwrap().to_string();
            let session = queued["session_id"].as_str().unwrap().to_string();
            session_when(&s, &session, "its record runs", |b| {
                record_of(b, m)["status"] == "running"
            })
            .await;

            let asked = std::time::Instant::now();
            if from_elsewhere {
                request_cancel_from_elsewhere(&s.t, &job).await;
            } else {
                let (status, body) = s
                    .post(&format!("/api/admin/jobs/{job}/cancel"), json!({}))
                    .await;
                assert_eq!(status, 200, "{body}");
                assert_eq!(body["status"], "running", "a running job is asked to stop");
                assert_eq!(body["cancel_requested"], true);
            }
            let done = s.t.job_ended(&job, Duration::from_secs(5)).await;
            assert!(
                asked.elapsed() < Duration::from_secs(5),
                "{name}: stopped after {:?}",
                asked.elapsed()
            );
            assert_eq!(done.status, "cancelled", "{name}: {:?}", done.last_error);
            assert_eq!(done.attempts, 1, "{name}: no further attempt");
            let body = s.session(&session).await;
            let record = record_of(&body, m);
            assert_eq!(record["status"], "cancelled", "{name}: {record}");
            assert_eq!(record["error_message"], "cancelled on request");
            assert_eq!(
                session_counts(&body).0,
                [1, 0, 0, 1],
                "{name}: the session counts the record finished"
            );
        }
        s.t.stop().await;
    })
    .await;
}

/// The page's answer: status, `content-type`, body.
async fn page(client: &reqwest::Client, url: String) -> (u16, String, String) {
    let res = client.get(url).send().await.unwrap();
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, res.text().await.unwrap())
}

#[tokio::test]
async fn page_forms_redirect_with_a_flash_shown_once_and_reloads_do_nothing_again() {
    each_backend(|backend| async move {
        let s = Sync::spawn(&backend, false).await;
        let group = s.group("g1").await;
        let mut mothers = Vec::new();
        for name in ["a", "b"] {
            mothers.push(s.mother(name, Some(group), 2, org(name, 3, &[])).await);
        }
        let (client, csrf) = s.t.login_without_redirects().await;
        let post = |path: String, fields: Vec<(&'static str, String)>| {
            let mut fields = fields;
            fields.push(("csrf", csrf.clone()));
            let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            client
                .post(s.t.url(&path))
                .header("origin", &s.t.base)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(url_encoded(&pairs))
                .send()
        };
        let jobs_total = || async {
            let (_, stats) = s.get("/api/admin/jobs/stats").await;
            stats["total"].as_i64().unwrap()
        };

        // Sync all: 303 to the group; its page says what was queued once; reloads queue nothing.
        let res = post(format!("/pool-groups/{group}/sync-all"), vec![])
            .await
            .unwrap();
        assert_eq!(res.status(), 303);
        let location = res.headers()["location"].to_str().unwrap().to_string();
        assert_eq!(location, format!("/pool-groups/{group}"));
        let set_cookie = res.headers()["set-cookie"].to_str().unwrap().to_lowercase();
        assert!(
            set_cookie.contains("httponly")
                && set_cookie.contains("samesite=strict")
                && set_cookie.contains("path=/"),
            "{set_cookie}"
        );
        let queued = jobs_total().await;
        assert_eq!(queued, 2);
        let (status, _, html) = page(&client, s.t.url(&location)).await;
        assert_eq!(status, 200);
        assert!(
            html.contains("id=\"sync-queued\" role=\"status\">Queued 2 sync job(s).<")
                && html.contains("id=\"sync-session-link\""),
            "{html}"
        );
        for _ in 0..2 {
            let (status, _, html) = page(&client, s.t.url(&location)).await;
            assert_eq!(status, 200);
            assert!(!html.contains("sync-queued"), "the flash is shown once");
        }
        assert_eq!(
            jobs_total().await,
            queued,
            "reloading the result queues nothing"
        );

        // Settings: saved once, said once.
        let settings = vec![
            ("team_template", "{group}-{date}-{seq3}".to_string()),
            ("child_name_template", "{group}-{date}-{seq3}".to_string()),
            (
                "child_email_template",
                "{group}-{date}-{seq3}@{domain}".to_string(),
            ),
            ("email_domain", String::new()),
            ("is_active", "1".to_string()),
        ];
        let res = post(format!("/pool-groups/{group}/settings"), settings)
            .await
            .unwrap();
        assert_eq!(res.status(), 303);
        let (_, _, html) = page(&client, s.t.url(&format!("/pool-groups/{group}"))).await;
        assert!(html.contains("Settings saved."), "{html}");
        let (_, _, html) = page(&client, s.t.url(&format!("/pool-groups/{group}"))).await;
        assert!(!html.contains("Settings saved."));

        // A refused action redirects too, and says why.
        for id in s.finished_all().await {
            let res = post(format!("/jobs/{id}/cancel"), vec![]).await.unwrap();
            assert_eq!(res.status(), 303);
            let (_, _, html) = page(&client, s.t.url(&format!("/jobs/{id}"))).await;
            assert!(
                html.contains("Not done: job is already succeeded"),
                "{html}"
            );
        }
        let res = post(format!("/mothers/{}/delete", mothers[0]), vec![])
            .await
            .unwrap();
        assert_eq!(res.status(), 303);
        assert_eq!(res.headers()["location"], "/mothers");
        let (_, _, html) = page(&client, s.t.url("/mothers")).await;
        assert!(html.contains("Mother deleted."), "{html}");

        // Unknown ids in page addresses: the HTML Not-found page, for reads and for forms.
        let unknown_job = uuid::Uuid::now_v7().to_string();
        for path in [
            format!("/jobs/{unknown_job}"),
            "/jobs/not-a-uuid".to_string(),
            "/sync-sessions/nope".to_string(),
            format!("/mothers/{}", mothers[0]),
            "/mothers/abc".to_string(),
            "/pool-groups/999".to_string(),
            "/pool-groups/abc".to_string(),
        ] {
            let (status, ct, html) = page(&client, s.t.url(&path)).await;
            assert_eq!(status, 404, "{path}");
            assert!(ct.starts_with("text/html"), "{path}: {ct}");
            assert!(html.contains("Not found"), "{path}");
        }
        for path in [
            "/pool-groups/999/sync-all".to_string(),
            format!("/jobs/{unknown_job}/retry"),
            "/sync-sessions/nope/cancel".to_string(),
        ] {
            let res = post(path.clone(), vec![]).await.unwrap();
            assert_eq!(res.status(), 404, "{path}");
            let ct = res.headers()["content-type"].to_str().unwrap().to_string();
            assert!(ct.starts_with("text/html"), "{path}: {ct}");
        }

        // A bad page number is explained on the page; a page past the end shows the last one.
        for path in ["/jobs", "/sync-sessions", "/mothers"] {
            let (status, _, html) = page(&client, s.t.url(&format!("{path}?page=abc"))).await;
            assert_eq!(status, 200, "{path}");
            assert!(
                html.contains("page must be a whole number of at least 1"),
                "{path}: {html}"
            );
        }
        let (status, _, html) = page(&client, s.t.url("/jobs?page=9999")).await;
        assert_eq!(status, 200);
        assert!(html.contains("Page 1 of 1"), "{html}");
        assert!(
            html.contains("href=\"/jobs/"),
            "the last page lists the jobs"
        );
        let (status, _, html) = page(&client, s.t.url("/sync-sessions?page=9999")).await;
        assert_eq!(status, 200);
        assert!(html.contains("Page 1 of 1") && html.contains("href=\"/sync-sessions/0"));
        let (status, _, html) = page(&client, s.t.url("/mothers?page=9999")).await;
        assert_eq!(status, 200);
        assert!(
            html.contains("page 1 of 1") && html.contains("href=\"/mothers/"),
            "{html}"
        );
        s.t.stop().await;
    })
    .await;
}
