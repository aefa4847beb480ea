//! The worker lease API (pool domain): acquire, renew and release leases of credential accounts,
//! with a bearer token of scope `worker`. The token is the lease's holder.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};

use crate::app::AppState;
use crate::auth::Principal;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, ApiPath};
use crate::service::leasing::{
    self as service, AcquireRequest, Holder, LeaseGrant, ReleaseRequest, RenewRequest,
};
use crate::store::leases::Lease;

pub(super) fn holder(principal: &Principal) -> ApiResult<Holder> {
    match principal {
        Principal::Token { id, .. } => Ok(Holder { token_id: *id }),
        Principal::Session { .. } => Err(ApiError::forbidden(
            "insufficient_scope",
            "this route needs a token with scope worker",
        )),
    }
}

/// Leases the available account of a pool used least recently (never used first, then fewest
/// uses). 503 `no_account_available` with `Retry-After` when none is free.
#[utoipa::path(post, path = "/api/pool/leases", tag = "pool", request_body = AcquireRequest,
    responses((status = 201, body = LeaseGrant), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "not a worker token"),
        (status = 503, body = ErrorBody, description = "`no_account_available`; `Retry-After` says when the next account returns")))]
pub async fn acquire_lease(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(req): ApiJson<AcquireRequest>,
) -> ApiResult<(StatusCode, Json<LeaseGrant>)> {
    let grant = service::acquire(app.leasing_ctx(), &holder(&principal)?, req).await?;
    Ok((StatusCode::CREATED, Json(grant)))
}

/// Extends a lease to now + `ttl_seconds` (capped by `leases.max_ttl_seconds`); holder only.
#[utoipa::path(post, path = "/api/pool/leases/{id}/renew", tag = "pool", request_body = RenewRequest,
    params(("id" = String, Path, description = "lease id (UUID)")),
    responses((status = 200, body = Lease), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "`not_lease_holder`"), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`lease_released` or `lease_expired`")))]
pub async fn renew_lease(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<RenewRequest>,
) -> ApiResult<Json<Lease>> {
    Ok(Json(
        service::renew(app.leasing_ctx(), &holder(&principal)?, &id, req).await?,
    ))
}

/// Ends a lease with the worker's result (`success`, `no_slot`, `login_fail`, `error`, `banned`);
/// holder only, once.
#[utoipa::path(post, path = "/api/pool/leases/{id}/release", tag = "pool", request_body = ReleaseRequest,
    params(("id" = String, Path, description = "lease id (UUID)")),
    responses((status = 200, body = Lease), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "`not_lease_holder`"), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`lease_released` or `lease_expired`")))]
pub async fn release_lease(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ReleaseRequest>,
) -> ApiResult<Json<Lease>> {
    Ok(Json(
        service::release(app.leasing_ctx(), &holder(&principal)?, &id, req).await?,
    ))
}
