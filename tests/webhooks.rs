//! Webhooks: every event reaches a local receiver with a signature the test checks with the
//! secret; a 500 is retried by the queue; a redirect is not followed; an address the egress rule
//! refuses is never reached; a free-seat crossing is delivered once; a delivery that fails for
//! good raises nothing. And the System page shows the last backup and the endpoints.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::{Backend, TestApp, each_backend, wait_until};
use hmac::{KeyInit, Mac};
use poolkeeper::auth::Scope;
use poolkeeper::clock;
use poolkeeper::config::{Config, Secret, WebhookConfig};
use poolkeeper::crypto::Credential;
use poolkeeper::providers::sim::SimOrg;
use poolkeeper::store::jobs::NewJob;
use reqwest::Method;
use serde_json::{Value, json};

const SECRET: &str = "whsec-test-0123456789abcdef";
const ALL_EVENTS: [&str; 4] = [
    "mother_invalid",
    "account_quarantined",
    "pool_below_threshold",
    "job_failed",
];

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Got {
    path: String,
    event: String,
    delivery: String,
    signature: String,
    body: Vec<u8>,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A local HTTP receiver: records every request and answers with the next scripted status (200
/// when the script is empty); `/redirect` answers 307 to `/target`.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    async fn start() -> Self {
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let script: Arc<Mutex<VecDeque<u16>>> = Arc::default();
        let (g, s) = (got.clone(), script.clone());
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let (g, s) = (g.clone(), s.clone());
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                g.lock().unwrap().push(Got {
                    path: uri.path().to_string(),
                    event: header("x-poolkeeper-event"),
                    delivery: header("x-poolkeeper-delivery"),
                    signature: header("x-poolkeeper-signature"),
                    body: body.to_vec(),
                });
                if uri.path() == "/redirect" {
                    return Response::builder()
                        .status(307)
                        .header("location", "/target")
                        .body(axum::body::Body::empty())
                        .unwrap();
                }
                let status = s.lock().unwrap().pop_front().unwrap_or(200);
                StatusCode::from_u16(status).unwrap().into_response()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, got, script }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    fn of_event(&self, event: &str) -> Vec<Got> {
        self.got()
            .into_iter()
            .filter(|g| g.event == event)
            .collect()
    }

    async fn wait_for(&self, event: &str, n: usize) -> Vec<Got> {
        wait_until(
            &format!("{n} {event} deliveries"),
            Duration::from_secs(15),
            || async {
                let got = self.of_event(event);
                (got.len() >= n).then_some(got)
            },
        )
        .await
    }
}

fn hook(url: String, events: &[&str]) -> WebhookConfig {
    WebhookConfig {
        url,
        events: events.iter().map(|e| e.to_string()).collect(),
        secret: Some(Secret::new(SECRET)),
        secret_file: None,
    }
}

async fn spawn(
    backend: &Backend,
    hooks: Vec<WebhookConfig>,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    TestApp::spawn_with(
        backend,
        |c| {
            c.webhooks = hooks;
            // The receiver listens on loopback; say so explicitly rather than lean on the
            // development default.
            c.webhooks_allow_hosts = vec!["127.0.0.0/8".into()];
            c.jobs.poll_interval_ms = 20;
            c.child_email_domain = Some("kids.test".into());
            tweak(c);
        },
        clock::system(),
    )
    .await
}

/// Checks the signature header as a receiver would: HMAC-SHA256 with the secret over
/// "<t>.<body>", compared with v1; and `t` is close to now.
fn assert_signed(got: &Got) {
    let mut t = None;
    let mut v1 = None;
    for part in got.signature.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = Some(v.to_string()),
            Some(("v1", v)) => v1 = Some(v.to_string()),
            _ => {}
        }
    }
    let (t, v1) = (
        t.expect("t= in the signature"),
        v1.expect("v1= in the signature"),
    );
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(&got.body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        v1,
        want,
        "signature of {}",
        String::from_utf8_lossy(&got.body)
    );
    let age = time::OffsetDateTime::now_utc().unix_timestamp() - t.parse::<i64>().unwrap();
    assert!((0..60).contains(&age), "t is now-ish: {t}");
    let body = got.json();
    assert_eq!(body["event"], got.event.as_str());
    assert!(body["id"].as_str().is_some_and(|s| !s.is_empty()), "{body}");
    assert!(
        time::OffsetDateTime::parse(
            body["occurred_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok(),
        "{body}"
    );
    assert!(!got.delivery.is_empty());
    assert!(!String::from_utf8_lossy(&got.body).contains(SECRET));
}

async fn post(t: &TestApp, token: &str, path: &str, body: Value) -> Value {
    let (status, body) = t.send_json(token, Method::POST, path, Some(body)).await;
    assert!(
        status == 201 || status == 202 || status == 200,
        "{path}: {status} {body}"
    );
    body
}

/// Enqueues a job no handler knows: it fails for good on its first attempt.
async fn fail_a_job(t: &TestApp) -> String {
    let app = t.app();
    let (job, _) = poolkeeper::jobs::enqueue(
        &app.users,
        &NewJob::new("no_such_kind", json!({})),
        3,
        app.clock.now_ms(),
    )
    .await
    .unwrap();
    job.id
}

async fn webhook_jobs(t: &TestApp) -> Vec<poolkeeper::store::jobs::JobSummary> {
    let filter = poolkeeper::store::jobs::JobFilter {
        job_type: Some("webhook_deliver".into()),
        ..Default::default()
    };
    poolkeeper::store::jobs::list(&t.app().users, &filter, 100, 0)
        .await
        .unwrap()
        .0
}

#[tokio::test]
async fn every_event_is_delivered_with_a_valid_signature() {
    each_backend(|backend| async move {
        let rx = Receiver::start().await;
        let t = spawn(&backend, vec![hook(rx.url("/hook"), &ALL_EVENTS)], |_| {}).await;
        let admin = t.token("admin", Scope::Admin).await;
        let worker = t.token("worker", Scope::Worker).await;

        // mother_invalid (and the sync job's job_failed): the provider rejects her credential.
        let gid = post(&t, &admin, "/api/admin/pool-groups", json!({"name": "eu"})).await["id"]
            .as_i64()
            .unwrap();
        let org = SimOrg::new("acme", "owner@acme.test", 10);
        t.app()
            .providers
            .sim
            .put_org(&Credential::new("cred-acme"), org)
            .unwrap();
        let m = post(
            &t,
            &admin,
            "/api/admin/mothers",
            json!({"name": "acme", "provider": "sim", "credential": "cred-acme",
                "seat_limit": 10, "pool_group_id": gid}),
        )
        .await["id"]
            .as_i64()
            .unwrap();
        t.app()
            .providers
            .sim
            .update_org(&Credential::new("cred-acme"), |o| o.faults.revoked = true)
            .unwrap();
        let job = post(
            &t,
            &admin,
            &format!("/api/admin/pool-groups/{gid}/sync/mother/{m}"),
            json!({}),
        )
        .await["job_id"]
            .as_str()
            .unwrap()
            .to_string();
        let ended = t.job_ended(&job, Duration::from_secs(15)).await;
        assert_eq!(ended.status, "failed", "{ended:?}");
        let invalid = rx.wait_for("mother_invalid", 1).await;
        assert_signed(&invalid[0]);
        let data = &invalid[0].json()["data"];
        assert_eq!(
            (data["mother_id"].as_i64(), data["mother_name"].as_str()),
            (Some(m), Some("acme"))
        );
        assert_eq!(data["pool_group_name"], "eu");
        assert_eq!(invalid[0].path, "/hook");

        let failed = rx.wait_for("job_failed", 1).await;
        assert_signed(&failed[0]);
        let data = &failed[0].json()["data"];
        assert_eq!(data["job_id"], job.as_str());
        assert_eq!(data["job_type"], "pool_sync_mother");

        // account_quarantined: a banned release.
        post(
            &t,
            &admin,
            "/api/admin/accounts",
            json!({"login": "bot@example.org", "password": "pw-1", "pool": "p1"}),
        )
        .await;
        let lease = post(
            &t,
            &worker,
            "/api/pool/leases",
            json!({"worker": "w1", "pool": "p1"}),
        )
        .await;
        let lease_id = lease["lease_id"].as_str().unwrap();
        post(
            &t,
            &worker,
            &format!("/api/pool/leases/{lease_id}/release"),
            json!({"result": "banned"}),
        )
        .await;
        let quarantined = rx.wait_for("account_quarantined", 1).await;
        assert_signed(&quarantined[0]);
        let data = &quarantined[0].json()["data"];
        assert_eq!(
            (data["login"].as_str(), data["pool"].as_str()),
            (Some("bot@example.org"), Some("p1"))
        );
        assert_eq!(data["result"], "banned");

        // pool_below_threshold: the group's only mother is invalid now, so 0 free seats < 5.
        // (Housekeeping's first round may see the crossing first; either way it is delivered once.)
        poolkeeper::service::webhooks::check_free_seats(t.app())
            .await
            .unwrap();
        let low = rx.wait_for("pool_below_threshold", 1).await;
        assert_signed(&low[0]);
        let data = &low[0].json()["data"];
        assert_eq!(
            (data["pool_group_id"].as_i64(), data["free_seats"].as_i64()),
            (Some(gid), Some(0))
        );
        assert_eq!(data["threshold"], 5);

        // Every delivery job succeeded at its first attempt, and each event came once.
        for job in webhook_jobs(&t).await {
            let job = t.job_ended(&job.id, Duration::from_secs(15)).await;
            assert_eq!(
                (job.status.as_str(), job.attempts),
                ("succeeded", 1),
                "{job:?}"
            );
        }
        for event in ALL_EVENTS {
            assert_eq!(rx.of_event(event).len(), 1, "{event}: {:?}", rx.got());
        }
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_receiver_answering_500_then_200_gets_the_same_delivery_again() {
    each_backend(|backend| async move {
        let rx = Receiver::start().await;
        rx.script.lock().unwrap().push_back(500);
        let t = spawn(
            &backend,
            vec![hook(rx.url("/hook"), &["job_failed"])],
            |_| {},
        )
        .await;
        let failed = fail_a_job(&t).await;
        let got = rx.wait_for("job_failed", 2).await;
        assert_eq!(
            got[0].delivery, got[1].delivery,
            "a retry is the same delivery"
        );
        assert_eq!(got[0].body, got[1].body);
        for g in &got {
            assert_signed(g);
            assert_eq!(g.json()["data"]["job_id"], failed.as_str());
        }
        let job = t.job_ended(&got[0].delivery, Duration::from_secs(15)).await;
        assert_eq!((job.status.as_str(), job.attempts), ("succeeded", 2));
        assert!(
            t.app()
                .webhooks
                .last_delivery(&rx.url("/hook"))
                .is_some_and(|d| d.ok)
        );
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_a_failed_delivery_raises_no_webhook() {
    each_backend(|backend| async move {
        let rx = Receiver::start().await;
        let t = spawn(
            &backend,
            vec![hook(rx.url("/redirect"), &["job_failed"])],
            |c| {
                c.jobs.max_attempts = 1;
            },
        )
        .await;
        fail_a_job(&t).await;
        let got = rx.wait_for("job_failed", 1).await;
        let job = t.job_ended(&got[0].delivery, Duration::from_secs(15)).await;
        assert_eq!(job.status, "failed");
        assert!(
            job.last_error
                .as_deref()
                .unwrap_or_default()
                .contains("redirect"),
            "{job:?}"
        );
        // A job enqueued now finishes after the failed delivery was recorded (one runner records
        // outcomes in order), so any webhook that failure raised would be queued by then.
        let app = t.app();
        let (noop, _) = poolkeeper::jobs::enqueue(
            &app.users,
            &NewJob::new("noop", json!({})),
            1,
            app.clock.now_ms(),
        )
        .await
        .unwrap();
        assert_eq!(
            t.job_ended(&noop.id, Duration::from_secs(15)).await.status,
            "succeeded"
        );
        assert_eq!(
            webhook_jobs(&t).await.len(),
            1,
            "the failed delivery raised no job_failed"
        );
        let paths: Vec<String> = rx.got().into_iter().map(|g| g.path).collect();
        assert_eq!(paths, ["/redirect"], "the redirect target is never called");
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn internal_addresses_are_refused_unless_allowed() {
    each_backend(|backend| async move {
        let rx = Receiver::start().await;
        // A private address in the URL, outside webhooks_allow_hosts.
        let t = spawn(
            &backend,
            vec![hook("http://10.255.255.1:9/hook".into(), &["job_failed"])],
            |_| {},
        )
        .await;
        fail_a_job(&t).await;
        let jobs = wait_until("a delivery job", Duration::from_secs(15), || async {
            let jobs = webhook_jobs(&t).await;
            (!jobs.is_empty()).then_some(jobs)
        })
        .await;
        let job = t.job_ended(&jobs[0].id, Duration::from_secs(15)).await;
        assert_eq!(
            (job.status.as_str(), job.attempts),
            ("failed", 1),
            "no retry: {job:?}"
        );
        let error = job.last_error.unwrap_or_default();
        assert!(
            error.contains("private address") && error.contains("webhooks_allow_hosts"),
            "{error}"
        );
        t.stop().await;

        // A host name that resolves to loopback, in production (no loopback by default) with no
        // allow list: refused at connection time, the receiver never called.
        let t = TestApp::spawn_with(
            &backend,
            |c| {
                c.env = poolkeeper::config::RunEnv::Production;
                c.webhooks = vec![hook(
                    format!("http://localhost:{}/hook", rx.addr.port()),
                    &["job_failed"],
                )];
                c.jobs.poll_interval_ms = 20;
            },
            clock::system(),
        )
        .await;
        fail_a_job(&t).await;
        let job = wait_until("the delivery to fail", Duration::from_secs(15), || async {
            webhook_jobs(&t)
                .await
                .into_iter()
                .find(|j| j.status == "failed")
        })
        .await;
        assert_eq!(job.attempts, 1);
        let error = job.last_error.unwrap_or_default();
        assert!(
            error.contains("loopback") && error.contains("webhooks_allow_hosts"),
            "{error}"
        );
        assert!(rx.got().is_empty(), "{:?}", rx.got());
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_free_seat_crossing_is_delivered_once_and_rearms_when_seats_come_back() {
    each_backend(|backend| async move {
        let rx = Receiver::start().await;
        let t = spawn(
            &backend,
            vec![hook(rx.url("/hook"), &["pool_below_threshold"])],
            |_| {},
        )
        .await;
        let admin = t.token("admin", Scope::Admin).await;
        let gid = post(
            &t,
            &admin,
            "/api/admin/pool-groups",
            json!({"name": "apac"}),
        )
        .await["id"]
            .as_i64()
            .unwrap();
        let m = post(
            &t,
            &admin,
            "/api/admin/mothers",
            json!({"name": "big", "provider": "sim", "credential": "cred-big",
                "seat_limit": 8, "pool_group_id": gid}),
        )
        .await["id"]
            .as_i64()
            .unwrap();
        // Housekeeping's first round may run beside these checks and see a crossing first, so
        // the test counts the deliveries enqueued, not which check saw it.
        let check = || async {
            poolkeeper::service::webhooks::check_free_seats(t.app())
                .await
                .unwrap();
        };
        let enqueued = |n: usize| {
            let t = &t;
            async move {
                wait_until(
                    &format!("{n} deliveries enqueued"),
                    Duration::from_secs(15),
                    || async { webhook_jobs(t).await.len() == n },
                )
                .await
            }
        };
        check().await;
        assert!(
            webhook_jobs(&t).await.is_empty(),
            "8 free seats are not below 5"
        );
        let pool = &t.app().pool;
        let now = t.app().clock.now_ms();
        poolkeeper::store::mothers::set_status(pool, m, "disabled", now)
            .await
            .unwrap();
        check().await;
        enqueued(1).await;
        check().await;
        check().await;
        assert_eq!(
            webhook_jobs(&t).await.len(),
            1,
            "still below: no new crossing"
        );
        rx.wait_for("pool_below_threshold", 1).await;
        poolkeeper::store::mothers::set_status(pool, m, "active", now)
            .await
            .unwrap();
        check().await;
        assert_eq!(
            webhook_jobs(&t).await.len(),
            1,
            "back above: cleared, nothing sent"
        );
        poolkeeper::store::mothers::set_status(pool, m, "disabled", now + 1)
            .await
            .unwrap();
        check().await;
        enqueued(2).await;
        let got = rx.wait_for("pool_below_threshold", 2).await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert_ne!(got[0].delivery, got[1].delivery);
        for g in &got {
            assert_signed(g);
            assert_eq!(g.json()["data"]["pool_group_name"], "apac");
        }
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn system_page_shows_the_last_backup_and_the_endpoints_without_secrets() {
    each_backend(|backend| async move {
        let t = spawn(
            &backend,
            vec![hook(
                "https://hooks.example.org/secret-path".into(),
                &["job_failed", "mother_invalid"],
            )],
            |_| {},
        )
        .await;
        let (client, _) = t.login().await;
        let page = client
            .get(t.url("/system"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("data-testid=\"backup-none\""), "{page}");

        let dir = t.app().config.backup_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("poolkeeper-backup-20261130T080000000Z.zip"),
            vec![7u8; 1536],
        )
        .unwrap();
        let last = poolkeeper::backup::last_backup(&t.app().config)
            .unwrap()
            .unwrap();
        let page = client
            .get(t.url("/system"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            page.contains(&clock::rfc3339(last.at_ms)),
            "the backup's time: {page}"
        );
        assert!(page.contains("1.5 KiB"), "the backup's size: {page}");
        assert!(page.contains("hooks.example.org"), "{page}");
        assert!(page.contains("job_failed, mother_invalid"), "{page}");
        assert!(
            !page.contains(SECRET) && !page.contains("secret-path"),
            "{page}"
        );
        t.stop().await;
    })
    .await;
}
