//! Sync sessions: list with filters, one with its records, statistics, cancel.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::app::AppState;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiPath, ApiQuery, AuditActor};
use crate::http::pagination::{Page, PageParams};
use crate::service::audit;
use crate::service::sync_sessions::{self as service, CancelledSession};
use crate::store::sync_sessions::{Session, SessionDetail, Statistics};

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

/// Lists sync sessions, newest first, with progress.
#[utoipa::path(get, path = "/api/admin/sync-sessions", tag = "pool", params(SessionListQuery),
    responses((status = 200, body = Page<Session>), (status = 400, body = ErrorBody)))]
pub async fn list_sessions(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<SessionListQuery>,
) -> ApiResult<Json<Page<Session>>> {
    let page = PageParams::new(q.page, q.page_size)?;
    let filter = service::filter(q.sync_type, q.status, q.category)?;
    let (items, total) = service::list(&app, &filter, page.limit(), page.offset()).await?;
    Ok(Json(page.wrap(items, total)))
}

/// Counts of sessions by status, by kind and by category.
#[utoipa::path(get, path = "/api/admin/sync-sessions/statistics", tag = "pool",
    responses((status = 200, body = Statistics)))]
pub async fn session_statistics(State(app): State<AppState>) -> ApiResult<Json<Statistics>> {
    Ok(Json(service::statistics(&app).await?))
}

/// One sync session with its records.
#[utoipa::path(get, path = "/api/admin/sync-sessions/{id}", tag = "pool",
    params(("id" = String, Path, description = "session id")),
    responses((status = 200, body = SessionDetail), (status = 404, body = ErrorBody)))]
pub async fn get_session(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<SessionDetail>> {
    Ok(Json(service::get(&app, &id).await?))
}

/// Cancels a running session: its pending records and their jobs are cancelled. Records already
/// running finish on their own.
#[utoipa::path(post, path = "/api/admin/sync-sessions/{id}/cancel", tag = "pool",
    params(("id" = String, Path, description = "session id")),
    responses((status = 200, body = CancelledSession), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the session is not running")))]
pub async fn cancel_session(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<CancelledSession>> {
    let cancelled = service::cancel(&app, &id).await?;
    let change = audit::more_changes::sync_session_cancel(&id, cancelled.cancelled_jobs);
    audit::record(&app.users, &app.clock, &actor, change).await;
    Ok(Json(cancelled))
}
