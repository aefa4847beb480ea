//! The `scim` provider against a real SCIM 2.0 server, `scim2-server` from PyPI, reached through a
//! proxy that can inject faults (see `common::scim`). Without the server these tests say so and
//! pass, except under CI, where a server that cannot start fails the run.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::scim::{Faults, OWNER, ScimServer, TOKEN, proxy};
use common::{TestApp, each_backend};
use poolkeeper::auth::Scope;
use poolkeeper::clock;
use poolkeeper::crypto::Credential;
use poolkeeper::domain::egress::EgressRule;
use poolkeeper::providers::scim::{ScimConfig, ScimFactory, ScimProvider};
use poolkeeper::providers::{Invited, MemberStatus, Provider, ProviderError};
use poolkeeper::store;
use serde_json::{Value, json};

/// A mother's `provider_config` for the server behind `base`.
fn provider_config(base: &str) -> Value {
    // A page size of 1 makes every list take several pages.
    json!({"base_url": base, "owner_email": OWNER, "organisation": "acme", "page_size": 1})
}

/// A provider under the development egress rule (loopback allowed), as the local server needs.
fn dev_provider(config: ScimConfig) -> ScimProvider {
    let egress = Arc::new(EgressRule::new(&[], true).unwrap());
    ScimProvider::new(ScimProvider::shared_client(egress.clone()), egress, config)
}

struct Api {
    t: TestApp,
    token: String,
}

impl Api {
    async fn spawn(backend: &common::Backend) -> Self {
        let t = TestApp::spawn_with(
            backend,
            |c| {
                c.pool_auto_invite_missing = true;
                c.child_email_domain = Some("kids.test".into());
                c.jobs.poll_interval_ms = 20;
            },
            clock::system(),
        )
        .await;
        let token = t.token("scim", Scope::Admin).await;
        Self { t, token }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.t
            .send_json(&self.token, reqwest::Method::POST, path, Some(body))
            .await
    }

    async fn group(&self) -> i64 {
        let (status, body) = self
            .post("/api/admin/pool-groups", json!({"name": "g1"}))
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_i64().unwrap()
    }

    async fn import(&self, base: &str, cookie: &str, group: Option<i64>) -> (u16, Value) {
        let mode = if group.is_some() { "pool" } else { "user" };
        self.post(
            "/api/admin/import-cookie",
            json!({"cookie": cookie, "mode": mode, "pool_group_id": group,
                "provider": "scim", "provider_config": provider_config(base)}),
        )
        .await
    }

    async fn enqueue(&self, group: i64, mother: i64) -> String {
        let (status, body) = self
            .post(
                &format!("/api/admin/pool-groups/{group}/sync/mother/{mother}"),
                json!({}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        body["job_id"].as_str().unwrap().to_string()
    }

    async fn finished(&self, id: &str) -> store::jobs::Job {
        self.t.job_ended(id, Duration::from_secs(30)).await
    }

    async fn succeeded(&self, id: &str) -> Value {
        let job = self.finished(id).await;
        assert_eq!(job.status, "succeeded", "{:?}", job.last_error);
        serde_json::from_str(job.result.as_deref().unwrap()).unwrap()
    }
}

#[tokio::test]
async fn scim_sync_renames_backfills_and_invites_once_and_reruns_change_nothing() {
    each_backend(|backend| async move {
        let Some(server) = ScimServer::start().await else {
            return;
        };
        let teams = server.seed_acme().await;
        let faults = Arc::new(Faults::default());
        let base = proxy(&server, faults.clone()).await;
        let api = Api::spawn(&backend).await;
        let group = api.group().await;

        let (status, body) = api.import(&base, TOKEN, Some(group)).await;
        assert_eq!(status, 201, "{body}");
        assert!(!body.to_string().contains(TOKEN));
        let mother = body["mother_id"].as_i64().unwrap();
        let first = api.succeeded(body["job_id"].as_str().unwrap()).await;
        assert_eq!(first["teams_renamed"], 2, "{first}");
        assert_eq!(first["children_created"], 1, "kid1, not the owner: {first}");
        // Seven seats (the default), one used by kid1: six members added.
        assert_eq!(first["invites_sent"], 6, "{first}");

        // The service holds what the sync did.
        let names = server.group_names().await;
        assert!(names.iter().all(|n| n.starts_with("g1-")), "{names:?}");
        // The six went into one team (the first the service lists).
        let members = server.all_member_names(&teams).await;
        assert_eq!(members.len(), 8, "owner, kid1 and six added: {members:?}");
        assert!(members.contains(&OWNER.to_string()));
        assert_eq!(
            members.iter().filter(|m| m.ends_with("@kids.test")).count(),
            6
        );
        let d = store::mothers::get_detail(&api.t.app().pool, mother)
            .await
            .unwrap();
        assert_eq!(d.mother.name, "acme");
        assert_eq!(d.children.len(), 7);
        assert!(d.children.iter().all(|c| c.email != OWNER));
        assert!(d.children.iter().all(|c| c.status == "active"));
        assert_eq!(d.mother.usage.seats_used, 7);

        // The client paged, and every change to a Group carried the Group's ETag.
        let seen = faults.seen.lock().unwrap().clone();
        assert!(
            seen.iter()
                .any(|(m, p, _)| m == "GET" && p.contains("startIndex=2")),
            "lists are paged"
        );
        let patches: Vec<_> = seen.iter().filter(|(m, _, _)| m == "PATCH").collect();
        assert_eq!(patches.len(), 2 + 6, "two renames, six additions");
        assert!(patches.iter().all(|(_, _, if_match)| *if_match));

        // A second run changes nothing, on the service or here.
        let second = api.succeeded(&api.enqueue(group, mother).await).await;
        common::assert_idle_sync(&second);
        assert_eq!(server.group_names().await, names);
        assert_eq!(server.all_member_names(&teams).await, members);

        // 100 concurrent requests for the mother's sync give one job. Slow calls keep the job
        // live while the requests arrive.
        faults.latency_ms.store(300, Ordering::SeqCst);
        let path = api.t.url(&format!(
            "/api/admin/pool-groups/{group}/sync/mother/{mother}"
        ));
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let (client, path, token) = (api.t.client.clone(), path.clone(), api.token.clone());
            tasks.push(tokio::spawn(async move {
                let res = client.post(path).bearer_auth(token).send().await.unwrap();
                assert_eq!(res.status(), 202);
                let body: Value = res.json().await.unwrap();
                (
                    body["job_id"].as_str().unwrap().to_string(),
                    body["deduplicated"].as_bool().unwrap(),
                )
            }));
        }
        let mut ids = std::collections::HashSet::new();
        let mut fresh = 0;
        for t in tasks {
            let (id, dedup) = t.await.unwrap();
            ids.insert(id);
            fresh += usize::from(!dedup);
        }
        assert_eq!(ids.len(), 1, "every response carries the one job's id");
        assert_eq!(fresh, 1, "exactly one request created the job");
        faults.latency_ms.store(0, Ordering::SeqCst);
        common::assert_idle_sync(&api.succeeded(ids.iter().next().unwrap()).await);
        api.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn scim_revoked_token_marks_the_mother_invalid_and_fails_without_retry() {
    each_backend(|backend| async move {
        let Some(server) = ScimServer::start().await else {
            return;
        };
        server.seed_acme().await;
        let faults = Arc::new(Faults::default());
        let base = proxy(&server, faults.clone()).await;
        let api = Api::spawn(&backend).await;
        let group = api.group().await;

        // A token the service refuses: 422 with the status it answered (its own words, which
        // could carry anything, stay in the log), nothing stored.
        let (status, body) = api.import(&base, "not-the-token", Some(group)).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "credential_rejected");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("401 Unauthorized"), "{body}");
        assert!(!message.contains("Authorization failure"), "{body}");
        assert!(!body.to_string().contains("not-the-token"));

        let (status, body) = api.import(&base, TOKEN, None).await;
        assert_eq!(status, 201, "{body}");
        let mother = body["mother_id"].as_i64().unwrap();
        faults.revoked.store(true, Ordering::SeqCst);
        let job = api.finished(&api.enqueue(group, mother).await).await;
        assert_eq!(job.status, "failed");
        assert_eq!(job.attempts, 1, "no retry");
        assert!(
            job.last_error.as_deref().unwrap().contains("now invalid"),
            "{:?}",
            job.last_error
        );
        let d = store::mothers::get_detail(&api.t.app().pool, mother)
            .await
            .unwrap();
        assert_eq!(d.mother.status, "invalid");
        api.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn scim_rate_limited_sync_honours_retry_after_and_succeeds() {
    each_backend(|backend| async move {
        let Some(server) = ScimServer::start().await else {
            return;
        };
        let teams = server.seed_acme().await;
        let faults = Arc::new(Faults::default());
        let base = proxy(&server, faults.clone()).await;
        let api = Api::spawn(&backend).await;
        let group = api.group().await;
        let (status, body) = api.import(&base, TOKEN, None).await;
        assert_eq!(status, 201, "{body}");
        let mother = body["mother_id"].as_i64().unwrap();

        // A long Retry-After ends the attempt: the job is retried after it and succeeds.
        faults.retry_after.store(3, Ordering::SeqCst);
        faults.rate_limit_next.store(1, Ordering::SeqCst);
        let started = std::time::Instant::now();
        let job = api.finished(&api.enqueue(group, mother).await).await;
        assert_eq!(job.status, "succeeded", "{:?}", job.last_error);
        assert_eq!(job.attempts, 2, "retried once");
        assert!(
            started.elapsed() >= Duration::from_secs(3),
            "waited the Retry-After"
        );
        assert_eq!(server.all_member_names(&teams).await.len(), 8);

        // Short ones are waited out inside the run: every 5th call refused, one attempt.
        faults.retry_after.store(1, Ordering::SeqCst);
        faults.rate_limit_every.store(5, Ordering::SeqCst);
        let before = faults.rate_limited.load(Ordering::SeqCst);
        let job = api.finished(&api.enqueue(group, mother).await).await;
        assert_eq!(job.status, "succeeded", "{:?}", job.last_error);
        assert_eq!(job.attempts, 1);
        assert!(faults.rate_limited.load(Ordering::SeqCst) > before);
        common::assert_idle_sync(&serde_json::from_str(job.result.as_deref().unwrap()).unwrap());
        let d = store::mothers::get_detail(&api.t.app().pool, mother)
            .await
            .unwrap();
        assert_eq!(d.children.len(), 7);
        api.t.stop().await;
    })
    .await;
}

/// The provider on its own: idempotent invite and remove, rename, timeouts, bad configs.
#[tokio::test]
async fn scim_provider_calls_are_idempotent_and_time_out() {
    let Some(server) = ScimServer::start().await else {
        return;
    };
    let (team_one, _) = server.seed_acme().await;
    let faults = Arc::new(Faults::default());
    let base = proxy(&server, faults.clone()).await;
    let config = ScimConfig::from_json(&provider_config(&base)).unwrap();
    let scim = dev_provider(config);
    let cred = Credential::new(TOKEN);

    let account = scim.identify(&cred).await.unwrap();
    assert_eq!(account.organisation, "acme");
    assert_eq!(account.owner_email, OWNER);
    let teams = scim.list_teams(&cred).await.unwrap();
    assert_eq!(teams.len(), 2);

    let invite = |email: &'static str| scim.invite(&cred, &team_one, email, "New Kid");
    assert_eq!(invite("new@kids.test").await.unwrap(), Invited::Added);
    assert_eq!(
        invite("new@kids.test").await.unwrap(),
        Invited::AlreadyPresent
    );
    // An existing user who is not in the team is added, not created again.
    assert_eq!(
        invite("kid1@acme.test").await.unwrap(),
        Invited::AlreadyPresent
    );
    let members = scim.list_members(&cred, &team_one).await.unwrap();
    let emails: Vec<&str> = members.iter().map(|m| m.email.as_str()).collect();
    assert_eq!(emails.len(), 2, "the owner is not listed: {emails:?}");
    assert!(emails.contains(&"new@kids.test"));
    assert!(members.iter().all(|m| m.status == MemberStatus::Active));

    scim.remove_member(&cred, &team_one, "new@kids.test")
        .await
        .unwrap();
    scim.remove_member(&cred, &team_one, "new@kids.test")
        .await
        .unwrap();
    scim.remove_member(&cred, &team_one, "nobody@kids.test")
        .await
        .unwrap();
    assert_eq!(
        server.member_names(&team_one).await,
        vec!["kid1@acme.test".to_string(), OWNER.to_string()]
    );

    scim.rename_team(&cred, &team_one, "Renamed").await.unwrap();
    scim.rename_team(&cred, &team_one, "Renamed").await.unwrap();
    assert!(server.group_names().await.contains(&"Renamed".to_string()));
    assert!(matches!(
        scim.rename_team(&cred, "no-such-group", "x").await,
        Err(ProviderError::NotFound(_))
    ));

    // A slow service times out as a transient error.
    let slow = ScimConfig::from_json(&json!({"base_url": base, "owner_email": OWNER,
        "timeout_seconds": 1}))
    .unwrap();
    let slow = dev_provider(slow);
    faults.latency_ms.store(1_500, Ordering::SeqCst);
    match slow.list_teams(&cred).await {
        Err(ProviderError::Transient(m)) => assert!(m.contains("timed out"), "{m}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    faults.latency_ms.store(0, Ordering::SeqCst);

    // A config the provider cannot use is refused when the mother is created.
    each_backend(|backend| async move {
        let api = Api::spawn(&backend).await;
        let (status, body) = api
            .post(
                "/api/admin/mothers",
                json!({"name": "m", "provider": "scim", "credential": "c",
                    "provider_config": {"base_url": "http://idp.example.org/v2", "owner_email": OWNER}}),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("https"),
            "{body}"
        );
        api.t.stop().await;
    })
    .await;
}

/// A server on 127.0.0.1 answering every request with `answer`; returns its `/v2` base URL and
/// the number of requests it has seen.
async fn local_server(
    answer: fn(u16) -> axum::response::Response,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = hits.clone();
    let app = axum::Router::new().fallback(move || {
        seen.fetch_add(1, Ordering::SeqCst);
        async move { answer(port) }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://127.0.0.1:{port}/v2"), hits)
}

fn owner_config(base: &str) -> Value {
    json!({"base_url": base, "owner_email": OWNER})
}

fn scim_answer(status: u16, body: Value) -> axum::response::Response {
    axum::response::Response::builder()
        .status(status)
        .header("content-type", "application/scim+json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap()
}

/// Redirects are not followed: the token would travel to wherever the service points.
#[tokio::test]
async fn scim_redirects_are_not_followed() {
    let (target, target_hits) = local_server(|_| scim_answer(200, json!({"Resources": []}))).await;
    // The redirecting server sends every request to the target (same host, the next free port
    // is unknown here, so the target's URL travels through a static).
    static TARGET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TARGET.set(target).unwrap();
    let (base, hits) = local_server(|_| {
        axum::response::Response::builder()
            .status(302)
            .header("location", format!("{}/Users", TARGET.get().unwrap()))
            .body(axum::body::Body::empty())
            .unwrap()
    })
    .await;
    let scim = dev_provider(ScimConfig::from_json(&owner_config(&base)).unwrap());
    match scim.identify(&Credential::new(TOKEN)).await {
        Err(ProviderError::Permanent(m)) => {
            assert!(m.contains("302") && m.contains("redirect"), "{m}")
        }
        other => panic!("expected a refused redirect, got {other:?}"),
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        target_hits.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
}

/// Loopback, private, link-local and metadata addresses are refused before any connection is
/// made, unless `allow_hosts` lists them; loopback is allowed in development.
#[tokio::test]
async fn scim_refuses_internal_addresses_unless_allowed() {
    let (base, hits) = local_server(|_| scim_answer(200, json!({"Resources": []}))).await;
    let port = base.split(':').nth(2).unwrap().trim_end_matches("/v2");
    let cred = Credential::new(TOKEN);
    let strict = ScimFactory::new(EgressRule::new(&[], false).unwrap());
    for (url, kind) in [
        (base.clone(), "loopback"),
        (format!("http://localhost:{port}/v2"), "loopback"),
        ("https://10.255.255.1/v2".to_string(), "private"),
        ("https://192.168.0.1/v2".to_string(), "private"),
        ("https://[fd00::1]/v2".to_string(), "unique-local"),
        ("https://169.254.169.254/v2".to_string(), "metadata"),
        ("https://169.254.1.1/v2".to_string(), "link-local"),
    ] {
        let scim = strict.provider(&owner_config(&url)).unwrap();
        let started = std::time::Instant::now();
        match scim.identify(&cred).await {
            Err(ProviderError::Permanent(m)) => {
                assert!(m.contains(kind) && m.contains("allow_hosts"), "{url}: {m}")
            }
            other => panic!("{url}: expected a refusal, got {other:?}"),
        }
        // Refused before connecting: nothing waited for the 10 s connect timeout.
        assert!(started.elapsed() < Duration::from_secs(5), "{url}");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a refused address was reached"
    );

    // Listed, the same server is reached; a body without the owner is then the answer.
    let listed = ScimFactory::new(EgressRule::new(&["127.0.0.0/8".into()], false).unwrap());
    for url in [base.clone(), format!("http://localhost:{port}/v2")] {
        let scim = listed.provider(&owner_config(&url)).unwrap();
        match scim.identify(&cred).await {
            Err(ProviderError::Permanent(m)) => assert!(m.contains("has no user"), "{m}"),
            other => panic!("expected the service's answer, got {other:?}"),
        }
    }
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

/// What the service says (`detail`) and why a connection failed stay out of the error; only
/// fixed text and the status code are in it.
#[tokio::test]
async fn scim_errors_carry_fixed_text_only() {
    let (base, _) = local_server(|_| {
        scim_answer(
            400,
            json!({"detail": "internal host db7.corp:5432 says hello", "status": "400"}),
        )
    })
    .await;
    let scim = dev_provider(ScimConfig::from_json(&owner_config(&base)).unwrap());
    match scim.identify(&Credential::new(TOKEN)).await {
        Err(ProviderError::Permanent(m)) => {
            assert!(m.contains("400") && !m.contains("db7"), "{m}")
        }
        other => panic!("expected a 400, got {other:?}"),
    }

    // A closed port: the answer does not say how the connection failed.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let scim = dev_provider(
        ScimConfig::from_json(&owner_config(&format!("http://127.0.0.1:{closed}/v2"))).unwrap(),
    );
    match scim.identify(&Credential::new(TOKEN)).await {
        Err(ProviderError::Transient(m)) => {
            assert!(m.ends_with("could not reach the SCIM service"), "{m}");
            assert!(
                !m.contains("refused") && !m.contains(&closed.to_string()),
                "{m}"
            );
        }
        other => panic!("expected a transient error, got {other:?}"),
    }
}

/// An answer over 10 MiB is refused, whether it says its length or streams.
#[tokio::test]
async fn scim_answers_over_10_mib_are_refused() {
    fn big() -> String {
        format!(
            "{{\"Resources\": [], \"pad\": \"{}\"}}",
            "x".repeat(11 << 20)
        )
    }
    let (sized, _) = local_server(|_| {
        axum::response::Response::builder()
            .status(200)
            .header("content-type", "application/scim+json")
            .body(axum::body::Body::from(big()))
            .unwrap()
    })
    .await;
    let (streamed, _) = local_server(|_| {
        let chunks = big()
            .into_bytes()
            .chunks(64 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>();
        axum::response::Response::builder()
            .status(200)
            .header("content-type", "application/scim+json")
            .body(axum::body::Body::from_stream(futures_util::stream::iter(
                chunks,
            )))
            .unwrap()
    })
    .await;
    for base in [sized, streamed] {
        let scim = dev_provider(ScimConfig::from_json(&owner_config(&base)).unwrap());
        match scim.identify(&Credential::new(TOKEN)).await {
            Err(ProviderError::Permanent(m)) => assert!(m.contains("larger than 10 MiB"), "{m}"),
            other => panic!("{base}: expected a refusal, got {other:?}"),
        }
    }
}
