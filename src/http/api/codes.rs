//! Redeem codes (users domain, admin): generate a batch within the free seats, list, disable, and
//! the quota of new codes. No answer but the generation itself carries a plaintext code.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::app::AppState;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::pagination::{Page, PageParams};
use crate::service::codes::{
    self as service, CodeQuota, DisableRequest, Disabled, GenerateRequest, GeneratedBatch,
};
use crate::store::redeem_codes::RedeemCode;

/// Generates a batch of codes. The plaintext codes are in this answer only; poolkeeper keeps a
/// SHA-256 of each. More codes than free seats minus open codes -> 409 `insufficient_seats`.
#[utoipa::path(post, path = "/api/admin/codes", tag = "users", request_body = GenerateRequest,
    responses((status = 201, body = GeneratedBatch), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no such pool group"),
        (status = 409, body = ErrorBody, description = "`insufficient_seats`")))]
pub async fn generate_codes(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<GenerateRequest>,
) -> ApiResult<(StatusCode, Json<GeneratedBatch>)> {
    Ok((
        StatusCode::CREATED,
        Json(service::generate(&app, req).await?),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CodeListQuery {
    /// `unused`, `reserved`, `used`, `expired` or `disabled`.
    pub status: Option<String>,
    pub batch_id: Option<String>,
    /// Part of the displayed prefix or of the address that used the code.
    pub search: Option<String>,
    pub page: Option<i64>,
    pub page_size: Option<i64>,
}

/// Lists codes, newest first (never a plaintext code).
#[utoipa::path(get, path = "/api/admin/codes", tag = "users", params(CodeListQuery),
    responses((status = 200, body = Page<RedeemCode>), (status = 400, body = ErrorBody)))]
pub async fn list_codes(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<CodeListQuery>,
) -> ApiResult<Json<Page<RedeemCode>>> {
    let page = PageParams::new(q.page, q.page_size)?;
    let filter = service::filter(q.status, q.batch_id, q.search)?;
    let (items, total) = service::list(&app, &filter, page.limit(), page.offset()).await?;
    Ok(Json(page.wrap(items, total)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QuotaQuery {
    /// The quota of codes for this pool group.
    pub pool_group_id: Option<i64>,
}

/// How many codes may still be generated: free seats minus codes not yet used.
#[utoipa::path(get, path = "/api/admin/codes/quota", tag = "users", params(QuotaQuery),
    responses((status = 200, body = CodeQuota), (status = 400, body = ErrorBody)))]
pub async fn code_quota(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<QuotaQuery>,
) -> ApiResult<Json<CodeQuota>> {
    Ok(Json(service::quota(&app, q.pool_group_id).await?))
}

/// Disables unused codes by id or by batch; others are left as they are.
#[utoipa::path(post, path = "/api/admin/codes/disable", tag = "users", request_body = DisableRequest,
    responses((status = 200, body = Disabled), (status = 400, body = ErrorBody)))]
pub async fn disable_codes(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<DisableRequest>,
) -> ApiResult<Json<Disabled>> {
    Ok(Json(service::disable(&app, req).await?))
}
