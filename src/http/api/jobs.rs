//! The job queue (users database): list, detail, retry, cancel, statistics.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::app::AppState;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiPath, ApiQuery, AuditActor};
use crate::http::pagination::{Page, PageParams};
use crate::service::audit::{self, changes};
use crate::service::jobs::{self as service, JobStats};
use crate::store::jobs::{Job, JobSummary};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobListQuery {
    /// `pending`, `running`, `succeeded`, `failed` or `cancelled`.
    pub status: Option<String>,
    /// Job type, e.g. `noop`.
    #[serde(rename = "type")]
    pub job_type: Option<String>,
    /// 1-based page number (default 1).
    pub page: Option<i64>,
    /// Items per page (default 50, at most 500).
    pub page_size: Option<i64>,
}

/// Lists jobs, newest first.
#[utoipa::path(get, path = "/api/admin/jobs", tag = "users", params(JobListQuery),
    responses((status = 200, body = Page<JobSummary>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_jobs(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<JobListQuery>,
) -> ApiResult<Json<Page<JobSummary>>> {
    let page = PageParams::new(q.page, q.page_size)?;
    let filter = service::filter(q.status, q.job_type)?;
    let (items, total) = service::list(&app.users, &filter, page.limit(), page.offset()).await?;
    Ok(Json(page.wrap(items, total)))
}

/// One job with payload, attempts, last error, result and timestamps.
#[utoipa::path(get, path = "/api/admin/jobs/{id}", tag = "users", params(("id" = String, Path, description = "job id (UUID)")),
    responses((status = 200, body = Job), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_job(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Job>> {
    Ok(Json(service::get(&app.users, &id).await?))
}

/// Makes a failed or cancelled job pending again with a fresh attempt budget (else 409).
#[utoipa::path(post, path = "/api/admin/jobs/{id}/retry", tag = "users", params(("id" = String, Path, description = "job id (UUID)")),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "the job is not failed or cancelled")))]
pub async fn retry_job(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Job>> {
    let job = service::retry(&app.pool, &app.users, &id, app.clock.now_ms()).await?;
    audit::record(&app.users, &app.clock, &actor, changes::job_retry(&job)).await;
    Ok(Json(job))
}

/// Cancels a job: a pending one at once; a running one is asked to stop and ends `cancelled`.
/// A finished job answers 409.
#[utoipa::path(post, path = "/api/admin/jobs/{id}/cancel", tag = "users", params(("id" = String, Path, description = "job id (UUID)")),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "the job already finished")))]
pub async fn cancel_job(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Job>> {
    let job = service::cancel(&app.pool, &app.users, &id, app.clock.now_ms()).await?;
    audit::record(&app.users, &app.clock, &actor, changes::job_cancel(&job)).await;
    Ok(Json(job))
}

/// Counts of jobs by status and by type.
#[utoipa::path(get, path = "/api/admin/jobs/stats", tag = "users",
    responses((status = 200, body = JobStats), (status = 401, body = ErrorBody)))]
pub async fn job_stats(State(app): State<AppState>) -> ApiResult<Json<JobStats>> {
    Ok(Json(service::stats(&app.users).await?))
}
