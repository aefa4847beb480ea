//! Issue 12's low items: the session cookie in production, no-store answers, metrics guards, a
//! readiness answer without details, origin and host checks, private files, the OpenAPI
//! document's error answers and public routes.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Backend, TestApp, api_error, each_backend};
use poolkeeper::config::{Config, RunEnv, Secret};
use serde_json::Value;

fn set_cookie(res: &reqwest::Response) -> String {
    res.headers()
        .get("set-cookie")
        .expect("set-cookie")
        .to_str()
        .unwrap()
        .to_string()
}

/// Logs in without a cookie store (which would not send a `Secure` cookie over http); returns
/// the `Set-Cookie` line, the `name=value` pair and the CSRF token.
async fn login_raw(t: &TestApp) -> (String, String, String) {
    let res = t
        .client
        .post(t.url("/api/admin/login"))
        .json(&serde_json::json!({"username": "admin", "password": common::ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let line = set_cookie(&res);
    let pair = line.split(';').next().unwrap().to_string();
    let body: Value = res.json().await.unwrap();
    (line, pair, body["csrf_token"].as_str().unwrap().to_string())
}

fn production(c: &mut Config) {
    c.env = RunEnv::Production;
}

#[tokio::test]
async fn production_session_cookie_is_secure_with_the_host_prefix() {
    let t = TestApp::spawn_with(&Backend::Sqlite, production, poolkeeper::clock::system()).await;
    let (line, pair, csrf) = login_raw(&t).await;
    assert!(line.starts_with("__Host-pk_session="), "{line}");
    assert!(
        line.contains("Secure") && line.contains("Path=/") && !line.contains("Domain"),
        "{line}"
    );
    // Every reader uses the same name: the API, the pages, logout.
    let me = t
        .client
        .get(t.url("/api/admin/me"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let plain = pair.replacen("__Host-pk_session", "pk_session", 1);
    let me = t
        .client
        .get(t.url("/api/admin/me"))
        .header("cookie", &plain)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401, "the plain name is not read when secure");
    let page = t
        .client
        .get(t.url("/"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "the dashboard reads the same cookie");
    let res = t
        .client
        .post(t.url("/api/admin/logout"))
        .header("cookie", &pair)
        .header("x-csrf-token", &csrf)
        .header("origin", &t.base)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let removal = set_cookie(&res);
    assert!(
        removal.starts_with("__Host-pk_session=;") && removal.contains("Secure"),
        "{removal}"
    );
    let me = t
        .client
        .get(t.url("/api/admin/me"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401, "logout ended the session");
    t.stop().await;

    // cookie_secure = false still turns it off in production.
    let t = TestApp::spawn_with(
        &Backend::Sqlite,
        |c| {
            production(c);
            c.cookie_secure = Some(false);
        },
        poolkeeper::clock::system(),
    )
    .await;
    let (line, _, _) = login_raw(&t).await;
    assert!(
        line.starts_with("pk_session=") && !line.contains("Secure"),
        "{line}"
    );
    t.stop().await;
}

#[tokio::test]
async fn api_answers_and_signed_in_pages_are_not_stored() {
    let t = TestApp::spawn(&Backend::Sqlite).await;
    let token = t.token("nostore", poolkeeper::auth::Scope::Admin).await;
    for path in [
        "/api/admin/me",
        "/api/admin/mothers",
        "/api/openapi.json",
        "/api/no-such-route",
    ] {
        let res = t
            .client
            .get(t.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{path}"
        );
    }
    let unauthenticated = t.client.get(t.url("/api/admin/me")).send().await.unwrap();
    assert_eq!(unauthenticated.headers()["cache-control"], "no-store");
    let (client, _) = t.login().await;
    for path in ["/", "/mothers", "/pool-groups", "/jobs"] {
        let res = client.get(t.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["cache-control"], "no-store", "{path}");
    }
    t.stop().await;
}

#[tokio::test]
async fn metrics_can_require_a_token() {
    let t = TestApp::spawn_with(
        &Backend::Sqlite,
        |c| c.metrics_token = Some(Secret::new("0123456789")),
        poolkeeper::clock::system(),
    )
    .await;
    let err = api_error(t.client.get(t.url("/metrics")).send().await.unwrap()).await;
    assert_eq!((err.status, err.code.as_str()), (401, "unauthorized"));
    let wrong = t
        .client
        .get(t.url("/metrics"))
        .bearer_auth("0123456788")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let res = t
        .client
        .get(t.url("/metrics"))
        .bearer_auth("0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("jobs_queue_depth"));
    t.stop().await;
}

#[tokio::test]
async fn metrics_listen_serves_metrics_on_its_own_address_only() {
    let t = TestApp::spawn_with(
        &Backend::Sqlite,
        |c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap()),
        poolkeeper::clock::system(),
    )
    .await;
    let main = t.client.get(t.url("/metrics")).send().await.unwrap();
    assert_eq!(main.status(), 404, "not on the main address");
    let addr = t
        .server
        .as_ref()
        .unwrap()
        .metrics_addr
        .expect("metrics_addr");
    let res = t
        .client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("jobs_queue_depth"));
    let other = t
        .client
        .get(format!("http://{addr}/api/admin/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        404,
        "the metrics address serves nothing else"
    );
    t.stop().await;
}

#[tokio::test]
async fn readyz_names_the_database_without_paths_or_hosts() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        assert_eq!(
            t.client
                .get(t.url("/readyz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        t.app().pool.database().close().await;
        let err = api_error(t.client.get(t.url("/readyz")).send().await.unwrap()).await;
        assert_eq!(err.status, 503);
        assert_eq!(err.code, "not_ready");
        assert_eq!(err.message, "pool database: not reachable");
        t.stop().await;
    })
    .await;
}

/// A POST with the session cookie, its CSRF token and the given `Origin`.
async fn logout_from(t: &TestApp, origin: &str) -> u16 {
    let (_, pair, csrf) = login_raw(t).await;
    t.client
        .post(t.url("/api/admin/logout"))
        .header("cookie", &pair)
        .header("x-csrf-token", &csrf)
        .header("origin", origin)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn csrf_origin_must_match_scheme_host_and_port() {
    let t = TestApp::spawn(&Backend::Sqlite).await;
    let port = t.server.as_ref().unwrap().addr.port();
    assert_eq!(logout_from(&t, &t.base).await, 204);
    assert_eq!(
        logout_from(&t, &format!("https://127.0.0.1:{port}")).await,
        403,
        "another scheme"
    );
    assert_eq!(
        logout_from(&t, &format!("http://127.0.0.1:{}", port.wrapping_add(1))).await,
        403,
        "another port"
    );
    assert_eq!(logout_from(&t, "null").await, 403);
    t.stop().await;

    // With public_url, that origin is the one, whatever Host the request names.
    let t = TestApp::spawn_with(
        &Backend::Sqlite,
        |c| c.public_url = Some("https://pk.example.org".into()),
        poolkeeper::clock::system(),
    )
    .await;
    assert_eq!(logout_from(&t, "https://pk.example.org").await, 204);
    assert_eq!(logout_from(&t, "https://pk.example.org:443").await, 204);
    assert_eq!(logout_from(&t, &t.base).await, 403);
    t.stop().await;
}

#[tokio::test]
async fn production_refuses_hosts_other_than_the_public_one() {
    let t = TestApp::spawn_with(
        &Backend::Sqlite,
        |c| {
            production(c);
            c.public_url = Some("https://pk.example.org".into());
        },
        poolkeeper::clock::system(),
    )
    .await;
    let token = t.token("hosts", poolkeeper::auth::Scope::Admin).await;
    let err = api_error(
        t.client
            .get(t.url("/api/admin/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((err.status, err.code.as_str()), (421, "wrong_host"));
    let res = t
        .client
        .get(t.url("/api/admin/me"))
        .bearer_auth(&token)
        .header("host", "pk.example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let login_page = t.client.get(t.url("/login")).send().await.unwrap();
    assert_eq!(login_page.status(), 421, "pages too");
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let res = t.client.get(t.url(probe)).send().await.unwrap();
        assert_eq!(
            res.status(),
            200,
            "{probe} is reached by internal addresses"
        );
    }
    t.stop().await;
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn data_dir_and_database_files_are_private() {
    let parent = tempfile::tempdir().unwrap();
    let data_dir = parent.path().join("data");
    let config = Config {
        data_dir: data_dir.clone(),
        admin_password: Some(Secret::new(common::ADMIN_PASSWORD)),
        ..Config::default()
    };
    let (app, _) = poolkeeper::server::prepare(config, poolkeeper::clock::system())
        .await
        .unwrap();
    assert_eq!(mode(&data_dir), 0o700, "data dir");
    for file in [
        "pool.db",
        "pool.db-wal",
        "pool.db-shm",
        "users.db",
        "users.db-wal",
        "users.db-shm",
        "secret.key",
    ] {
        assert_eq!(mode(&data_dir.join(file)), 0o600, "{file}");
    }
    app.pool.database().close().await;
    app.users.database().close().await;

    // Files an older version left readable by others are made private on the next start.
    std::fs::set_permissions(
        data_dir.join("pool.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let config = Config {
        data_dir: data_dir.clone(),
        ..Config::default()
    };
    let (app, _) = poolkeeper::server::prepare(config, poolkeeper::clock::system())
        .await
        .unwrap();
    assert_eq!(mode(&data_dir.join("pool.db")), 0o600);
    app.pool.database().close().await;
    app.users.database().close().await;
}

#[tokio::test]
async fn usage_report_with_an_extreme_to_is_a_400_not_a_crash() {
    let t = TestApp::spawn(&Backend::Sqlite).await;
    let token = t.token("usage", poolkeeper::auth::Scope::Admin).await;
    let (status, body) = t
        .send_json(
            &token,
            reqwest::Method::GET,
            "/api/admin/accounts/usage?to=-9223372036854775808",
            None,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_from");
    t.stop().await;
}

/// Every operation documents the error answers its route class and inputs can give, and public
/// operations need no credentials.
#[test]
fn openapi_operations_document_their_error_answers_and_public_ones_need_no_security() {
    let doc = serde_json::to_value(poolkeeper::http::openapi()).unwrap();
    let public = [
        ("post", "/api/admin/login"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("post", "/api/redeem"),
        ("post", "/api/redeem/resend"),
    ];
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            checked += 1;
            let name = format!("{method} {path}");
            let responses = op["responses"].as_object().unwrap();
            let has = |status: &str| responses.contains_key(status);
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let in_ = |w: &str| params.iter().any(|p| p["in"] == w);
            let is_public = public.contains(&(method.as_str(), path.as_str()));
            if is_public {
                assert_eq!(op["security"], serde_json::json!([]), "{name}");
            } else {
                assert_ne!(op["security"], serde_json::json!([]), "{name}");
                assert!(has("401") && has("403"), "{name}: 401 and 403");
            }
            if in_("path") {
                assert!(has("400") && has("404"), "{name}: path parameters");
            }
            if in_("query") {
                assert!(has("400"), "{name}: query parameters");
            }
            if op.get("requestBody").is_some() {
                for status in ["400", "413", "415"] {
                    assert!(has(status), "{name}: {status} for its body");
                }
            }
            for (status, response) in responses {
                if status.starts_with('4') {
                    let schema = &response["content"]["application/json"]["schema"];
                    assert_eq!(
                        schema["$ref"], "#/components/schemas/ErrorBody",
                        "{name} {status}"
                    );
                }
            }
        }
    }
    assert!(checked >= 40, "{checked} operations");
    // The bulk invite routes queue a job (202) and document the answers of their JSON body.
    for action in ["resend", "cancel", "remove"] {
        let op = &doc["paths"][format!("/api/admin/invites/{action}")]["post"];
        let responses = op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{action}"));
        for status in ["202", "400", "401", "403", "413", "415"] {
            assert!(responses.contains_key(status), "{action}: {status}");
        }
        assert_eq!(op["tags"], serde_json::json!(["users"]), "{action}");
    }
    assert_eq!(
        doc["paths"]["/api/pool/leases"]["post"]["security"],
        serde_json::json!([{"bearer": []}]),
        "worker routes take a bearer token only"
    );
    let sim = &doc["paths"]["/api/admin/sim/orgs"]["post"];
    for status in ["201", "400", "401", "403", "404"] {
        assert!(
            sim["responses"].get(status).is_some(),
            "POST /api/admin/sim/orgs documents {status}: {sim}"
        );
    }
}
