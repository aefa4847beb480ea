//! Server-rendered admin pages. Pages need a live session (else a redirect to `/login`); every form
//! that changes state carries the session's CSRF token and is checked like an API request, by the
//! [`csrf::CsrfForm`] extractor. Each page's module registers its own routes.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;

use self::csrf::{CsrfForm, NoFields};

use crate::app::AppState;
use crate::auth::{self, LoginOutcome, Principal, Role};
use crate::http::api::session::{removal_cookie, session_cookie};
use crate::http::extract::ClientAddr;
use crate::http::middleware::{ExpectedOrigin, is_expected_origin, session_cookie_name};
use crate::http::routes;
use crate::service::audit::{Actor, changes, record as audit_record};

mod accounts;
mod admins;
mod assets;
mod audit;
mod charts;
mod codes;
mod csrf;
mod dashboard;
mod flash;
mod invites;
mod jobs;
mod list_filters;
mod mother_import;
mod mothers;
mod pool_groups;
mod redeem;
mod sync_sessions;
mod times;

/// The areas in the navigation, in order: (path, label). Each user sees the ones whose page
/// their role may open ([`routes::PAGE_ROLES`]), so the Audit and Admins links show for admins only.
const NAV: &[(&str, &str)] = &[
    ("/", "Dashboard"),
    ("/pool-groups", "Pool groups"),
    ("/mothers", "Mothers"),
    ("/jobs", "Jobs"),
    ("/sync-sessions", "Sync sessions"),
    ("/codes", "Codes"),
    ("/invites", "Users"),
    ("/accounts", "Accounts"),
    ("/audit", "Audit"),
    ("/system", "System"),
    ("/admins", "Admins"),
];

/// The navigation a role sees.
fn nav_for(role: Role) -> Vec<(&'static str, &'static str)> {
    NAV.iter()
        .filter(|(href, _)| {
            routes::page_role(&axum::http::Method::GET, href).is_some_and(|need| role.allows(need))
        })
        .copied()
        .collect()
}

pub fn routes(state: AppState) -> Router<AppState> {
    let pages = Router::new()
        .merge(dashboard::routes())
        .merge(pool_groups::routes())
        .merge(mothers::routes())
        .merge(mother_import::routes())
        .merge(codes::routes())
        .merge(invites::routes())
        .merge(accounts::routes())
        .route("/logout", post(logout))
        .merge(jobs::routes())
        .merge(sync_sessions::routes())
        .merge(audit::routes())
        .merge(admins::routes())
        .route_layer(axum::middleware::from_fn(require_page_role))
        .route_layer(axum::middleware::from_fn(flash::carry))
        .route_layer(axum::middleware::from_fn_with_state(state, require_session));
    Router::new()
        .route("/login", get(login_page).post(login_submit))
        .route("/static/{*path}", get(assets::serve))
        .merge(redeem::routes())
        .merge(pages)
}

/// What every signed-in page shows in its frame.
pub struct Layout {
    pub username: String,
    pub csrf_token: String,
    pub active: &'static str,
    pub nav: Vec<(&'static str, &'static str)>,
    /// The signed-in user's role; pages show only the forms it may post.
    pub role: Role,
    /// May post the pool's forms (operator or admin).
    pub can_operate: bool,
    /// May manage admins and tokens (admin).
    pub is_admin: bool,
    /// What the form post that led here did (`templates/partials/flash.html` shows it).
    pub flash: Option<flash::Flash>,
}

impl Layout {
    pub(crate) fn new(principal: &Principal, active: &'static str) -> Self {
        let (username, csrf_token) = match principal {
            Principal::Session {
                username,
                csrf_token,
                ..
            } => (username.clone(), csrf_token.clone()),
            Principal::Token { .. } => (principal.display_name(), String::new()),
        };
        // Pages are behind the page guard, which admits only principals with a role.
        let role = principal.role().unwrap_or(Role::Viewer);
        Self {
            username,
            csrf_token,
            active,
            nav: nav_for(role),
            role,
            can_operate: role.allows(Role::Operator),
            is_admin: role == Role::Admin,
            flash: flash::take(),
        }
    }
}

async fn require_session(
    State(app): State<AppState>,
    jar: CookieJar,
    mut req: Request,
    next: Next,
) -> Response {
    let principal = match jar.get(session_cookie_name(&app.config)) {
        Some(cookie) => auth::session_principal(&app.users, &app.clock, cookie.value()).await,
        None => Ok(None),
    };
    match principal {
        Ok(Some(principal)) => {
            req.extensions_mut().insert(principal);
            let mut response = next.run(req).await;
            // A signed-in page shows pool data: no cache may keep it.
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            );
            response
        }
        Ok(None) => Redirect::to("/login").into_response(),
        Err(e) => crate::http::error::ApiError::from(e).into_response(),
    }
}

/// Refuses a page or form the signed-in role may not use (`routes::PAGE_ROLES`) with a 403
/// page; a page without a rule is refused to everyone. Runs after [`require_session`].
async fn require_page_role(req: Request, next: Next) -> Response {
    let needed = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|path| routes::page_role(req.method(), path.as_str()));
    let Some(principal) = req.extensions().get::<Principal>().cloned() else {
        return Redirect::to("/login").into_response();
    };
    match needed {
        Some(needed) if principal.allows(needed) => next.run(req).await,
        needed => forbidden(&principal, needed),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "forbidden.html")]
struct ForbiddenPage {
    layout: Layout,
    needed: Option<Role>,
}

/// The 403 page: what the page needs and what the user has.
fn forbidden(principal: &Principal, needed: Option<Role>) -> Response {
    (
        StatusCode::FORBIDDEN,
        ForbiddenPage {
            layout: Layout::new(principal, ""),
            needed,
        },
    )
        .into_response()
}

fn with_retry_after(mut response: Response, secs: u64) -> Response {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
    response
}

#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
struct LoginPage {
    error: Option<String>,
    username: String,
}

async fn login_page() -> LoginPage {
    LoginPage {
        error: None,
        username: String::new(),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

async fn login_submit(
    State(app): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    expected: Option<Extension<ExpectedOrigin>>,
    jar: CookieJar,
    Form(form): Form<LoginForm>,
) -> Response {
    let page = |status: StatusCode, error: String| {
        (
            status,
            LoginPage {
                error: Some(error),
                username: form.username.clone(),
            },
        )
            .into_response()
    };
    if !origin_is_absent_or_same(&headers, expected.as_ref().map(|e| &e.0)) {
        return page(
            StatusCode::FORBIDDEN,
            "This form was submitted from another site.".into(),
        );
    }
    if form.username.is_empty() || form.password.is_empty() {
        return page(
            StatusCode::BAD_REQUEST,
            "Enter a username and a password.".into(),
        );
    }
    let outcome = auth::login(
        &app.users,
        &app.login_throttle,
        &app.clock,
        app.session_ttl_ms(),
        &form.username,
        &form.password,
        &addr,
    )
    .await;
    match outcome {
        Ok(LoginOutcome::Ok {
            session_token,
            username,
            ..
        }) => {
            let actor = Actor::new(username.clone(), addr.clone());
            audit_record(
                &app.users,
                &app.clock,
                &actor,
                changes::login_success(&username),
            )
            .await;
            (
                jar.add(session_cookie(&app, session_token)),
                Redirect::to("/"),
            )
                .into_response()
        }
        Ok(LoginOutcome::BadCredentials) => {
            let actor = Actor::new(auth::loggable(&form.username), addr.clone());
            let change = changes::login_failure(&form.username);
            audit_record(&app.users, &app.clock, &actor, change).await;
            page(
                StatusCode::UNAUTHORIZED,
                "Wrong username or password.".into(),
            )
        }
        Ok(LoginOutcome::Throttled { retry_after_secs }) => with_retry_after(
            page(
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many failed logins. Try again in {retry_after_secs} seconds."),
            ),
            retry_after_secs,
        ),
        Ok(LoginOutcome::Busy { retry_after_secs }) => with_retry_after(
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many logins are being checked. Try again in a moment.".into(),
            ),
            retry_after_secs,
        ),
        Err(e) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Login is unavailable: {e}"),
        ),
    }
}

/// Login CSRF: a browser sends `Origin` on form posts; when it does, it must be this site.
fn origin_is_absent_or_same(headers: &HeaderMap, expected: Option<&ExpectedOrigin>) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    origin
        .to_str()
        .is_ok_and(|o| is_expected_origin(expected, o))
}

async fn logout(
    State(app): State<AppState>,
    jar: CookieJar,
    CsrfForm(NoFields {}): CsrfForm<NoFields>,
) -> Response {
    if let Some(cookie) = jar.get(session_cookie_name(&app.config))
        && let Err(e) = auth::end_session(&app.users, cookie.value()).await
    {
        return crate::http::error::ApiError::from(e).into_response();
    }
    (jar.add(removal_cookie(&app)), Redirect::to("/login")).into_response()
}

#[derive(Template)]
#[template(path = "not_found.html")]
struct NotFoundPage;

pub fn not_found_page() -> String {
    NotFoundPage
        .render()
        .unwrap_or_else(|_| "Not found".to_string())
}

/// The HTML Not-found page, for a page address naming nothing (an unknown or malformed id).
pub(crate) fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::response::Html(not_found_page()),
    )
        .into_response()
}

/// A service error met while building a page: what is not there is the Not-found page; anything
/// else keeps the API's error answer.
pub(crate) fn page_error(e: crate::service::Error) -> Response {
    match e.kind {
        crate::service::ErrorKind::NotFound => not_found(),
        _ => e.into_response(),
    }
}

/// An id in a page address: a number, or (`None`) the address names no page.
pub(crate) fn numeric_id(raw: &str) -> Option<i64> {
    raw.parse::<i64>().ok().filter(|id| *id > 0)
}
