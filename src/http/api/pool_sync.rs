//! Enqueueing pool syncs: one mother, or every active mother of a group. The work runs as
//! `pool_sync_mother` jobs (see `jobs::pool_sync`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::error::{ApiResult, ErrorBody};
use crate::http::extract::ApiPath;
use crate::jobs::pool_sync;

#[derive(Serialize, ToSchema)]
pub struct SyncMotherQueued {
    pub job_id: String,
    /// A sync of this mother was already queued or running; `job_id` is that job.
    pub deduplicated: bool,
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
    ApiPath((group_id, mother_id)): ApiPath<(i64, i64)>,
) -> ApiResult<(StatusCode, Json<SyncMotherQueued>)> {
    let (job_id, deduplicated) = pool_sync::enqueue_mother_sync(&app, group_id, mother_id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(SyncMotherQueued {
            job_id,
            deduplicated,
        }),
    ))
}

#[derive(Serialize, ToSchema)]
pub struct SyncAllQueued {
    /// Jobs queued (or already live), one per active mother of the group.
    pub count: usize,
    pub job_ids: Vec<String>,
}

/// Queues a sync of every active mother of the group.
#[utoipa::path(post, path = "/api/admin/pool-groups/{group_id}/sync/all", tag = "pool",
    params(("group_id" = i64, Path, description = "pool group id")),
    responses((status = 202, body = SyncAllQueued), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn sync_all(
    State(app): State<AppState>,
    ApiPath(group_id): ApiPath<i64>,
) -> ApiResult<(StatusCode, Json<SyncAllQueued>)> {
    let job_ids = pool_sync::enqueue_group_sync(&app, group_id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(SyncAllQueued {
            count: job_ids.len(),
            job_ids,
        }),
    ))
}
