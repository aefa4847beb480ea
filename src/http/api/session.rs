//! Admin login, logout and the current principal.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::{App, AppState};
use crate::auth::{self, LoginOutcome, Principal, Role};
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, ClientAddr};
use crate::http::middleware::session_cookie_name;
use crate::service::audit::{self, Actor, changes};

#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    pub username: String,
    /// Send as `X-CSRF-Token` on unsafe requests made with the session cookie.
    pub csrf_token: String,
}

/// The session cookie set at login: `Secure` and named `__Host-pk_session` when `cookie_secure`
/// (on by default in production), else `pk_session`.
pub fn session_cookie(app: &App, value: String) -> Cookie<'static> {
    Cookie::build((session_cookie_name(&app.config), value))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(app.config.cookie_secure())
        .path("/")
        .max_age(time::Duration::milliseconds(app.session_ttl_ms()))
        .build()
}

/// A cookie that clears the session cookie (same name, path and `Secure`, or a browser keeps it).
pub fn removal_cookie(app: &App) -> Cookie<'static> {
    Cookie::build((session_cookie_name(&app.config), ""))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(app.config.cookie_secure())
        .path("/")
        .max_age(time::Duration::ZERO)
        .build()
}

/// Logs in with username and password; sets an HttpOnly, SameSite=Strict session cookie.
#[utoipa::path(post, path = "/api/admin/login", tag = "system", request_body = LoginRequest,
    responses(
        (status = 200, body = LoginResponse),
        (status = 400, body = ErrorBody, description = "malformed body"),
        (status = 401, body = ErrorBody, description = "wrong username or password"),
        (status = 429, body = ErrorBody, description = "too many failures for this username or address; see Retry-After"),
        (status = 503, body = ErrorBody, description = "too many password checks running at once; see Retry-After"),
    ))]
pub async fn login(
    State(app): State<AppState>,
    ClientAddr(addr): ClientAddr,
    jar: CookieJar,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<impl IntoResponse> {
    if req.username.is_empty() || req.password.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "username and password are required",
        ));
    }
    let outcome = auth::login(
        &app.users,
        &app.login_throttle,
        &app.clock,
        app.session_ttl_ms(),
        &req.username,
        &req.password,
        &addr,
    )
    .await?;
    match outcome {
        LoginOutcome::Ok {
            session_token,
            csrf_token,
            username,
        } => {
            tracing::info!(%username, %addr, "admin logged in");
            let actor = Actor::new(username.clone(), addr.clone());
            audit::record(
                &app.users,
                &app.clock,
                &actor,
                changes::login_success(&username),
            )
            .await;
            let jar = jar.add(session_cookie(&app, session_token));
            Ok((
                jar,
                Json(LoginResponse {
                    username,
                    csrf_token,
                }),
            ))
        }
        LoginOutcome::BadCredentials => {
            let username = auth::loggable(&req.username);
            tracing::warn!(%username, %addr, "failed admin login");
            let actor = Actor::new(username, addr.clone());
            audit::record(
                &app.users,
                &app.clock,
                &actor,
                changes::login_failure(&req.username),
            )
            .await;
            Err(ApiError::unauthorized("wrong username or password"))
        }
        LoginOutcome::Throttled { retry_after_secs } => Err(ApiError::too_many_requests(
            format!("too many failed logins; try again in {retry_after_secs} s"),
            retry_after_secs,
        )),
        LoginOutcome::Busy { retry_after_secs } => Err(ApiError {
            retry_after_secs: Some(retry_after_secs),
            ..ApiError::unavailable("too many logins are being checked; try again shortly")
        }),
    }
}

/// Ends the browser session (a no-op for bearer tokens).
#[utoipa::path(post, path = "/api/admin/logout", tag = "system",
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "csrf_failed")))]
pub async fn logout(State(app): State<AppState>, jar: CookieJar) -> ApiResult<impl IntoResponse> {
    if let Some(cookie) = jar.get(session_cookie_name(&app.config)) {
        auth::end_session(&app.users, cookie.value()).await?;
    }
    Ok((StatusCode::NO_CONTENT, jar.add(removal_cookie(&app))))
}

#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    /// `session` or `token`.
    pub kind: &'static str,
    /// Username, or `token:<name>`.
    pub name: String,
    /// The token's scope; for a session, the user's role (the scope of the same name).
    pub scope: &'static str,
    /// The role the caller acts with: `admin`, `operator` or `viewer`.
    pub role: Role,
}

/// Who is calling.
#[utoipa::path(get, path = "/api/admin/me", tag = "system",
    responses((status = 200, body = MeResponse), (status = 401, body = ErrorBody)))]
pub async fn me(Extension(principal): Extension<Principal>) -> Json<MeResponse> {
    let (kind, scope) = match &principal {
        Principal::Session { role, .. } => ("session", role.as_str()),
        Principal::Token { scope, .. } => ("token", scope.as_str()),
    };
    Json(MeResponse {
        kind,
        name: principal.display_name(),
        scope,
        // Admin routes admit only principals with a role (worker tokens are refused first).
        role: principal.role().unwrap_or(Role::Viewer),
    })
}
