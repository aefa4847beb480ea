//! Pool groups (pool database): create, list, get, change settings, preview names, delete.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::app::AppState;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery};
use crate::http::pagination::{Page, PageParams};
use crate::service::pool_groups::{self as service, Preview, SettingsPatch};
use crate::store::pool_groups::PoolGroup;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroupRequest {
    /// Unique; 1-64 letters, digits, `.`, `_` or `-` (it is rendered into names and addresses).
    pub name: String,
    pub description: Option<String>,
    /// Invite generated addresses into free seats during syncs of this group (default false).
    pub auto_invite: Option<bool>,
}

/// Creates a pool group with the default naming settings (and `auto_invite` when given).
#[utoipa::path(post, path = "/api/admin/pool-groups", tag = "pool", request_body = CreateGroupRequest,
    responses((status = 201, body = PoolGroup), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "name taken")))]
pub async fn create_group(
    State(app): State<AppState>,
    crate::http::extract::AuditActor(actor): crate::http::extract::AuditActor,
    ApiJson(req): ApiJson<CreateGroupRequest>,
) -> ApiResult<(StatusCode, Json<PoolGroup>)> {
    let group = service::create(
        app.pool_ctx(),
        &req.name,
        req.description.as_deref(),
        req.auto_invite,
    )
    .await?;
    crate::service::audit::record(
        &app.users,
        &app.clock,
        &actor,
        crate::service::audit::group_changes::group_create(&group),
    )
    .await;
    Ok((StatusCode::CREATED, Json(group)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GroupListQuery {
    /// 1-based page number (default 1).
    pub page: Option<i64>,
    /// Items per page (default 50, at most 500).
    pub page_size: Option<i64>,
}

/// Lists pool groups by name, with settings and mother counts.
#[utoipa::path(get, path = "/api/admin/pool-groups", tag = "pool", params(GroupListQuery),
    responses((status = 200, body = Page<PoolGroup>), (status = 400, body = ErrorBody)))]
pub async fn list_groups(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<GroupListQuery>,
) -> ApiResult<Json<Page<PoolGroup>>> {
    let page = PageParams::new(q.page, q.page_size)?;
    let (items, total) = service::list_page(app.pool_ctx(), page.limit(), page.offset()).await?;
    Ok(Json(page.wrap(items, total)))
}

/// One pool group with its settings.
#[utoipa::path(get, path = "/api/admin/pool-groups/{id}", tag = "pool",
    params(("id" = i64, Path, description = "pool group id")),
    responses((status = 200, body = PoolGroup), (status = 404, body = ErrorBody)))]
pub async fn get_group(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<PoolGroup>> {
    Ok(Json(service::get(app.pool_ctx(), id).await?))
}

/// Deletes a pool group; refused while mothers belong to it.
#[utoipa::path(delete, path = "/api/admin/pool-groups/{id}", tag = "pool",
    params(("id" = i64, Path, description = "pool group id")),
    responses((status = 204), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "mothers still belong to the group")))]
pub async fn delete_group(
    State(app): State<AppState>,
    crate::http::extract::AuditActor(actor): crate::http::extract::AuditActor,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    service::delete(app.pool_ctx(), id).await?;
    crate::service::audit::record(
        &app.users,
        &app.clock,
        &actor,
        crate::service::audit::group_changes::group_delete(id),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes some of a group's settings (`auto_invite` turns on auto-invite for this group's syncs,
/// whatever `pool_auto_invite_missing` says). The templates are checked together: an unknown placeholder,
/// an unclosed brace, an empty template, an email template that does not render to a valid address,
/// `{domain}` with no domain configured, or `{date}` or `{seq3}` more than once is a 400
/// `invalid_template` naming the field and part.
#[utoipa::path(post, path = "/api/admin/pool-groups/{id}/settings", tag = "pool",
    params(("id" = i64, Path, description = "pool group id")), request_body = SettingsPatch,
    responses((status = 200, body = PoolGroup),
        (status = 400, body = ErrorBody, description = "invalid_template or invalid_email_domain"),
        (status = 404, body = ErrorBody)))]
pub async fn update_settings(
    State(app): State<AppState>,
    crate::http::extract::AuditActor(actor): crate::http::extract::AuditActor,
    ApiPath(id): ApiPath<i64>,
    ApiJson(patch): ApiJson<SettingsPatch>,
) -> ApiResult<Json<PoolGroup>> {
    let group = service::update_settings(app.pool_ctx(), id, patch).await?;
    crate::service::audit::record(
        &app.users,
        &app.clock,
        &actor,
        crate::service::audit::group_changes::group_settings(&group),
    )
    .await;
    Ok(Json(group))
}

#[derive(Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PreviewQuery {
    /// How many names of each kind (1-100, default 5).
    pub count: Option<i64>,
}

/// The next names the group would produce today. Uses up no sequence number.
#[utoipa::path(get, path = "/api/admin/pool-groups/{id}/preview", tag = "pool",
    params(("id" = i64, Path, description = "pool group id"), PreviewQuery),
    responses((status = 200, body = Preview), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn preview(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<PreviewQuery>,
) -> ApiResult<Json<Preview>> {
    Ok(Json(service::preview(app.pool_ctx(), id, q.count).await?))
}
