//! Roles (issue 16): every admin API route and every page is walked with every kind of caller —
//! admin, operator and viewer sessions and tokens, and a worker token — and must answer 403
//! exactly when the caller's role is below the one `routes::API_ROLES` / `routes::PAGE_ROLES`
//! gives it. Then the Admins page flows (create, set role, reset password, disable) and the
//! last-admin guard, and that nothing below admin is shown a secret.

mod common;

use common::{ADMIN_PASSWORD, TestApp, api_error, each_backend, url_encoded};
use poolkeeper::auth::{Role, Scope};
use poolkeeper::http::routes::{API_ROLES, PAGE_ROLES, RouteDomains};
use reqwest::Method;
use serde_json::json;

/// A browser session: a client with its cookie and CSRF token.
struct Session {
    client: reqwest::Client,
    csrf: String,
}

async fn login(t: &TestApp, username: &str, password: &str) -> Session {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = client
        .post(t.url("/api/admin/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "login as {username}");
    let body: serde_json::Value = res.json().await.unwrap();
    Session {
        client,
        csrf: body["csrf_token"].as_str().unwrap().to_string(),
    }
}

async fn login_status(t: &TestApp, username: &str, password: &str) -> u16 {
    reqwest::Client::new()
        .post(t.url("/api/admin/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

const OPERATOR_PASSWORD: &str = "operator-pass-1";
const VIEWER_PASSWORD: &str = "viewer-pass-1";

/// Makes the users `op` (operator) and `view` (viewer) next to `admin`.
async fn make_users(t: &TestApp) {
    let users = &t.app().users;
    let clock = &t.app().clock;
    poolkeeper::service::admins::create(
        users,
        clock,
        &poolkeeper::service::audit::Actor::system(),
        "op",
        OPERATOR_PASSWORD,
        Role::Operator,
    )
    .await
    .unwrap();
    poolkeeper::service::admins::create(
        users,
        clock,
        &poolkeeper::service::audit::Actor::system(),
        "view",
        VIEWER_PASSWORD,
        Role::Viewer,
    )
    .await
    .unwrap();
}

/// A route template with its parameters filled by values that name nothing, so a request that
/// gets through changes nothing (404, or 400 for the empty body).
fn fill(template: &str) -> String {
    template
        .replace("{username}", "nobody-here")
        .replace("{token}", "no-such-batch")
        .replace("{group_id}", "999999")
        .replace("{mother_id}", "999999")
        .replace("{claim_id}", "999999")
        .replace("{id}", "999999")
}

#[derive(Clone, Copy, Debug)]
enum Caller {
    Session(Role),
    Token(Scope),
}

impl Caller {
    fn role(self) -> Option<Role> {
        match self {
            Caller::Session(role) => Some(role),
            Caller::Token(scope) => scope.role(),
        }
    }
}

const CALLERS: [Caller; 7] = [
    Caller::Session(Role::Admin),
    Caller::Session(Role::Operator),
    Caller::Session(Role::Viewer),
    Caller::Token(Scope::Admin),
    Caller::Token(Scope::Operator),
    Caller::Token(Scope::Viewer),
    Caller::Token(Scope::Worker),
];

async fn session_of(t: &TestApp, role: Role) -> Session {
    match role {
        Role::Admin => login(t, "admin", ADMIN_PASSWORD).await,
        Role::Operator => login(t, "op", OPERATOR_PASSWORD).await,
        Role::Viewer => login(t, "view", VIEWER_PASSWORD).await,
    }
}

#[tokio::test]
async fn every_api_route_answers_403_exactly_below_its_role() {
    each_backend(|backend| async move {
        // The domain guard on, as in production: unsafe requests carry X-Domain.
        let t = TestApp::spawn_with(
            &backend,
            |c| c.domain_guard = Some(true),
            poolkeeper::clock::system(),
        )
        .await;
        make_users(&t).await;
        let domains = RouteDomains::from_openapi(&poolkeeper::http::openapi());
        let mut tokens = std::collections::HashMap::new();
        for scope in [Scope::Admin, Scope::Operator, Scope::Viewer, Scope::Worker] {
            tokens.insert(
                scope.as_str(),
                t.token(&format!("walk-{}", scope.as_str()), scope).await,
            );
        }
        let mut sessions = std::collections::HashMap::new();
        for role in Role::ALL {
            sessions.insert(role, session_of(&t, role).await);
        }
        let mut walked = 0;
        for (method, template, needed) in API_ROLES {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let path = fill(template);
            let domain = domains
                .get(&method, template)
                .unwrap_or_else(|| panic!("{method} {template} has a domain"));
            for caller in CALLERS {
                // Logging out ends the session: give that row a session of its own.
                let fresh;
                let mut req = match caller {
                    Caller::Session(role) => {
                        let s = if *template == "/api/admin/logout" {
                            fresh = session_of(&t, role).await;
                            &fresh
                        } else {
                            &sessions[&role]
                        };
                        s.client
                            .request(method.clone(), t.url(&path))
                            .header("x-csrf-token", &s.csrf)
                            .header("origin", &t.base)
                    }
                    Caller::Token(scope) => t
                        .client
                        .request(method.clone(), t.url(&path))
                        .bearer_auth(&tokens[scope.as_str()]),
                };
                req = req.header("x-domain", domain.as_str());
                if method != Method::GET && method != Method::DELETE {
                    req = req.json(&json!({}));
                }
                let res = req.send().await.unwrap();
                let status = res.status().as_u16();
                let allowed = caller.role().is_some_and(|r| r.allows(*needed));
                let what = format!("{method} {path} as {caller:?} (needs {needed})");
                if allowed {
                    assert!(
                        status != 403 && status != 401 && status < 500,
                        "{what}: {status} {}",
                        res.text().await.unwrap_or_default()
                    );
                } else {
                    let err = api_error(res).await;
                    assert_eq!(err.status, 403, "{what}: {err:?}");
                    let code = if caller.role().is_none() {
                        "insufficient_scope"
                    } else {
                        "insufficient_role"
                    };
                    assert_eq!(err.code, code, "{what}: {err:?}");
                }
                walked += 1;
            }
        }
        assert_eq!(walked, API_ROLES.len() * CALLERS.len());
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_role_table_covers_every_admin_route_and_the_document_shows_it() {
    let problems =
        poolkeeper::http::routes::api_role_problems(&poolkeeper::http::admin_operation_keys());
    assert!(problems.is_empty(), "{problems:?}");
    // A route the table does not know is reported, and one it names that does not exist too.
    let mut keys = poolkeeper::http::admin_operation_keys();
    keys.insert(("GET".into(), "/api/admin/new-thing".into()));
    keys.remove(&("GET".to_string(), "/api/admin/me".to_string()));
    let problems = poolkeeper::http::routes::api_role_problems(&keys);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("GET /api/admin/new-thing has no row"))
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("GET /api/admin/me, which is not"))
    );

    let doc = serde_json::to_value(poolkeeper::http::openapi()).unwrap();
    for (method, path, role) in API_ROLES {
        let op = &doc["paths"][path][method.to_lowercase()];
        assert_eq!(op["x-role"], role.as_str(), "{method} {path}");
        assert_eq!(
            op["security"][0]["bearer"][0],
            role.as_str(),
            "{method} {path}"
        );
    }
}

/// The tables themselves follow the issue's rules, checked apart from the tables: a viewer only
/// reads, admins and tokens are managed by admins only, the audit log is read by admins only, and
/// what answers with a secret is admin only. (The walks above check that the server does what the
/// tables say.)
#[test]
fn the_role_tables_follow_the_rules_of_the_issue() {
    let secret_revealing = [
        ("POST", "/api/admin/sim/orgs"),
        ("POST", "/api/admin/tokens"),
    ];
    for (method, path, role) in API_ROLES {
        let what = format!("{method} {path} needs {role}");
        if *method != "GET" && *path != "/api/admin/logout" {
            assert!(*role >= Role::Operator, "{what}: viewers only read");
        }
        if path.starts_with("/api/admin/admins") || path.starts_with("/api/admin/tokens") {
            assert_eq!(
                *role,
                Role::Admin,
                "{what}: admins and tokens are admin business"
            );
        }
        if secret_revealing.contains(&(*method, *path)) {
            assert_eq!(*role, Role::Admin, "{what}: it answers with a secret");
        }
        if path.starts_with("/api/admin/audit") {
            assert_eq!(*role, Role::Admin, "{what}: the audit log is for admins");
        }
        if *role == Role::Admin {
            assert!(
                path.starts_with("/api/admin/admins")
                    || path.starts_with("/api/admin/tokens")
                    || path.starts_with("/api/admin/audit")
                    || secret_revealing.contains(&(*method, *path)),
                "{what}: operators run the pool"
            );
        }
    }
    for (method, path, role) in PAGE_ROLES {
        let what = format!("page {method} {path} needs {role}");
        if *method != "GET" && *path != "/logout" {
            assert!(*role >= Role::Operator, "{what}: viewers only read");
        }
        assert_eq!(
            *role == Role::Admin,
            path.starts_with("/admins") || path.starts_with("/audit"),
            "{what}: only the Admins and Audit pages are admin only"
        );
    }
}

#[tokio::test]
async fn every_page_answers_403_exactly_below_its_role() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        make_users(&t).await;
        for role in Role::ALL {
            let s = session_of(&t, role).await;
            for (method, template, needed) in PAGE_ROLES {
                let method = Method::from_bytes(method.as_bytes()).unwrap();
                let path = fill(template);
                let fresh;
                let s = if *template == "/logout" {
                    fresh = session_of(&t, role).await;
                    &fresh
                } else {
                    &s
                };
                let mut req = s.client.request(method.clone(), t.url(&path));
                if method == Method::POST {
                    req = req
                        .header("origin", &t.base)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(url_encoded(&[("csrf", &s.csrf)]));
                }
                let res = req.send().await.unwrap();
                let status = res.status().as_u16();
                let location = res
                    .headers()
                    .get("location")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                let body = res.text().await.unwrap();
                let what = format!("{method} {path} as {role} (needs {needed})");
                if role.allows(*needed) {
                    assert!(status != 403 && status < 500, "{what}: {status} {body}");
                    if *template != "/logout" {
                        assert_ne!(location, "/login", "{what}: the session still works");
                    }
                } else {
                    assert_eq!(status, 403, "{what}: {body}");
                    assert!(
                        body.contains("id=\"forbidden\"") && body.contains(needed.as_str()),
                        "{what}: the 403 page names the role: {body}"
                    );
                }
            }
        }
        t.stop().await;
    })
    .await;
}

/// Fetches a page with a session and returns its HTML.
async fn page(t: &TestApp, s: &Session, path: &str) -> String {
    let res = s.client.get(t.url(path)).send().await.unwrap();
    assert_eq!(res.status(), 200, "GET {path}");
    res.text().await.unwrap()
}

#[tokio::test]
async fn pages_hide_the_forms_a_role_cannot_post() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        make_users(&t).await;
        let admin = session_of(&t, Role::Admin).await;
        let op = session_of(&t, Role::Operator).await;
        let view = session_of(&t, Role::Viewer).await;
        // (page, a form or link only operators and admins get)
        for (path, action) in [
            ("/pool-groups", "action=\"/pool-groups\""),
            ("/mothers", "id=\"open-create\""),
            ("/codes", "action=\"/codes/generate\""),
            ("/accounts", "action=\"/accounts/import\""),
            ("/jobs", "id=\"bulk-retry\""),
            ("/invites", "id=\"bulk-resend\""),
        ] {
            assert!(
                page(&t, &admin, path).await.contains(action),
                "admin {path}"
            );
            assert!(
                page(&t, &op, path).await.contains(action),
                "operator {path}"
            );
            assert!(
                !page(&t, &view, path).await.contains(action),
                "viewer {path}"
            );
        }
        // Only admins see the Admins page in the navigation.
        assert!(page(&t, &admin, "/").await.contains("href=\"/admins\""));
        assert!(!page(&t, &op, "/").await.contains("href=\"/admins\""));
        assert!(!page(&t, &view, "/").await.contains("href=\"/admins\""));
        // The Audit link follows the same table: admins only.
        assert!(page(&t, &admin, "/").await.contains("href=\"/audit\""));
        assert!(!page(&t, &op, "/").await.contains("href=\"/audit\""));
        assert!(page(&t, &op, "/").await.contains("href=\"/accounts\""));
        t.stop().await;
    })
    .await;
}

/// Posts an Admins-page form as `s`; returns the status and the page it leads to with its flash.
async fn post_form(t: &TestApp, s: &Session, path: &str, fields: &[(&str, &str)]) -> String {
    let mut all = fields.to_vec();
    all.push(("csrf", &s.csrf));
    let res = s
        .client
        .post(t.url(path))
        .header("origin", &t.base)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(url_encoded(&all))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "POST {path}");
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(location, "/admins");
    page(t, s, "/admins").await
}

#[tokio::test]
async fn admins_page_creates_sets_roles_resets_passwords_and_disables() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let admin = session_of(&t, Role::Admin).await;

        let html = post_form(
            &t,
            &admin,
            "/admins",
            &[
                ("username", "carol"),
                ("role", "viewer"),
                ("password", "carol-pass-1"),
            ],
        )
        .await;
        assert!(html.contains("carol created with role viewer"), "{html}");
        let carol = login(&t, "carol", "carol-pass-1").await;
        let me: serde_json::Value = carol
            .client
            .get(t.url("/api/admin/me"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(me["role"], "viewer");
        // A viewer cannot create codes.
        let res = carol
            .client
            .post(t.url("/api/admin/codes"))
            .header("x-csrf-token", &carol.csrf)
            .header("origin", &t.base)
            .json(&json!({"count": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(api_error(res).await.code, "insufficient_role");

        // Promoted, her open session acts with the new role at once.
        let html = post_form(&t, &admin, "/admins/carol/role", &[("role", "operator")]).await;
        assert!(html.contains("carol now has role operator"), "{html}");
        let me: serde_json::Value = carol
            .client
            .get(t.url("/api/admin/me"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(me["role"], "operator");

        // A bad role and a short password are refused with a flash that says why.
        let html = post_form(&t, &admin, "/admins/carol/role", &[("role", "root")]).await;
        assert!(
            html.contains("role must be admin, operator or viewer"),
            "{html}"
        );
        let html = post_form(
            &t,
            &admin,
            "/admins/carol/password",
            &[("password", "short")],
        )
        .await;
        assert!(html.contains("at least 8 characters"), "{html}");
        assert_eq!(login_status(&t, "carol", "carol-pass-1").await, 200);

        // A reset password ends her sessions; the new one works, the old one no longer does.
        let html = post_form(
            &t,
            &admin,
            "/admins/carol/password",
            &[("password", "carol-pass-2")],
        )
        .await;
        assert!(html.contains("Password of carol changed"), "{html}");
        let res = carol
            .client
            .get(t.url("/api/admin/me"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "reset ends her sessions");
        assert_eq!(login_status(&t, "carol", "carol-pass-1").await, 401);
        let carol = login(&t, "carol", "carol-pass-2").await;

        // Disabled: her session stops working and she cannot log in; enabled, she can again.
        let html = post_form(&t, &admin, "/admins/carol/disable", &[]).await;
        assert!(html.contains("carol is disabled"), "{html}");
        let res = carol
            .client
            .get(t.url("/api/admin/me"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            401,
            "a disabled admin's session stops working"
        );
        let res = carol.client.get(t.url("/")).send().await.unwrap();
        assert_eq!(res.headers()["location"], "/login");
        assert_eq!(login_status(&t, "carol", "carol-pass-2").await, 401);
        let html = post_form(&t, &admin, "/admins/carol/enable", &[]).await;
        assert!(html.contains("carol may log in again"), "{html}");
        assert_eq!(login_status(&t, "carol", "carol-pass-2").await, 200);

        // The last active admin can be neither demoted nor disabled, from the page or the API.
        let html = post_form(&t, &admin, "/admins/admin/role", &[("role", "viewer")]).await;
        assert!(html.contains("last active admin"), "{html}");
        let html = post_form(&t, &admin, "/admins/admin/disable", &[]).await;
        assert!(html.contains("last active admin"), "{html}");
        let token = t.token("boss", Scope::Admin).await;
        for (path, body) in [
            (
                "/api/admin/admins/admin/role",
                Some(json!({"role": "operator"})),
            ),
            ("/api/admin/admins/admin/disable", None),
        ] {
            let (status, body) = t.send_json(&token, Method::POST, path, body).await;
            assert_eq!(status, 409, "{path}: {body}");
            assert_eq!(body["error"]["code"], "last_admin", "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("last active admin"),
                "{body}"
            );
        }
        assert_eq!(login_status(&t, "admin", ADMIN_PASSWORD).await, 200);
        // With a second admin, the first may step down; the second is then the last.
        let html = post_form(&t, &admin, "/admins/carol/role", &[("role", "admin")]).await;
        assert!(html.contains("carol now has role admin"), "{html}");
        let (status, body) = t
            .send_json(
                &token,
                Method::POST,
                "/api/admin/admins/admin/role",
                Some(json!({"role": "viewer"})),
            )
            .await;
        assert_eq!(
            (status, body["role"].as_str()),
            (200, Some("viewer")),
            "{body}"
        );
        let (status, body) = t
            .send_json(
                &token,
                Method::POST,
                "/api/admin/admins/carol/disable",
                None,
            )
            .await;
        assert_eq!(status, 409, "{body}");

        // The list shows roles and status, never a password hash.
        let (status, body) = t
            .send_json(&token, Method::GET, "/api/admin/admins", None)
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["total"], 2);
        assert!(!body.to_string().contains("argon2"), "{body}");
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn two_admins_demoting_each_other_at_once_leave_one_admin() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let users = t.app().users.clone();
        let clock = t.app().clock.clone();
        poolkeeper::service::admins::create(
            &users,
            &clock,
            &poolkeeper::service::audit::Actor::system(),
            "second",
            "second-pass-1",
            Role::Admin,
        )
        .await
        .unwrap();
        let mut handles = Vec::new();
        for name in ["admin", "second"] {
            let users = users.clone();
            let clock = clock.clone();
            handles.push(tokio::spawn(async move {
                poolkeeper::service::admins::set_role(
                    &users,
                    &clock,
                    &poolkeeper::service::audit::Actor::system(),
                    name,
                    Role::Viewer,
                )
                .await
            }));
        }
        let mut refused = 0;
        for h in handles {
            if let Err(e) = h.await.unwrap() {
                assert_eq!(e.code, "last_admin", "{e}");
                refused += 1;
            }
        }
        assert_eq!(refused, 1, "exactly one demotion is refused");
        let (admins, _) = poolkeeper::service::admins::list_page(&users, 10, 0)
            .await
            .unwrap();
        assert_eq!(admins.iter().filter(|a| a.role == "admin").count(), 1);
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn tokens_of_the_new_scopes_are_created_by_api_and_act_with_their_role() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let admin = t.token("root", Scope::Admin).await;
        for scope in ["operator", "viewer"] {
            let (status, body) = t
                .send_json(
                    &admin,
                    Method::POST,
                    "/api/admin/tokens",
                    Some(json!({"name": format!("t-{scope}"), "scope": scope})),
                )
                .await;
            assert_eq!(status, 201, "{body}");
            assert_eq!(body["scope"], scope);
            let value = body["value"].as_str().unwrap().to_string();
            let (status, me) = t
                .send_json(&value, Method::GET, "/api/admin/me", None)
                .await;
            assert_eq!(status, 200);
            assert_eq!(
                (me["scope"].as_str(), me["role"].as_str()),
                (Some(scope), Some(scope))
            );
            // Neither may mint tokens or read the token list.
            let (status, body) = t
                .send_json(&value, Method::GET, "/api/admin/tokens", None)
                .await;
            assert_eq!(status, 403, "{body}");
        }
        let (status, body) = t
            .send_json(
                &admin,
                Method::POST,
                "/api/admin/tokens",
                Some(json!({"name": "bad", "scope": "root"})),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn only_admins_are_shown_a_simulated_organisations_credential() {
    each_backend(|backend| async move {
        // The simulator is on outside production.
        let t = TestApp::spawn(&backend).await;
        let operator = t.token("op", Scope::Operator).await;
        let admin = t.token("adm", Scope::Admin).await;
        let req = json!({"name": "secretorg", "seats": 2});
        let (status, body) = t
            .send_json(
                &operator,
                Method::POST,
                "/api/admin/sim/orgs",
                Some(req.clone()),
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("insufficient_role"))
        );
        assert!(body.get("credential").is_none());
        let (status, body) = t
            .send_json(&admin, Method::POST, "/api/admin/sim/orgs", Some(req))
            .await;
        assert_eq!(status, 201, "{body}");
        assert!(body["credential"].as_str().is_some_and(|c| !c.is_empty()));
        t.stop().await;
    })
    .await;
}
