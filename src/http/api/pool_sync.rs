//! Enqueueing pool syncs: one mother, or every active mother of a group. The work runs as
//! `pool_sync_mother` jobs (see `service::pool_sync` and `jobs::pool_sync`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::Principal;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::ApiPath;
use crate::http::extract::AuditActor;
use crate::service::audit::{self, changes};
use crate::service::pool_sync;

#[derive(Serialize, ToSchema)]
pub struct SyncMotherQueued {
    pub job_id: String,
    /// A sync of this mother was already queued or running; `job_id` is that job.
    pub deduplicated: bool,
    /// The sync session of the job.
    pub session_id: Option<String>,
}

/// Puts the mother in the group and queues her sync. Concurrent requests for one mother share one
/// live job.
#[utoipa::path(post, path = "/api/admin/pool-groups/{group_id}/sync/mother/{mother_id}", tag = "pool",
    params(("group_id" = i64, Path, description = "pool group id"),
        ("mother_id" = i64, Path, description = "mother id")),
    responses((status = 202, body = SyncMotherQueued), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no such group or mother")))]
pub async fn sync_mother(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    AuditActor(actor): AuditActor,
    ApiPath((group_id, mother_id)): ApiPath<(i64, i64)>,
) -> ApiResult<(StatusCode, Json<SyncMotherQueued>)> {
    let q = pool_sync::sync_mother(&app, group_id, mother_id, &principal.display_name()).await?;
    audit::mark_jobs(&app.users, &actor, std::slice::from_ref(&q.job_id)).await;
    let change = changes::mother_sync(mother_id, group_id, &q.job_id, q.session_id.as_deref());
    audit::record(&app.users, &app.clock, &actor, change).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(SyncMotherQueued {
            job_id: q.job_id,
            deduplicated: q.deduplicated,
            session_id: q.session_id,
        }),
    ))
}

#[derive(Serialize, ToSchema)]
pub struct SyncAllQueued {
    /// Jobs queued (or already live), one per active mother of the group.
    pub count: usize,
    pub job_ids: Vec<String>,
    /// The `manual_batch` sync session, with a record per mother.
    pub session_id: String,
}

/// Queues a sync of every active mother of the group.
#[utoipa::path(post, path = "/api/admin/pool-groups/{group_id}/sync/all", tag = "pool",
    params(("group_id" = i64, Path, description = "pool group id")),
    responses((status = 202, body = SyncAllQueued), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn sync_all(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    AuditActor(actor): AuditActor,
    ApiPath(group_id): ApiPath<i64>,
) -> ApiResult<(StatusCode, Json<SyncAllQueued>)> {
    let q =
        pool_sync::sync_group(&app, group_id, "manual_batch", &principal.display_name()).await?;
    audit::mark_jobs(&app.users, &actor, &q.job_ids).await;
    let change = changes::group_sync(group_id, &q.session_id, q.job_ids.len());
    audit::record(&app.users, &app.clock, &actor, change).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(SyncAllQueued {
            count: q.job_ids.len(),
            job_ids: q.job_ids,
            session_id: q.session_id,
        }),
    ))
}
