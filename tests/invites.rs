//! Invites in bulk against the simulated provider: resend, cancel and remove each change exactly
//! the invites they should and report every one; remove and cancel free the seat; a retried job
//! does not redo finished items; a sync marks a sent invite accepted; stats count codes and
//! invites; the Users page lists invites and its bulk form asks first, then queues a job.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Backend, TestApp, each_backend, url_encoded};
use poolkeeper::auth::Scope;
use poolkeeper::clock;
use poolkeeper::crypto::Credential;
use poolkeeper::providers::MemberStatus;
use poolkeeper::providers::sim::SimOrg;
use poolkeeper::store;
use serde_json::{Value, json};

struct Pool {
    t: TestApp,
    token: String,
}

impl Pool {
    async fn spawn(backend: &Backend) -> Self {
        let t = TestApp::spawn_with(
            backend,
            |c| {
                c.redeem.per_hour = 1000;
                c.child_email_domain = Some("kids.test".into());
                c.jobs.poll_interval_ms = 20;
            },
            clock::system(),
        )
        .await;
        let token = t.token("invites-test", Scope::Admin).await;
        Self { t, token }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.t.send_json(&self.token, method, path, body).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    /// A group with one sim mother of `seats` seats, synced once so her team is linked.
    async fn mother(&self, name: &str, seats: i64) -> i64 {
        let (status, body) = self
            .post(
                "/api/admin/pool-groups",
                json!({"name": format!("g-{name}")}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let group = body["id"].as_i64().unwrap();
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
        self.sync(group, id).await;
        id
    }

    /// Runs a sync of the mother and returns its report.
    async fn sync(&self, group: i64, mother: i64) -> Value {
        let (status, body) = self
            .post(
                &format!("/api/admin/pool-groups/{group}/sync/mother/{mother}"),
                json!({}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        let job = self.job(body["job_id"].as_str().unwrap()).await;
        assert_eq!(job.status, "succeeded", "{:?}", job.last_error);
        serde_json::from_str(job.result.as_deref().unwrap()).unwrap()
    }

    async fn job(&self, id: &str) -> store::jobs::Job {
        self.t.job_ended(id, Duration::from_secs(20)).await
    }

    /// Redeems a fresh code for each address; returns the invite id of each, in order.
    async fn invited(&self, emails: &[&str]) -> Vec<i64> {
        let (status, body) = self
            .post("/api/admin/codes", json!({"count": emails.len()}))
            .await;
        assert_eq!(status, 201, "{body}");
        let mut ids = Vec::new();
        for (code, email) in body["codes"].as_array().unwrap().iter().zip(emails) {
            let res = self
                .t
                .client
                .post(self.t.url("/api/redeem"))
                .json(&json!({"code": code, "email": email}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{email}");
            let list = self.get(&format!("/api/admin/invites?email={email}")).await;
            ids.push(list["items"][0]["id"].as_i64().unwrap());
        }
        ids
    }

    /// Queues a bulk action and waits for its job; returns the job's result.
    async fn bulk(&self, action: &str, ids: &[i64]) -> Value {
        let (status, body) = self
            .post(&format!("/api/admin/invites/{action}"), json!({"ids": ids}))
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["job_type"], format!("users_{action}"));
        let job = self.job(body["job_id"].as_str().unwrap()).await;
        assert_eq!(job.status, "succeeded", "{:?}", job.last_error);
        serde_json::from_str(job.result.as_deref().unwrap()).unwrap()
    }

    async fn invite(&self, id: i64) -> store::invites::Invite {
        store::invites::get(&self.t.app().users, id)
            .await
            .unwrap()
            .unwrap()
    }

    async fn seats(&self, mother: i64) -> (i64, i64) {
        let m = store::mothers::get(&self.t.app().pool, mother)
            .await
            .unwrap();
        (m.usage.seats_used, m.usage.seats_held)
    }

    fn credential(name: &str) -> Credential {
        Credential::new(format!("cred-{name}"))
    }

    /// The sim team's members: address -> status.
    fn members(&self, name: &str) -> BTreeMap<String, MemberStatus> {
        let org = self
            .t
            .app()
            .providers
            .sim
            .org(&Self::credential(name))
            .unwrap()
            .unwrap();
        org.teams[0]
            .members
            .iter()
            .map(|m| (m.email.clone(), m.status))
            .collect()
    }

    /// The address accepts its invitation at the provider.
    fn accept(&self, name: &str, email: &str) {
        self.t
            .app()
            .providers
            .sim
            .update_org(&Self::credential(name), |org| {
                for m in &mut org.teams[0].members {
                    if m.email == email {
                        m.status = MemberStatus::Active;
                    }
                }
            })
            .unwrap();
    }
}

fn results(result: &Value) -> BTreeMap<i64, String> {
    result["results"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.parse().unwrap(), v.as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test]
async fn bulk_actions_change_exactly_their_invites_and_report_each() {
    each_backend(|backend| async move {
        let p = Pool::spawn(&backend).await;
        let mother = p.mother("m1", 5).await;
        let ids = p
            .invited(&["a@x.test", "b@x.test", "c@x.test", "d@x.test"])
            .await;
        let [a, b, c, d] = ids[..] else { panic!() };
        assert_eq!(p.seats(mother).await, (4, 0));
        p.accept("m1", "b@x.test");
        let missing = 999_999;

        // Cancel: a is withdrawn and its seat freed; b already joined and is left alone.
        let result = p.bulk("cancel", &[a, b, missing]).await;
        let want = BTreeMap::from([
            (a, "cancelled".to_string()),
            (b, "skipped: the invite was already accepted".to_string()),
            (missing, "skipped: no such invite".to_string()),
        ]);
        assert_eq!(results(&result), want, "{result}");
        assert_eq!(
            (&result["cancelled"], &result["skipped"], &result["failed"]),
            (&json!(1), &json!(2), &json!(0))
        );
        assert_eq!(p.invite(a).await.status, "cancelled");
        assert_eq!(p.invite(b).await.status, "accepted");
        assert_eq!(p.seats(mother).await, (3, 0), "a's seat is free again");
        let members = p.members("m1");
        assert!(!members.contains_key("a@x.test"), "{members:?}");
        assert_eq!(members.get("b@x.test"), Some(&MemberStatus::Active));

        // Resend: c goes out again; a (cancelled) and b (accepted) are skipped.
        let result = p.bulk("resend", &[c, a, b]).await;
        let want = BTreeMap::from([
            (a, "skipped: the invite is cancelled".to_string()),
            (b, "skipped: the invite is accepted".to_string()),
            (c, "resent".to_string()),
        ]);
        assert_eq!(results(&result), want, "{result}");
        assert_eq!(p.invite(c).await.attempts, 2);
        assert_eq!(p.invite(c).await.status, "sent");
        assert_eq!(p.invite(d).await.attempts, 1, "d was not asked for");

        // Remove: b (a member) and d (invited) leave the team and free their seats.
        let result = p.bulk("remove", &[b, d, a]).await;
        let want = BTreeMap::from([
            (a, "skipped: the invite is cancelled".to_string()),
            (b, "removed".to_string()),
            (d, "removed".to_string()),
        ]);
        assert_eq!(results(&result), want, "{result}");
        assert_eq!(p.invite(b).await.status, "removed");
        assert_eq!(p.invite(d).await.status, "removed");
        assert_eq!(p.invite(c).await.status, "sent", "c was not asked for");
        assert_eq!(p.seats(mother).await, (1, 0), "only c still has a seat");
        let members = p.members("m1");
        assert!(
            !members.contains_key("b@x.test") && !members.contains_key("d@x.test"),
            "{members:?}"
        );
        assert!(members.contains_key("c@x.test"), "{members:?}");

        p.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bulk_requests_need_one_to_a_thousand_ids() {
    each_backend(|backend| async move {
        let p = Pool::spawn(&backend).await;
        let many: Vec<i64> = (1..=1001).collect();
        for (action, body) in [
            ("resend", json!({"ids": []})),
            ("cancel", json!({"ids": many})),
            ("remove", json!({"ids": [0]})),
            ("remove", json!({})),
            ("resend", json!({"ids": "1"})),
        ] {
            let (status, res) = p.post(&format!("/api/admin/invites/{action}"), body).await;
            assert_eq!(status, 400, "{action}: {res}");
            assert!(res["error"]["message"].is_string(), "{res}");
        }
        let (status, res) = p
            .post("/api/admin/invites/cancel", json!({"ids": []}))
            .await;
        assert_eq!(
            (status, res["error"]["code"].as_str()),
            (400, Some("invalid_ids"))
        );
        let (_, jobs) = p.send(reqwest::Method::GET, "/api/admin/jobs", None).await;
        assert_eq!(jobs["total"], 0, "nothing was queued: {jobs}");
        p.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_retried_job_does_not_redo_finished_items() {
    each_backend(|backend| async move {
        let p = Pool::spawn(&backend).await;
        p.mother("m1", 3).await;
        let ids = p.invited(&["a@x.test", "b@x.test"]).await;
        // Every second provider call is rate limited: a's resend goes out, b's is refused, and
        // the job's second attempt must send only b's.
        p.t.app()
            .providers
            .sim
            .update_org(&Pool::credential("m1"), |org| {
                org.calls = 0;
                org.faults.rate_limit_every = 2;
                org.faults.retry_after_ms = 10;
            })
            .unwrap();
        let (status, body) = p
            .post("/api/admin/invites/resend", json!({"ids": ids}))
            .await;
        assert_eq!(status, 202, "{body}");
        let job = p.job(body["job_id"].as_str().unwrap()).await;
        assert_eq!(job.status, "succeeded", "{:?}", job.last_error);
        assert_eq!(job.attempts, 2, "the rate limit cost one attempt");
        let result: Value = serde_json::from_str(job.result.as_deref().unwrap()).unwrap();
        assert_eq!(result["resent"], 2, "{result}");
        assert_eq!(p.invite(ids[0]).await.attempts, 2, "a was resent once");
        assert_eq!(p.invite(ids[1]).await.attempts, 2, "b was resent once");

        // A refusal is no outage: the item fails at once, the invite keeps the provider's error,
        // and nothing changes for a cancel either.
        p.t.app()
            .providers
            .sim
            .update_org(&Pool::credential("m1"), |org| {
                org.faults.rate_limit_every = 0;
                org.faults.revoked = true;
            })
            .unwrap();
        let result = p.bulk("resend", &ids[..1]).await;
        let failed = &results(&result)[&ids[0]];
        assert!(failed.starts_with("failed: unauthorized"), "{result}");
        let invite = p.invite(ids[0]).await;
        assert_eq!((invite.attempts, invite.status.as_str()), (3, "sent"));
        assert!(
            invite
                .last_error
                .as_deref()
                .unwrap_or("")
                .contains("revoked"),
            "{:?}",
            invite.last_error
        );
        let result = p.bulk("cancel", &ids[1..]).await;
        assert_eq!(result["failed"], 1, "{result}");
        assert_eq!(p.invite(ids[1]).await.status, "sent");
        p.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_sync_marks_a_sent_invite_accepted_and_stats_count_codes_and_invites() {
    each_backend(|backend| async move {
        let p = Pool::spawn(&backend).await;
        let mother = p.mother("m1", 4).await;
        let ids = p.invited(&["a@x.test", "b@x.test", "c@x.test"]).await;
        let group = store::mothers::get(&p.t.app().pool, mother)
            .await
            .unwrap()
            .pool_group_id
            .unwrap();
        p.accept("m1", "a@x.test");
        let report = p.sync(group, mother).await;
        assert_eq!(report["invites_accepted"], 1, "{report}");
        assert_eq!(p.invite(ids[0]).await.status, "accepted");
        assert_eq!(p.invite(ids[1]).await.status, "sent", "b has not joined");
        // Again: nothing more to accept.
        assert_eq!(p.sync(group, mother).await["invites_accepted"], 0);
        p.bulk("cancel", &[ids[2]]).await;
        let (status, _) = p.post("/api/admin/codes", json!({"count": 1})).await;
        assert_eq!(status, 201);

        let stats = p.get("/api/admin/stats").await;
        assert_eq!(
            stats["invites"],
            json!({"pending": 0, "sent": 1, "accepted": 1, "failed": 0,
                "cancelled": 1, "removed": 0}),
            "{stats}"
        );
        assert_eq!(
            stats["codes"],
            json!({"unused": 1, "reserved": 0, "used": 3, "expired": 0, "disabled": 0}),
            "{stats}"
        );
        assert_eq!(stats["seats"]["used"], 2, "{stats}");

        // Housekeeping samples the invites gauge from its first round, at start-up.
        let metrics =
            p.t.client
                .get(p.t.url("/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
        for status in [
            "pending",
            "sent",
            "accepted",
            "cancelled",
            "removed",
            "failed",
        ] {
            assert!(
                metrics.contains(&format!("invites_total{{status=\"{status}\"}}")),
                "{status} in:\n{metrics}"
            );
        }
        p.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn users_page_lists_invites_and_its_bulk_form_confirms_then_queues_a_job() {
    each_backend(|backend| async move {
        let p = Pool::spawn(&backend).await;
        let mother = p.mother("m1", 3).await;
        let ids = p.invited(&["a@x.test", "b@x.test"]).await;
        let (client, csrf) = p.t.login_without_redirects().await;
        let page = |path: String| {
            let client = client.clone();
            let url = p.t.url(&path);
            async move {
                let res = client.get(url).send().await.unwrap();
                (res.status().as_u16(), res.text().await.unwrap())
            }
        };

        let (status, html) = page("/invites".into()).await;
        assert_eq!(status, 200);
        assert!(
            html.contains(r#"href="/invites" class="active""#),
            "nav entry"
        );
        assert!(html.contains(">Users</a>"));
        for id in &ids {
            assert!(html.contains(&format!(r#"id="pick-{id}""#)), "row {id}");
        }
        assert!(html.contains("2 invite(s) match."));
        // Times read relative, with the exact UTC time as the tooltip. The invites were made on
        // the system clock a moment ago: on a loaded machine that can be a few seconds.
        assert!(
            html.contains("<time datetime=\"")
                && (html.contains(">just now</time>") || html.contains(" s ago</time>")),
            "relative times: {html}"
        );
        let (_, html) = page(format!(
            "/invites?email=b%40x&mother_id={mother}&status=sent"
        ))
        .await;
        assert!(html.contains("1 invite(s) match."), "{html}");
        assert!(html.contains(&format!(r#"id="pick-{}""#, ids[1])));
        assert!(!html.contains(&format!(r#"id="pick-{}""#, ids[0])));
        let (status, html) = page("/invites?status=bogus".into()).await;
        assert_eq!(status, 400);
        assert!(html.contains("status must be one of"), "{html}");

        let post = |fields: Vec<(&'static str, String)>| {
            let client = client.clone();
            let url = p.t.url("/invites/bulk");
            let origin = p.t.url("");
            async move {
                let fields: Vec<(&str, &str)> =
                    fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
                client
                    .post(url)
                    .header("origin", origin)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(url_encoded(&fields))
                    .send()
                    .await
                    .unwrap()
            }
        };
        let picked = vec![
            ("csrf", csrf.clone()),
            ("action", "cancel".to_string()),
            ("ids", ids[0].to_string()),
        ];
        // First the confirmation page; nothing is queued yet.
        let res = post(picked.clone()).await;
        assert_eq!(res.status(), 200);
        let html = res.text().await.unwrap();
        assert!(html.contains("Cancel 1 invite(s)?"), "{html}");
        assert!(html.contains(r#"name="confirm" value="yes""#), "{html}");
        assert!(html.contains("a@x.test"));
        assert_eq!(p.invite(ids[0]).await.status, "sent");

        // Confirmed: one job, a 303 to its page, and the flash names it.
        let mut confirmed = picked.clone();
        confirmed.push(("confirm", "yes".to_string()));
        let res = post(confirmed).await;
        assert_eq!(res.status(), 303);
        let location = res.headers()["location"].to_str().unwrap().to_string();
        let job_id = location.strip_prefix("/jobs/").unwrap().to_string();
        let job = p.job(&job_id).await;
        assert_eq!(job.job_type, "users_cancel");
        assert_eq!(job.status, "succeeded", "{:?}", job.last_error);
        assert_eq!(p.invite(ids[0]).await.status, "cancelled");
        assert_eq!(p.invite(ids[1]).await.status, "sent");
        let (status, html) = page(location).await;
        assert_eq!(status, 200);
        assert!(
            html.contains(r#"id="job-queued""#) && html.contains(&job_id),
            "the flash names the job: {html}"
        );

        // No invite ticked: refused with a flash, nothing queued.
        let res = post(vec![("csrf", csrf.clone()), ("action", "remove".into())]).await;
        assert_eq!(res.status(), 303);
        assert_eq!(res.headers()["location"], "/invites");
        // No CSRF token: refused.
        let res = post(vec![
            ("action", "remove".into()),
            ("ids", ids[1].to_string()),
            ("confirm", "yes".into()),
        ])
        .await;
        assert_eq!(res.status(), 403);
        assert_eq!(p.invite(ids[1]).await.status, "sent");
        p.t.stop().await;
    })
    .await;
}
