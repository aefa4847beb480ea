//! Sync sessions: list with filters, one with its records, statistics, cancel.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::app::AppState;
use crate::domain::sync_sessions::{CATEGORIES, STATUSES, SYNC_TYPES};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{ApiPath, ApiQuery};
use crate::http::pagination::{Page, PageParams};
use crate::store::StoreError;
use crate::store::sync_sessions::{
    self as store, Session, SessionDetail, SessionFilter, Statistics,
};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionListQuery {
    /// `scheduled`, `manual_single` or `manual_batch`.
    pub sync_type: Option<String>,
    /// `running`, `completed`, `failed` or `cancelled`.
    pub status: Option<String>,
    /// `pool`, `account`, `capacity`, `config` or `other`.
    pub category: Option<String>,
    /// 1-based page number (default 1).
    pub page: Option<i64>,
    /// Items per page (default 50, at most 500).
    pub page_size: Option<i64>,
}

fn one_of(
    field: &'static str,
    value: Option<String>,
    allowed: &[&str],
) -> ApiResult<Option<String>> {
    match value {
        Some(v) if v.is_empty() => Ok(None),
        Some(v) if !allowed.contains(&v.as_str()) => Err(ApiError::bad_request(
            format!("invalid_{field}"),
            format!("{field} must be one of {}", allowed.join(", ")),
        )),
        other => Ok(other),
    }
}

/// Lists sync sessions, newest first, with progress.
#[utoipa::path(get, path = "/api/admin/sync-sessions", tag = "pool", params(SessionListQuery),
    responses((status = 200, body = Page<Session>), (status = 400, body = ErrorBody)))]
pub async fn list_sessions(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<SessionListQuery>,
) -> ApiResult<Json<Page<Session>>> {
    let page = PageParams::new(q.page, q.page_size)?;
    let filter = SessionFilter {
        sync_type: one_of("sync_type", q.sync_type, &SYNC_TYPES)?,
        status: one_of("status", q.status, &STATUSES)?,
        category: one_of("category", q.category, &CATEGORIES)?,
    };
    let (items, total) = store::list(&app.pool, &filter, page.limit(), page.offset()).await?;
    Ok(Json(page.wrap(items, total)))
}

/// Counts of sessions by status, by kind and by category.
#[utoipa::path(get, path = "/api/admin/sync-sessions/statistics", tag = "pool",
    responses((status = 200, body = Statistics)))]
pub async fn session_statistics(State(app): State<AppState>) -> ApiResult<Json<Statistics>> {
    Ok(Json(store::statistics(&app.pool).await?))
}

fn not_found(id: &str) -> impl FnOnce(StoreError) -> ApiError + '_ {
    move |e| match e {
        StoreError::NotFound => ApiError::not_found(format!("no sync session {id}")),
        other => other.into(),
    }
}

/// One sync session with its records.
#[utoipa::path(get, path = "/api/admin/sync-sessions/{id}", tag = "pool",
    params(("id" = String, Path, description = "session id")),
    responses((status = 200, body = SessionDetail), (status = 404, body = ErrorBody)))]
pub async fn get_session(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<SessionDetail>> {
    Ok(Json(
        store::get(&app.pool, &id).await.map_err(not_found(&id))?,
    ))
}

#[derive(Serialize, ToSchema)]
pub struct CancelledSession {
    #[serde(flatten)]
    pub session: SessionDetail,
    /// Jobs of pending records that were cancelled.
    pub cancelled_jobs: usize,
}

/// Cancels a running session: its pending records and their jobs are cancelled. Records already
/// running finish on their own.
#[utoipa::path(post, path = "/api/admin/sync-sessions/{id}/cancel", tag = "pool",
    params(("id" = String, Path, description = "session id")),
    responses((status = 200, body = CancelledSession), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the session is not running")))]
pub async fn cancel_session(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<CancelledSession>> {
    let now = app.clock.now_ms();
    let jobs = match store::cancel(&app.pool, &id, now)
        .await
        .map_err(not_found(&id))?
    {
        Ok(jobs) => jobs,
        Err(status) => {
            return Err(ApiError::conflict(format!(
                "sync session {id} is {status}; only a running session can be cancelled"
            )));
        }
    };
    let mut cancelled_jobs = 0;
    for job in &jobs {
        // A job that already finished or started is left to end on its own.
        match crate::store::jobs::cancel(&app.users, job, now).await {
            Ok(_) => cancelled_jobs += 1,
            Err(StoreError::Conflict(_) | StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let session = store::get(&app.pool, &id).await.map_err(not_found(&id))?;
    Ok(Json(CancelledSession {
        session,
        cancelled_jobs,
    }))
}
