//! The job queue (users database): list, detail, retry, cancel, statistics.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::app::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{ApiPath, ApiQuery};
use crate::http::pagination::{Page, PageParams};
use crate::store::StoreError;
use crate::store::jobs::{self as job_store, Job, JobFilter, JobSummary, STATUSES};

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

/// Checks list filters; shared by the API and the jobs page.
pub fn job_filter(status: Option<String>, job_type: Option<String>) -> ApiResult<JobFilter> {
    let status = status.filter(|s| !s.is_empty());
    if let Some(s) = &status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("status must be one of {}", STATUSES.join(", ")),
        ));
    }
    let job_type = job_type.filter(|t| !t.is_empty());
    if let Some(t) = &job_type
        && (t.len() > 100
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            "type must be up to 100 letters, digits, '.', '_' or '-'",
        ));
    }
    Ok(JobFilter { status, job_type })
}

/// Lists jobs, newest first.
#[utoipa::path(get, path = "/api/admin/jobs", tag = "users", params(JobListQuery),
    responses((status = 200, body = Page<JobSummary>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_jobs(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<JobListQuery>,
) -> ApiResult<Json<Page<JobSummary>>> {
    let page = PageParams::new(q.page, q.page_size)?;
    let filter = job_filter(q.status, q.job_type)?;
    let (items, total) = job_store::list(&app.users, &filter, page.limit(), page.offset()).await?;
    Ok(Json(page.wrap(items, total)))
}

fn check_id(id: &str) -> ApiResult<()> {
    uuid::Uuid::parse_str(id)
        .map(drop)
        .map_err(|_| ApiError::bad_request("invalid_path", "job id must be a UUID"))
}

fn job_not_found(id: &str) -> impl FnOnce(StoreError) -> ApiError + '_ {
    move |e| match e {
        StoreError::NotFound => ApiError::not_found(format!("no job {id}")),
        StoreError::Conflict(why) => ApiError::conflict(why),
        other => other.into(),
    }
}

/// One job with payload, attempts, last error, result and timestamps.
#[utoipa::path(get, path = "/api/admin/jobs/{id}", tag = "users", params(("id" = String, Path, description = "job id (UUID)")),
    responses((status = 200, body = Job), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_job(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Job>> {
    check_id(&id)?;
    Ok(Json(
        job_store::get(&app.users, &id)
            .await
            .map_err(job_not_found(&id))?,
    ))
}

/// Makes a failed or cancelled job pending again with a fresh attempt budget (else 409).
#[utoipa::path(post, path = "/api/admin/jobs/{id}/retry", tag = "users", params(("id" = String, Path, description = "job id (UUID)")),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "the job is not failed or cancelled")))]
pub async fn retry_job(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Job>> {
    check_id(&id)?;
    let job = job_store::retry(&app.users, &id, app.clock.now_ms())
        .await
        .map_err(job_not_found(&id))?;
    job_store::notify_ready(&app.users).await?;
    Ok(Json(job))
}

/// Cancels a job: a pending one at once; a running one is asked to stop and ends `cancelled`.
/// A finished job answers 409.
#[utoipa::path(post, path = "/api/admin/jobs/{id}/cancel", tag = "users", params(("id" = String, Path, description = "job id (UUID)")),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "the job already finished")))]
pub async fn cancel_job(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Job>> {
    check_id(&id)?;
    Ok(Json(
        job_store::cancel(&app.users, &id, app.clock.now_ms())
            .await
            .map_err(job_not_found(&id))?,
    ))
}

#[derive(Serialize, ToSchema)]
pub struct JobStats {
    /// Jobs per status (every status is present).
    pub by_status: std::collections::BTreeMap<String, i64>,
    /// Jobs per type, with counts per status.
    pub by_type: std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>>,
    pub total: i64,
}

/// Counts of jobs by status and by type.
#[utoipa::path(get, path = "/api/admin/jobs/stats", tag = "users",
    responses((status = 200, body = JobStats), (status = 401, body = ErrorBody)))]
pub async fn job_stats(State(app): State<AppState>) -> ApiResult<Json<JobStats>> {
    Ok(Json(stats(&app).await?))
}

pub async fn stats(app: &AppState) -> ApiResult<JobStats> {
    let mut by_status: std::collections::BTreeMap<String, i64> =
        STATUSES.iter().map(|s| (s.to_string(), 0)).collect();
    let mut by_type: std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>> =
        Default::default();
    let mut total = 0;
    for (status, job_type, n) in job_store::counts(&app.users).await? {
        *by_status.entry(status.clone()).or_default() += n;
        *by_type
            .entry(job_type)
            .or_default()
            .entry(status)
            .or_default() += n;
        total += n;
    }
    Ok(JobStats {
        by_status,
        by_type,
        total,
    })
}
