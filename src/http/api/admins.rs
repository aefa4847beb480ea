//! Admin users (users database): list, create with a role, set the role, reset the password,
//! disable and enable. Admin only (`routes::API_ROLES`). Password hashes never leave the store.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::app::AppState;
use crate::auth::Role;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, AuditActor};
use crate::http::pagination::{Page, PageParams};
use crate::service::admins as service;
use crate::store::admins::AdminView;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AdminListQuery {
    /// 1-based page number (default 1).
    pub page: Option<i64>,
    /// Items per page (default 50, at most 500).
    pub page_size: Option<i64>,
}

/// Lists admin users by username, with role and status.
#[utoipa::path(get, path = "/api/admin/admins", tag = "users", params(AdminListQuery),
    responses((status = 200, body = Page<AdminView>), (status = 400, body = ErrorBody)))]
pub async fn list_admins(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<AdminListQuery>,
) -> ApiResult<Json<Page<AdminView>>> {
    let page = PageParams::new(q.page, q.page_size)?;
    let (items, total) = service::list_page(&app.users, page.limit(), page.offset()).await?;
    Ok(Json(page.wrap(items, total)))
}

#[derive(Deserialize, ToSchema)]
pub struct CreateAdminRequest {
    /// 1-64 letters, digits and `. _ - @`.
    pub username: String,
    /// At least 8 characters.
    pub password: String,
    pub role: Role,
}

impl std::fmt::Debug for CreateAdminRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateAdminRequest")
            .field("username", &self.username)
            .field("password", &"***")
            .field("role", &self.role)
            .finish()
    }
}

/// Creates an admin user with a role.
#[utoipa::path(post, path = "/api/admin/admins", tag = "users", request_body = CreateAdminRequest,
    responses((status = 201, body = AdminView), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`username_taken`")))]
pub async fn create_admin(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    ApiJson(req): ApiJson<CreateAdminRequest>,
) -> ApiResult<(StatusCode, Json<AdminView>)> {
    let user = service::create(
        &app.users,
        &app.clock,
        &actor,
        &req.username,
        &req.password,
        req.role,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

#[derive(Deserialize, ToSchema)]
pub struct SetRoleRequest {
    pub role: Role,
}

/// Gives an admin user another role; their open sessions act with it from the next request.
#[utoipa::path(post, path = "/api/admin/admins/{username}/role", tag = "users",
    params(("username" = String, Path, description = "the admin user's name")), request_body = SetRoleRequest,
    responses((status = 200, body = AdminView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`last_admin`: it would leave no active admin")))]
pub async fn set_role(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    ApiPath(username): ApiPath<String>,
    ApiJson(req): ApiJson<SetRoleRequest>,
) -> ApiResult<Json<AdminView>> {
    Ok(Json(
        service::set_role(&app.users, &app.clock, &actor, &username, req.role).await?,
    ))
}

#[derive(Deserialize, ToSchema)]
pub struct ResetPasswordRequest {
    /// At least 8 characters.
    pub password: String,
}

impl std::fmt::Debug for ResetPasswordRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResetPasswordRequest { password: \"***\" }")
    }
}

/// Sets a new password for an admin user and ends their sessions.
#[utoipa::path(post, path = "/api/admin/admins/{username}/password", tag = "users",
    params(("username" = String, Path, description = "the admin user's name")), request_body = ResetPasswordRequest,
    responses((status = 200, body = AdminView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn reset_password(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    ApiPath(username): ApiPath<String>,
    ApiJson(req): ApiJson<ResetPasswordRequest>,
) -> ApiResult<Json<AdminView>> {
    Ok(Json(
        service::reset_password(&app.users, &app.clock, &actor, &username, &req.password).await?,
    ))
}

/// Disables an admin user: they cannot log in and their sessions end at once.
#[utoipa::path(post, path = "/api/admin/admins/{username}/disable", tag = "users",
    params(("username" = String, Path, description = "the admin user's name")),
    responses((status = 200, body = AdminView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`last_admin`: it would leave no active admin")))]
pub async fn disable_admin(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    ApiPath(username): ApiPath<String>,
) -> ApiResult<Json<AdminView>> {
    Ok(Json(
        service::disable(&app.users, &app.clock, &actor, &username).await?,
    ))
}

/// Lets a disabled admin user log in again.
#[utoipa::path(post, path = "/api/admin/admins/{username}/enable", tag = "users",
    params(("username" = String, Path, description = "the admin user's name")),
    responses((status = 200, body = AdminView), (status = 404, body = ErrorBody)))]
pub async fn enable_admin(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    ApiPath(username): ApiPath<String>,
) -> ApiResult<Json<AdminView>> {
    Ok(Json(
        service::enable(&app.users, &app.clock, &actor, &username).await?,
    ))
}
