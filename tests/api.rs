//! The HTTP API: probes, errors as JSON, authentication, CSRF, the domain guard, metrics, OpenAPI.

mod common;

use common::{TestApp, api_error, each_backend, wait_until};
use poolkeeper::auth::Scope;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn probes_status_and_system_report_both_databases() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let c = &t.client;
        assert_eq!(c.get(t.url("/healthz")).send().await.unwrap().status(), 200);
        assert_eq!(c.get(t.url("/readyz")).send().await.unwrap().status(), 200);

        let token = t.token("probe", Scope::Admin).await;
        let status: Value = c
            .get(t.url("/api/admin/db-status"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for db in ["pool", "users"] {
            assert_eq!(status[db]["backend"], backend.name(), "{status}");
            assert_eq!(status[db]["ok"], true);
            assert_eq!(status[db]["pending"], 0);
            assert!(status[db]["version"].as_i64().unwrap() >= 1);
        }
        let system: Value = c
            .get(t.url("/api/admin/system"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(system["env"], "development");
        assert_eq!(system["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(system["domain_guard"], false);
        assert_eq!(
            system["jobs"],
            json!({"visibility_timeout_seconds": 300, "max_attempts": 3})
        );
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn readyz_is_503_naming_the_database_that_is_behind() {
    each_backend(|backend| async move {
        let dbs = common::TestDbs::new(&backend).await;
        let (pool, users) = poolkeeper::server::open_databases(&dbs.config, true)
            .await
            .unwrap();
        pool.database().migrate().await.unwrap();
        // The users database is left unmigrated.
        let keyring = poolkeeper::crypto::Keyring::from_config(&dbs.config).unwrap();
        let app = poolkeeper::app::App::new(
            dbs.config.clone(),
            pool,
            users,
            poolkeeper::clock::system(),
            keyring,
        );
        let server = poolkeeper::server::start(app, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let err = api_error(
            reqwest::get(format!("http://{}/readyz", server.addr))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((err.status, err.code.as_str()), (503, "not_ready"));
        assert!(
            err.message.contains("users database") && err.message.contains("pending"),
            "{err:?}"
        );
        assert!(!err.message.contains("pool database"), "{err:?}");
        server.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn bad_input_gets_json_4xx_never_500() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let token = t.token("errors", Scope::Admin).await;
        let c = &t.client;
        let post = |body: &'static str| {
            c.post(t.url("/api/admin/tokens"))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(body)
        };

        let err = api_error(
            c.get(t.url("/api/no/such/route"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((err.status, err.code.as_str()), (404, "not_found"));

        let err = api_error(
            c.delete(t.url("/api/admin/system"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((err.status, err.code.as_str()), (405, "method_not_allowed"));

        let err = api_error(post("{not json").send().await.unwrap()).await;
        assert_eq!((err.status, err.code.as_str()), (400, "invalid_json"));

        let err = api_error(
            post(r#"{"name": "x", "scope": "root"}"#)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((err.status, err.code.as_str()), (400, "invalid_body"));
        assert!(
            err.message.contains("scope") || err.message.contains("root"),
            "{err:?}"
        );

        let err = api_error(post(r#"{"scope": "admin"}"#).send().await.unwrap()).await;
        assert_eq!(err.status, 400);
        assert!(
            err.message.contains("name"),
            "names the missing field: {err:?}"
        );

        let err = api_error(
            c.post(t.url("/api/admin/tokens"))
                .bearer_auth(&token)
                .body("{}")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(err.status, 415);

        let big = format!(
            r#"{{"name": "{}", "scope": "admin"}}"#,
            "x".repeat(1024 * 1024 + 10)
        );
        let err = api_error(
            c.post(t.url("/api/admin/tokens"))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(big)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((err.status, err.code.as_str()), (413, "payload_too_large"));

        let err = api_error(
            c.delete(t.url("/api/admin/tokens/abc"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((err.status, err.code.as_str()), (400, "invalid_path"));
        let err = api_error(
            c.delete(t.url("/api/admin/tokens/999999"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(err.status, 404);

        for query in ["page=0", "page_size=501", "page=abc", "scope=root"] {
            let err = api_error(
                c.get(t.url(&format!("/api/admin/tokens?{query}")))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(err.status, 400, "{query}: {err:?}");
        }
        let err = api_error(
            post(r#"{"name": "errors", "scope": "admin"}"#)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((err.status, err.code.as_str()), (409, "conflict"));
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn credentials_are_required_and_scoped() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let c = &t.client;
        let err = api_error(c.get(t.url("/api/admin/system")).send().await.unwrap()).await;
        assert_eq!((err.status, err.code.as_str()), (401, "unauthorized"));

        let err = api_error(
            c.get(t.url("/api/admin/system"))
                .bearer_auth("pk_not_a_token")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(err.status, 401);
        let err = api_error(
            c.get(t.url("/api/admin/system"))
                .header("authorization", "Basic YTpi")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(err.status, 401);

        let worker = t.token("worker-1", Scope::Worker).await;
        let err = api_error(
            c.get(t.url("/api/admin/system"))
                .bearer_auth(&worker)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((err.status, err.code.as_str()), (403, "insufficient_scope"));

        let admin = t.token("admin-1", Scope::Admin).await;
        let me: Value = c
            .get(t.url("/api/admin/me"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            me,
            json!({"kind": "token", "name": "token:admin-1", "scope": "admin", "role": "admin"})
        );

        // Revoking a token through the API makes it stop working at once.
        let list: Value = c
            .get(t.url("/api/admin/tokens"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list["total"], 2);
        assert!(
            !list.to_string().contains(&worker),
            "token values are never listed"
        );
        assert_eq!(revoke(&t, &admin, id_of(&list, "worker-1")).await, 200);
        let err = api_error(
            c.get(t.url("/api/admin/system"))
                .bearer_auth(&worker)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(err.status, 401);

        // A token created through the API is shown once and works.
        let created: Value = c
            .post(t.url("/api/admin/tokens"))
            .bearer_auth(&admin)
            .json(&json!({"name": "ci", "scope": "admin"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let value = created["value"].as_str().unwrap();
        assert_eq!(
            c.get(t.url("/api/admin/system"))
                .bearer_auth(value)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn login_sets_a_strict_http_only_cookie_and_logout_ends_it() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let c = &t.client;
        let err = api_error(
            c.post(t.url("/api/admin/login"))
                .json(&json!({"username": "admin", "password": "wrong-password"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((err.status, err.code.as_str()), (401, "unauthorized"));

        let res = c
            .post(t.url("/api/admin/login"))
            .json(&json!({"username": "admin", "password": common::ADMIN_PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let cookie = res
            .headers()
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(cookie.starts_with("pk_session="), "{cookie}");
        assert!(
            cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Strict")
                && cookie.contains("Path=/"),
            "{cookie}"
        );
        assert!(
            !cookie.contains("Secure"),
            "not Secure unless cookie_secure is set: {cookie}"
        );
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["username"], "admin");
        assert!(body["csrf_token"].as_str().unwrap().len() >= 32);

        let (client, csrf) = t.login().await;
        let me: Value = client
            .get(t.url("/api/admin/me"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            me,
            json!({"kind": "session", "name": "admin", "scope": "admin", "role": "admin"})
        );
        let res = client
            .post(t.url("/api/admin/logout"))
            .header("x-csrf-token", &csrf)
            .header("origin", &t.base)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        let err = api_error(client.get(t.url("/api/admin/me")).send().await.unwrap()).await;
        assert_eq!(err.status, 401, "the session is gone after logout");
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn secure_cookie_when_configured() {
    let t = TestApp::spawn_with(
        &common::Backend::Sqlite,
        |c| c.cookie_secure = Some(true),
        poolkeeper::clock::system(),
    )
    .await;
    let res = t
        .client
        .post(t.url("/api/admin/login"))
        .json(&json!({"username": "admin", "password": common::ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    let cookie = res.headers().get("set-cookie").unwrap().to_str().unwrap();
    assert!(cookie.contains("Secure"), "{cookie}");
    t.stop().await;
}

#[tokio::test]
async fn repeated_login_failures_are_throttled_per_username_and_per_address() {
    let clock = poolkeeper::clock::ManualClock::new(1_700_000_000_000);
    let t = TestApp::spawn_with(&common::Backend::Sqlite, |_| {}, clock.clone()).await;
    let c = &t.client;
    let attempt = |user: &str, password: &str| {
        c.post(t.url("/api/admin/login"))
            .json(&json!({"username": user, "password": password}))
            .send()
    };
    for _ in 0..5 {
        assert_eq!(
            attempt("admin", "wrong-password").await.unwrap().status(),
            401
        );
    }
    let res = attempt("admin", common::ADMIN_PASSWORD).await.unwrap();
    let retry_after: u64 = res
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        api_error(res).await.status,
        429,
        "even the right password waits"
    );
    assert!(retry_after > 0 && retry_after <= 15 * 60, "{retry_after}");

    // Past the window the right password works again.
    clock.advance_ms(15 * 60 * 1000);
    assert_eq!(
        attempt("admin", common::ADMIN_PASSWORD)
            .await
            .unwrap()
            .status(),
        200
    );

    // The same address trying many usernames is throttled too.
    for i in 0..5 {
        assert_eq!(
            attempt(&format!("nobody{i}"), "wrong-password")
                .await
                .unwrap()
                .status(),
            401
        );
    }
    assert_eq!(
        attempt("someone-else", "whatever-password")
            .await
            .unwrap()
            .status(),
        429
    );
    t.stop().await;
}

/// The id of the token named `name` in a token list.
fn id_of(list: &Value, name: &str) -> i64 {
    let items = list["items"].as_array().expect("a token list");
    let token = items.iter().find(|x| x["name"] == name).expect("the token");
    token["id"].as_i64().expect("its id")
}

/// Revokes token `id` through the API as `admin`: the status.
async fn revoke(t: &TestApp, admin: &str, id: i64) -> u16 {
    let path = format!("/api/admin/tokens/{id}");
    t.send_json(admin, Method::DELETE, &path, None).await.0
}

/// A server reads a token at most once a second. Revoked through its API, a token stops working at
/// once; revoked elsewhere (the CLI, another process), within that second.
#[tokio::test]
async fn a_token_revoked_elsewhere_stops_working_within_a_second() {
    let clock = poolkeeper::clock::ManualClock::new(1_700_000_000_000);
    let t = TestApp::spawn_with(&common::Backend::Sqlite, |_| {}, clock.clone()).await;
    let admin = t.token("admin-bot", Scope::Admin).await;
    let cli_revoked = t.token("cli-revoked", Scope::Viewer).await;
    let api_revoked = t.token("api-revoked", Scope::Viewer).await;
    let status = |token: String| {
        let req = t.client.get(t.url("/api/admin/system")).bearer_auth(token);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(cli_revoked.clone()).await, 200);
    assert_eq!(status(api_revoked.clone()).await, 200);

    poolkeeper::service::tokens::revoke_by_name(
        &t.app().users,
        "cli-revoked",
        t.app().clock.now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(
        status(cli_revoked.clone()).await,
        200,
        "read less than a second ago"
    );
    clock.advance_ms(poolkeeper::auth::TokenCache::FRESH_MS);
    assert_eq!(status(cli_revoked).await, 401);

    assert_eq!(status(api_revoked.clone()).await, 200);
    let tokens = t
        .send_json(&admin, Method::GET, "/api/admin/tokens?page_size=100", None)
        .await
        .1;
    assert_eq!(revoke(&t, &admin, id_of(&tokens, "api-revoked")).await, 200);
    assert_eq!(
        status(api_revoked).await,
        401,
        "revoked through the API: at once"
    );
    t.stop().await;
}

/// `DELETE /api/admin/tokens/{id}` revokes by id only, and names cannot be mistaken for ids or
/// carry control characters.
#[tokio::test]
async fn tokens_are_revoked_by_id_only_and_names_are_checked() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let admin = t.token("admin-bot", Scope::Admin).await;
        let c = &t.client;
        for name in ["3", "0042", "line\nbreak", "bell\u{7}"] {
            let err = api_error(
                c.post(t.url("/api/admin/tokens"))
                    .bearer_auth(&admin)
                    .json(&json!({"name": name, "scope": "worker"}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(
                (err.status, err.code.as_str()),
                (400, "invalid_name"),
                "{name:?}"
            );
        }
        // A name of digits from before the rule: deleting that number as an id leaves it alone.
        let legacy =
            poolkeeper::store::tokens::create(&t.app().users, "999998", "worker", "legacy-hash", 1)
                .await
                .unwrap();
        assert_ne!(legacy.id, 999998);
        let res = c
            .delete(t.url("/api/admin/tokens/999998"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
        let all = poolkeeper::store::tokens::list(&t.app().users)
            .await
            .unwrap();
        let legacy = all.iter().find(|x| x.id == legacy.id).unwrap();
        assert!(legacy.revoked_at.is_none(), "revoked by its name");
        t.stop().await;
    })
    .await;
}

/// Attempts are counted before the password is checked: of a burst of parallel bad logins for one
/// user from one address, at most the limit (5) are checked, the rest are refused at once.
#[tokio::test]
async fn a_burst_of_parallel_bad_logins_checks_at_most_the_limit() {
    let t = TestApp::spawn(&common::Backend::Sqlite).await;
    let attempts = (0..100).map(|i| {
        t.client
            .post(t.url("/api/admin/login"))
            .json(&json!({"username": "admin", "password": format!("wrong-password-{i}")}))
            .send()
    });
    let statuses: Vec<u16> = futures_join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    let busy = statuses.iter().filter(|s| **s == 503).count();
    assert!((1..=5).contains(&checked), "{statuses:?}");
    assert!(checked + busy <= 5, "{statuses:?}");
    assert_eq!(checked + busy + refused, 100, "{statuses:?}");
    t.stop().await;
}

/// Runs the futures concurrently (each on its own task) and returns their outputs in order.
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn cookie_requests_need_csrf_token_and_same_origin_bearer_requests_do_not() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let (client, csrf) = t.login().await;
        let create = |name: &str| {
            client
                .post(t.url("/api/admin/tokens"))
                .json(&json!({"name": name, "scope": "worker"}))
        };

        let err = api_error(create("a").header("origin", &t.base).send().await.unwrap()).await;
        assert_eq!(
            (err.status, err.code.as_str()),
            (403, "csrf_failed"),
            "no token"
        );
        let err = api_error(
            create("b")
                .header("origin", &t.base)
                .header("x-csrf-token", "wrong")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (err.status, err.code.as_str()),
            (403, "csrf_failed"),
            "wrong token"
        );
        let err = api_error(
            create("c")
                .header("origin", "http://evil.example")
                .header("x-csrf-token", &csrf)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (err.status, err.code.as_str()),
            (403, "csrf_failed"),
            "foreign origin"
        );
        let err = api_error(
            create("d")
                .header("x-csrf-token", &csrf)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (err.status, err.code.as_str()),
            (403, "csrf_failed"),
            "no origin or referer"
        );

        assert_eq!(
            create("e")
                .header("origin", &t.base)
                .header("x-csrf-token", &csrf)
                .send()
                .await
                .unwrap()
                .status(),
            201
        );
        let referer = format!("{}/some/page", t.base);
        assert_eq!(
            create("f")
                .header("referer", referer)
                .header("x-csrf-token", &csrf)
                .send()
                .await
                .unwrap()
                .status(),
            201
        );
        // Safe methods need no CSRF token.
        assert_eq!(
            client
                .get(t.url("/api/admin/tokens"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );

        let admin = t.token("bearer", Scope::Admin).await;
        let res = t
            .client
            .post(t.url("/api/admin/tokens"))
            .bearer_auth(&admin)
            .json(&json!({"name": "g", "scope": "worker"}))
            .send()
            .await;
        assert_eq!(
            res.unwrap().status(),
            201,
            "bearer requests are exempt from CSRF"
        );
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn domain_guard_requires_matching_x_domain_and_every_admin_response_acks_its_domain() {
    each_backend(|backend| async move {
        let t = TestApp::spawn_with(
            &backend,
            |c| c.env = poolkeeper::config::RunEnv::Production,
            poolkeeper::clock::system(),
        )
        .await;
        let admin = t.token("guard", Scope::Admin).await;
        let c = &t.client;
        let system: Value = c
            .get(t.url("/api/admin/system"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(system["domain_guard"], true, "on by default in production");

        let create = |domain: Option<&str>, name: &str| {
            let req = c
                .post(t.url("/api/admin/tokens"))
                .bearer_auth(&admin)
                .json(&json!({"name": name, "scope": "worker"}));
            match domain {
                Some(d) => req.header("x-domain", d),
                None => req,
            }
        };
        let err = api_error(create(None, "a").send().await.unwrap()).await;
        assert_eq!((err.status, err.code.as_str()), (403, "domain_mismatch"));
        assert!(err.message.contains("users"), "{err:?}");
        let err = api_error(create(Some("pool"), "b").send().await.unwrap()).await;
        assert_eq!((err.status, err.code.as_str()), (403, "domain_mismatch"));
        let res = create(Some("users"), "c").send().await.unwrap();
        assert_eq!(res.status(), 201);
        assert_eq!(res.headers()["x-domain-ack"], "users");

        // Safe requests and system routes pass without X-Domain, and still ack their domain.
        let res = c
            .get(t.url("/api/admin/tokens"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(
            (
                res.status().as_u16(),
                res.headers()["x-domain-ack"].to_str().unwrap()
            ),
            (200, "users")
        );
        let res = c
            .get(t.url("/api/admin/db-status"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["x-domain-ack"], "system");
        let res = c
            .post(t.url("/api/admin/logout"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(
            (
                res.status().as_u16(),
                res.headers()["x-domain-ack"].to_str().unwrap()
            ),
            (204, "system")
        );
        // Error responses of a routed admin path carry the ack as well.
        let res = c.get(t.url("/api/admin/tokens")).send().await.unwrap();
        assert_eq!(
            (
                res.status().as_u16(),
                res.headers()["x-domain-ack"].to_str().unwrap()
            ),
            (401, "users")
        );
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn request_metric_counts_by_route_template_and_duration_histogram_exists() {
    let t = TestApp::spawn(&common::Backend::Sqlite).await;
    let admin = t.token("metrics", Scope::Admin).await;
    let c = &t.client;
    for id in [424242, 434343] {
        let res = c
            .delete(t.url(&format!("/api/admin/tokens/{id}")))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
    }
    let text = c
        .get(t.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("admin_api_requests_total{")
                && l.contains(r#"path="/api/admin/tokens/{id}""#)
                && l.contains(r#"method="DELETE""#)
                && l.contains(r#"domain="users""#)
                && l.contains(r#"status="404""#)
        })
        .unwrap_or_else(|| panic!("no counter line for the route template in:\n{text}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 2.0, "{line}");
    assert!(!text.contains("424242"), "raw paths never become labels");
    assert!(
        text.contains("admin_api_request_duration_seconds_bucket{"),
        "duration histogram:\n{text}"
    );
    t.stop().await;
}

#[tokio::test]
async fn security_headers_are_on_every_response() {
    let t = TestApp::spawn(&common::Backend::Sqlite).await;
    for path in [
        "/healthz",
        "/login",
        "/",
        "/static/app.css",
        "/api/admin/system",
        "/api/nope",
        "/nope",
        "/api/openapi.json",
    ] {
        let res = t.client.get(t.url(path)).send().await.unwrap();
        let h = res.headers();
        let csp = h
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("CSP on {path}"))
            .to_str()
            .unwrap();
        assert!(
            csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert!(h.contains_key("referrer-policy"), "{path}");
    }
    t.stop().await;
}

/// The route table: every documented operation, its domain, and whether it needs credentials.
/// A route added later without a domain tag, or without authentication, fails here.
#[tokio::test]
async fn route_table_every_route_has_a_domain_and_admin_routes_need_credentials() {
    let doc = poolkeeper::http::openapi();
    let public = [
        ("POST", "/api/admin/login"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("POST", "/api/redeem"),
        ("POST", "/api/redeem/resend"),
    ];
    let t = TestApp::spawn(&common::Backend::Sqlite).await;
    let mut table = Vec::new();
    for (method, path, tags) in poolkeeper::http::routes::operations(&doc) {
        let domains: Vec<_> = tags
            .iter()
            .filter(|t| poolkeeper::http::routes::Domain::parse(t).is_some())
            .collect();
        assert_eq!(
            domains.len(),
            1,
            "{method} {path} must have exactly one domain tag, has {tags:?}"
        );
        table.push(format!(
            "{:<7} {:<32} {}",
            method.as_str(),
            path,
            domains[0]
        ));

        let concrete = path.replace("{id}", "1");
        let res = t
            .client
            .request(method.clone(), t.url(&concrete))
            .send()
            .await
            .unwrap();
        assert_ne!(
            res.status(),
            405,
            "{method} {path} is documented but not routed"
        );
        if res.status() == 404 {
            let err = api_error(res).await;
            assert!(
                !err.message.starts_with("no API route"),
                "{method} {path} is documented but not routed"
            );
            continue;
        }
        if !public.contains(&(method.as_str(), path.as_str())) {
            // Admin routes, and the worker routes of leasing: both need credentials.
            assert!(
                path.starts_with("/api/admin/") || path.starts_with("/api/pool/"),
                "{path}"
            );
            assert_eq!(res.status(), 401, "{method} {path} must need credentials");
            assert_eq!(
                res.headers()["x-domain-ack"].to_str().unwrap(),
                domains[0].as_str()
            );
        }
    }
    table.sort();
    // The simulator's route of issue 13 stays in the table (it answers 404 while disabled).
    assert!(
        table
            .iter()
            .any(|row| row.starts_with("POST    /api/admin/sim/orgs ")),
        "POST /api/admin/sim/orgs missing from {table:#?}"
    );
    eprintln!("route table:\n{}", table.join("\n"));
    // Routes the table must hold, with their domain (issue 15's invites among them).
    for (method, path, domain) in [
        ("GET", "/api/admin/invites", "users"),
        ("POST", "/api/admin/invites/resend", "users"),
        ("POST", "/api/admin/invites/cancel", "users"),
        ("POST", "/api/admin/invites/remove", "users"),
    ] {
        assert!(
            table
                .iter()
                .any(|l| l.split_whitespace().eq([method, path, domain])),
            "{method} {path} ({domain}) missing from the route table"
        );
    }
    assert!(table.len() >= 10, "{table:?}");
    t.stop().await;
}

/// Routes can only reach the router through `#[utoipa::path]` + `routes!`, which also documents them.
/// Any other mention of an `/api/` path in the sources (a hand-written `.route("/api/...")`) fails.
#[test]
fn no_api_route_is_registered_outside_the_openapi_document() {
    let doc = poolkeeper::http::openapi();
    let documented: Vec<String> = doc.paths.paths.keys().cloned().collect();
    let allowed = ["/api/docs", "/api/openapi.json", "/api/"];
    let mut stack = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src"
    ))];
    let mut undocumented = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, _) in text.match_indices("\"/api/") {
                let literal: String = text[i + 1..].chars().take_while(|c| *c != '"').collect();
                if !documented.contains(&literal) && !allowed.contains(&literal.as_str()) {
                    undocumented.push(format!("{}: {literal}", path.display()));
                }
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "API paths outside the OpenAPI document: {undocumented:#?}"
    );
}

#[tokio::test]
async fn openapi_document_and_swagger_ui_are_served_from_the_binary() {
    let t = TestApp::spawn(&common::Backend::Sqlite).await;
    let doc: Value = t
        .client
        .get(t.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert!(doc["paths"]["/api/admin/db-status"]["get"].is_object());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    let res = t.client.get(t.url("/api/docs/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("swagger"), "Swagger UI page");
    assert!(
        !html.contains("https://"),
        "no CDN: every asset is served by poolkeeper"
    );
    t.stop().await;
}

#[tokio::test]
async fn jobs_api_lists_filters_shows_retries_cancels_and_counts() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let admin = t.token("jobs", Scope::Admin).await;
        let c = &t.client;
        let users = &t.app().users;
        let now = t.app().clock.now_ms();
        let later = now + 3_600_000;
        let mut ids = Vec::new();
        for i in 0..3 {
            let job = poolkeeper::store::jobs::NewJob {
                run_at: Some(later),
                ..poolkeeper::store::jobs::NewJob::new("later", json!({"i": i}))
            };
            ids.push(
                poolkeeper::jobs::enqueue(users, &job, 3, now)
                    .await
                    .unwrap()
                    .0
                    .id,
            );
        }
        let get = |path: String| c.get(t.url(&path)).bearer_auth(&admin).send();

        let page: Value = get("/api/admin/jobs?type=later&page_size=2".into())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (
                page["total"].as_i64(),
                page["page_size"].as_i64(),
                page["page"].as_i64()
            ),
            (Some(3), Some(2), Some(1))
        );
        assert_eq!(page["items"].as_array().unwrap().len(), 2);
        assert_eq!(page["items"][0]["id"], ids[2].as_str(), "newest first");
        let page2: Value = get("/api/admin/jobs?type=later&page_size=2&page=2".into())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page2["items"][0]["id"], ids[0].as_str());
        let none: Value = get("/api/admin/jobs?status=failed".into())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(none["total"], 0);
        for bad in [
            "status=done",
            "page=0",
            "page_size=501",
            "page=x",
            "type=no%20spaces",
        ] {
            let err = api_error(get(format!("/api/admin/jobs?{bad}")).await.unwrap()).await;
            assert_eq!(err.status, 400, "{bad}: {err:?}");
        }

        let job: Value = get(format!("/api/admin/jobs/{}", ids[0]))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (job["status"].as_str(), job["payload"].as_str()),
            (Some("pending"), Some(r#"{"i":0}"#))
        );
        let err = api_error(get("/api/admin/jobs/not-a-uuid".into()).await.unwrap()).await;
        assert_eq!(err.status, 400);
        let err = api_error(
            get(format!("/api/admin/jobs/{}", uuid::Uuid::now_v7()))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(err.status, 404);

        let post = |path: String| c.post(t.url(&path)).bearer_auth(&admin).send();
        let err = api_error(
            post(format!("/api/admin/jobs/{}/retry", ids[0]))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (err.status, err.code.as_str()),
            (409, "conflict"),
            "a pending job cannot be retried"
        );
        let cancelled: Value = post(format!("/api/admin/jobs/{}/cancel", ids[0]))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(cancelled["status"], "cancelled");
        let err = api_error(
            post(format!("/api/admin/jobs/{}/cancel", ids[0]))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(err.status, 409, "already finished");
        let retried: Value = post(format!("/api/admin/jobs/{}/retry", ids[0]))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (retried["status"].as_str(), retried["attempts"].as_i64()),
            (Some("pending"), Some(0))
        );
        let err = api_error(
            post(format!("/api/admin/jobs/{}/retry", uuid::Uuid::now_v7()))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(err.status, 404);

        // The retried job is due now; the server's runner has no handler for its type and fails it.
        let wait_for = |id: String, status: &'static str| async move {
            let what = format!("job {id} to become {status}");
            wait_until(&what, std::time::Duration::from_secs(20), || async {
                let job: Value = get(format!("/api/admin/jobs/{id}"))
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                (job["status"] == status).then_some(job)
            })
            .await
        };
        let failed = wait_for(ids[0].clone(), "failed").await;
        assert!(
            failed["last_error"]
                .as_str()
                .unwrap()
                .contains("no handler"),
            "{failed}"
        );

        post(format!("/api/admin/jobs/{}/cancel", ids[1]))
            .await
            .unwrap();
        let stats: Value = get("/api/admin/jobs/stats".into())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stats["by_status"]["pending"], 1);
        assert_eq!(stats["by_status"]["cancelled"], 1);
        assert_eq!(stats["by_status"]["failed"], 1);
        assert_eq!(stats["by_status"]["succeeded"], 0);
        assert_eq!(stats["by_type"]["later"]["pending"], 1);
        assert_eq!(stats["total"], 3);

        // The built-in runner of the server runs a no-op job end to end.
        let noop = poolkeeper::jobs::enqueue(
            users,
            &poolkeeper::store::jobs::NewJob::new("noop", json!({})),
            3,
            now,
        )
        .await
        .unwrap()
        .0;
        wait_for(noop.id, "succeeded").await;
        let metrics = c
            .get(t.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains(r#"jobs_enqueued_total{type="later",deduplicated="false"}"#),
            "{metrics}"
        );
        assert!(
            metrics.contains(r#"jobs_finished_total{type="noop",status="succeeded"}"#),
            "{metrics}"
        );
        assert!(
            metrics.contains("job_duration_ms_bucket{type=\"noop\""),
            "{metrics}"
        );
        t.stop().await;
    })
    .await;
}
