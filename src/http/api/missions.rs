//! The worker mission API (pool domain): queue requests, claim a mission with a lease, complete
//! it, with a bearer token of scope `worker`. The token is the claim's holder.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::leases::holder;
use crate::app::AppState;
use crate::auth::Principal;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, ApiPath};
use crate::service::missions::{
    self as service, ClaimRequest, CompleteRequest, CompletedClaim, MissionGrant, QueueRequest,
    QueuedRequest,
};

/// Queues a request under a mission (matched case-insensitively).
#[utoipa::path(post, path = "/api/pool/requests", tag = "pool", request_body = QueueRequest,
    responses((status = 201, body = QueuedRequest),
        (status = 400, body = ErrorBody, description = "`invalid_mission` or `invalid_payload`"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "not a worker token")))]
pub async fn queue_request(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(req): ApiJson<QueueRequest>,
) -> ApiResult<(StatusCode, Json<QueuedRequest>)> {
    holder(&principal)?;
    let queued = service::queue_request(app.missions_ctx(), req).await?;
    Ok((StatusCode::CREATED, Json(queued)))
}

/// Claims the oldest mission with pending requests that nobody runs: its pending requests (up to
/// `max_requests`) and a lease on an account. 204 when there is no such mission or
/// `missions.max_concurrent` missions run already.
#[utoipa::path(post, path = "/api/pool/missions/claim", tag = "pool", request_body = ClaimRequest,
    responses((status = 200, body = MissionGrant),
        (status = 204, description = "no mission to claim now"),
        (status = 400, body = ErrorBody, description = "`invalid_worker`, `invalid_ttl_seconds`, `invalid_max_requests` or `invalid_pool`"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "not a worker token"),
        (status = 503, body = ErrorBody, description = "`no_account_available` (work waits, no account is free; nothing was claimed); `Retry-After` says when the next account returns")))]
pub async fn claim_mission(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(req): ApiJson<ClaimRequest>,
) -> ApiResult<Response> {
    let holder = holder(&principal)?;
    Ok(
        match service::claim(app.missions_ctx(), &holder, req).await? {
            Some(grant) => Json(grant).into_response(),
            None => StatusCode::NO_CONTENT.into_response(),
        },
    )
}

/// Completes a claim: releases its lease with `result` (the lease release rules), finishes the
/// reported requests, and sends the claim's other requests back to pending. Holder only, once.
#[utoipa::path(post, path = "/api/pool/missions/{claim_id}/complete", tag = "pool",
    request_body = CompleteRequest,
    params(("claim_id" = String, Path, description = "claim id (UUID)")),
    responses((status = 200, body = CompletedClaim),
        (status = 400, body = ErrorBody, description = "`invalid_result` or `invalid_requests` naming the entry"),
        (status = 403, body = ErrorBody, description = "`not_claim_holder`"), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`claim_completed`, or `claim_expired` (its requests went back to pending)")))]
pub async fn complete_mission(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(claim_id): ApiPath<String>,
    ApiJson(req): ApiJson<CompleteRequest>,
) -> ApiResult<Json<CompletedClaim>> {
    Ok(Json(
        service::complete(app.missions_ctx(), &holder(&principal)?, &claim_id, req).await?,
    ))
}
