//! Mothers (pool database): create, list with usage, detail, patch, credential rotation, delete,
//! batch validate/import, stats and quota. No response carries a credential.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::app::AppState;
use crate::crypto::Credential;
use crate::domain::mothers::MotherInput;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, AuditActor};
use crate::http::pagination::{Page, PageParams};
use crate::service::audit::{self, changes};
use crate::service::mothers::{
    self as service, BatchReport, MAX_BATCH_ROWS, PatchMotherRequest, Quota, Stats,
};
use crate::store::mothers::{Mother, MotherDetail};

async fn detail(app: &AppState, id: i64) -> ApiResult<MotherDetail> {
    Ok(service::detail(app.pool_ctx(), id).await?)
}

/// Creates a mother with her teams and `seat_limit` free seats, in one transaction. The credential
/// is sealed and never returned. Without `teams`, one default team is named by the group's team
/// template.
#[utoipa::path(post, path = "/api/admin/mothers", tag = "pool", request_body = MotherInput,
    responses((status = 201, body = MotherDetail), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "name taken")))]
pub async fn create_mother(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    ApiJson(req): ApiJson<MotherInput>,
) -> ApiResult<(StatusCode, Json<MotherDetail>)> {
    let id = service::create(app.pool_ctx(), req).await?;
    let mother = service::get(app.pool_ctx(), id).await?;
    audit::record(
        &app.users,
        &app.clock,
        &actor,
        changes::mother_create(&mother),
    )
    .await;
    Ok((StatusCode::CREATED, Json(detail(&app, id).await?)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MotherListQuery {
    /// 1-based page number (default 1).
    pub page: Option<i64>,
    /// Items per page (default 50, at most 500).
    pub page_size: Option<i64>,
    /// Part of the name, case-insensitive; `%` and `_` match themselves (at most 200 bytes).
    pub search: Option<String>,
    /// `active`, `invalid` or `disabled`.
    pub status: Option<String>,
    pub pool_group_id: Option<i64>,
}

/// Lists mothers, newest first, each with seat usage, computed in SQL for the page.
#[utoipa::path(get, path = "/api/admin/mothers", tag = "pool", params(MotherListQuery),
    responses((status = 200, body = Page<Mother>), (status = 400, body = ErrorBody)))]
pub async fn list_mothers(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<MotherListQuery>,
) -> ApiResult<Json<Page<Mother>>> {
    let page = PageParams::new(q.page, q.page_size)?;
    let filter = service::list_filter(q.search.as_deref(), q.status.as_deref(), q.pool_group_id)?;
    let (items, total) =
        service::list(app.pool_ctx(), &filter, page.limit(), page.offset()).await?;
    Ok(Json(page.wrap(items, total)))
}

/// One mother with her teams, seats and children.
#[utoipa::path(get, path = "/api/admin/mothers/{id}", tag = "pool",
    params(("id" = i64, Path, description = "mother id")),
    responses((status = 200, body = MotherDetail), (status = 404, body = ErrorBody)))]
pub async fn get_mother(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<MotherDetail>> {
    Ok(Json(detail(&app, id).await?))
}

/// Changes name, status, notes, group or seat_limit. Growing adds free seats; shrinking removes
/// free seats and is refused (409) below the seats in use.
#[utoipa::path(patch, path = "/api/admin/mothers/{id}", tag = "pool",
    params(("id" = i64, Path, description = "mother id")), request_body = PatchMotherRequest,
    responses((status = 200, body = Mother), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "name taken, or seat_limit below the seats in use")))]
pub async fn patch_mother(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<PatchMotherRequest>,
) -> ApiResult<Json<Mother>> {
    let change = changes::mother_update(id, &req);
    let mother = service::patch(app.pool_ctx(), id, req).await?;
    audit::record(&app.users, &app.clock, &actor, change).await;
    Ok(Json(mother))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Delete even while seats are used or held.
    #[serde(default)]
    pub force: bool,
}

/// Deletes a mother with her teams, seats and children; refused while seats are in use unless
/// `force=true`.
#[utoipa::path(delete, path = "/api/admin/mothers/{id}", tag = "pool",
    params(("id" = i64, Path, description = "mother id"), DeleteQuery),
    responses((status = 204), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "seats in use")))]
pub async fn delete_mother(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> ApiResult<StatusCode> {
    service::delete(app.pool_ctx(), id, q.force).await?;
    audit::record(
        &app.users,
        &app.clock,
        &actor,
        changes::mother_delete(id, q.force),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialRequest {
    #[schema(value_type = String)]
    pub credential: Credential,
}

/// Replaces a mother's credential (sealed with the current key). The response never contains it.
#[utoipa::path(post, path = "/api/admin/mothers/{id}/credential", tag = "pool",
    params(("id" = i64, Path, description = "mother id")), request_body = CredentialRequest,
    responses((status = 200, body = Mother), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn rotate_credential(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<CredentialRequest>,
) -> ApiResult<Json<Mother>> {
    service::rotate_credential(app.pool_ctx(), id, &req.credential).await?;
    audit::record(
        &app.users,
        &app.clock,
        &actor,
        changes::mother_rotate_credential(id),
    )
    .await;
    Ok(Json(service::get(app.pool_ctx(), id).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Up to 1000 rows, each shaped like the create body.
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<serde_json::Value>,
}

fn batch_rows(req: BatchRequest) -> ApiResult<Vec<service::RawRow>> {
    if req.rows.is_empty() || req.rows.len() > MAX_BATCH_ROWS {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!("rows must hold 1-{MAX_BATCH_ROWS} rows"),
        ));
    }
    Ok(req.rows.into_iter().map(Ok).collect())
}

/// Checks rows without writing anything; reports each row's errors.
#[utoipa::path(post, path = "/api/admin/mothers/batch/validate", tag = "pool", request_body = BatchRequest,
    responses((status = 200, body = BatchReport), (status = 400, body = ErrorBody)))]
pub async fn batch_validate(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<BatchRequest>,
) -> ApiResult<Json<BatchReport>> {
    let rows = batch_rows(req)?;
    let mut seen = Default::default();
    Ok(Json(
        service::batch(app.pool_ctx(), rows, false, 1, &mut seen).await?,
    ))
}

/// Imports the valid rows (each in its own transaction) and reports each row's outcome.
#[utoipa::path(post, path = "/api/admin/mothers/batch/import", tag = "pool", request_body = BatchRequest,
    responses((status = 200, body = BatchReport), (status = 400, body = ErrorBody)))]
pub async fn batch_import(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    ApiJson(req): ApiJson<BatchRequest>,
) -> ApiResult<Json<BatchReport>> {
    let rows = batch_rows(req)?;
    let mut seen = Default::default();
    let report = service::batch(app.pool_ctx(), rows, true, 1, &mut seen).await?;
    let change = changes::mother_import(report.total, report.imported, report.invalid);
    audit::record(&app.users, &app.clock, &actor, change).await;
    Ok(Json(report))
}

/// Mothers by status, seats by status, groups and children; redeem codes and invites by status.
#[utoipa::path(get, path = "/api/admin/stats", tag = "pool",
    responses((status = 200, body = Stats)))]
pub async fn stats(State(app): State<AppState>) -> ApiResult<Json<Stats>> {
    Ok(Json(service::admin_stats(&app).await?))
}

/// Seats free to hand out on active mothers (not used, minus held), overall and per group.
#[utoipa::path(get, path = "/api/admin/quota", tag = "pool",
    responses((status = 200, body = Quota)))]
pub async fn quota(State(app): State<AppState>) -> ApiResult<Json<Quota>> {
    Ok(Json(service::quota(app.pool_ctx()).await?))
}
