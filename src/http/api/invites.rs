//! Invites (users domain, admin): list them, and resend, cancel or remove them in bulk. Each bulk
//! route queues one job (`users_resend`, `users_cancel`, `users_remove`) whose result names what
//! became of every invite.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::app::AppState;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, ApiQuery, AuditActor};
use crate::http::pagination::{Page, PageParams};
use crate::service::audit::{self, Actor};
use crate::service::invites::{self as service, BulkAction, BulkQueued, BulkRequest};
use crate::store::invites::Invite;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InviteListQuery {
    /// `pending`, `sent`, `accepted`, `failed`, `cancelled` or `removed`.
    pub status: Option<String>,
    /// Part of the address, case-insensitive.
    pub email: Option<String>,
    pub mother_id: Option<i64>,
    pub page: Option<i64>,
    pub page_size: Option<i64>,
}

/// Lists the invites redeems sent, newest first.
#[utoipa::path(get, path = "/api/admin/invites", tag = "users", params(InviteListQuery),
    responses((status = 200, body = Page<Invite>), (status = 400, body = ErrorBody)))]
pub async fn list_invites(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<InviteListQuery>,
) -> ApiResult<Json<Page<Invite>>> {
    let page = PageParams::new(q.page, q.page_size)?;
    let filter = service::filter(q.status, q.email, q.mother_id)?;
    let (items, total) = service::list(&app, &filter, page.limit(), page.offset()).await?;
    Ok(Json(page.wrap(items, total)))
}

async fn queue(
    app: &AppState,
    actor: &Actor,
    action: BulkAction,
    req: BulkRequest,
) -> ApiResult<(StatusCode, Json<BulkQueued>)> {
    let ids = req.ids.clone();
    let queued = service::bulk(app, action, req).await?;
    audit::mark_jobs(&app.users, actor, std::slice::from_ref(&queued.job_id)).await;
    let change = audit::more_changes::invites_bulk(&queued, &ids);
    audit::record(&app.users, &app.clock, actor, change).await;
    Ok((StatusCode::ACCEPTED, Json(queued)))
}

/// Queues a `users_resend` job: the provider invites each address again. Pending and sent invites
/// are resent; the others are skipped. The job's result names the outcome per invite id.
#[utoipa::path(post, path = "/api/admin/invites/resend", tag = "users", request_body = BulkRequest,
    responses((status = 202, body = BulkQueued),
        (status = 400, body = ErrorBody, description = "`invalid_ids`: 1 to 1000 ids")))]
pub async fn resend_invites(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    ApiJson(req): ApiJson<BulkRequest>,
) -> ApiResult<(StatusCode, Json<BulkQueued>)> {
    queue(&app, &actor, BulkAction::Resend, req).await
}

/// Queues a `users_cancel` job: each pending or sent invite is withdrawn at the provider (when
/// its address has not joined yet) and its seat freed; the invite becomes `cancelled`.
#[utoipa::path(post, path = "/api/admin/invites/cancel", tag = "users", request_body = BulkRequest,
    responses((status = 202, body = BulkQueued),
        (status = 400, body = ErrorBody, description = "`invalid_ids`: 1 to 1000 ids")))]
pub async fn cancel_invites(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    ApiJson(req): ApiJson<BulkRequest>,
) -> ApiResult<(StatusCode, Json<BulkQueued>)> {
    queue(&app, &actor, BulkAction::Cancel, req).await
}

/// Queues a `users_remove` job: each invitee (pending, sent or accepted) is removed at the
/// provider and the seat freed here; the invite becomes `removed`.
#[utoipa::path(post, path = "/api/admin/invites/remove", tag = "users", request_body = BulkRequest,
    responses((status = 202, body = BulkQueued),
        (status = 400, body = ErrorBody, description = "`invalid_ids`: 1 to 1000 ids")))]
pub async fn remove_invites(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    ApiJson(req): ApiJson<BulkRequest>,
) -> ApiResult<(StatusCode, Json<BulkQueued>)> {
    queue(&app, &actor, BulkAction::Remove, req).await
}
