//! Redeem codes (users domain, admin): generate a batch within the free seats, list, disable, and
//! the quota of new codes. No answer but the generation itself carries a plaintext code.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::app::AppState;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::pagination::{Page, PageParams};
use crate::service::codes::{
    self as service, CodeQuota, DisableOutcome, DisableQueued, DisableRequest, Disabled,
    GenerateRequest, GeneratedBatch,
};
use crate::store::redeem_codes::RedeemCode;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GenerateQuery {
    /// `csv` answers the new codes as a CSV file (as does `Accept: text/csv`); `json` or nothing
    /// answers JSON.
    pub format: Option<String>,
}

/// Generates a batch of codes. The plaintext codes are in this answer only; poolkeeper keeps a
/// SHA-256 of each. More codes than free seats minus open codes -> 409 `insufficient_seats`.
/// With `?format=csv` or `Accept: text/csv` the answer is a CSV file
/// (`code,batch_id,expires_at,pool_group_id`, one code a row).
#[utoipa::path(post, path = "/api/admin/codes", tag = "users", request_body = GenerateRequest,
    params(GenerateQuery),
    responses((status = 201,
            description = "the new batch: JSON, or with `?format=csv` or `Accept: text/csv` a CSV file",
            content((GeneratedBatch = "application/json"), (String = "text/csv"))),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no such pool group"),
        (status = 409, body = ErrorBody, description = "`insufficient_seats`")))]
pub async fn generate_codes(
    State(app): State<AppState>,
    crate::http::extract::AuditActor(actor): crate::http::extract::AuditActor,
    ApiQuery(q): ApiQuery<GenerateQuery>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<GenerateRequest>,
) -> ApiResult<Response> {
    let csv = match q.format.as_deref() {
        Some("csv") => true,
        Some("json") => false,
        Some(_) => {
            return Err(crate::service::Error::invalid(
                "invalid_query",
                "format must be csv or json",
            )
            .into());
        }
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/csv")),
    };
    let batch = service::generate(&app, req).await?;
    let change = crate::service::audit::more_changes::codes_generate(&batch);
    crate::service::audit::record(&app.users, &app.clock, &actor, change).await;
    if !csv {
        return Ok((StatusCode::CREATED, Json(batch)).into_response());
    }
    let disposition = format!("attachment; filename=\"{}\"", batch.csv_file_name());
    Ok((
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        batch.to_csv(),
    )
        .into_response())
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

/// Disables unused codes by id or by batch; others are left as they are. Up to 1,000 codes are
/// disabled in the request (200); more ids, or a batch of more than 1,000 unused codes, run as a
/// `codes_disable` job (202 with its id).
#[utoipa::path(post, path = "/api/admin/codes/disable", tag = "users", request_body = DisableRequest,
    responses((status = 200, body = Disabled), (status = 202, body = DisableQueued,
        description = "a `codes_disable` job was queued"), (status = 400, body = ErrorBody)))]
pub async fn disable_codes(
    State(app): State<AppState>,
    crate::http::extract::AuditActor(actor): crate::http::extract::AuditActor,
    ApiJson(req): ApiJson<DisableRequest>,
) -> ApiResult<Response> {
    let batch_id = req.batch_id.clone();
    let ids = req.ids.as_ref().map_or(0, Vec::len);
    let outcome = service::disable(&app, req).await?;
    let change =
        crate::service::audit::more_changes::codes_disable(&outcome, batch_id.as_deref(), ids);
    crate::service::audit::record(&app.users, &app.clock, &actor, change).await;
    if let DisableOutcome::Queued(q) = &outcome {
        let job = std::slice::from_ref(&q.job_id);
        crate::service::audit::mark_jobs(&app.users, &actor, job).await;
    }
    Ok(match outcome {
        DisableOutcome::Done(done) => Json(done).into_response(),
        DisableOutcome::Queued(queued) => (StatusCode::ACCEPTED, Json(queued)).into_response(),
    })
}
