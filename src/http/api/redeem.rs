//! The public redeem API: anyone holding a code trades it for an invitation. No credentials; a
//! client address may try `redeem.per_hour` times an hour.

use axum::Json;
use axum::extract::State;

use crate::app::AppState;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, ClientAddr};
use crate::service::redeem::{self as service, RedeemRequest, Redeemed, Resent};

/// Redeems a code: the address is invited to a team with a free seat. Every code that cannot be
/// redeemed (unknown, used, expired, disabled) gets the same 400 `invalid_code`; the same address
/// redeeming its own used code again gets the same answer.
#[utoipa::path(post, path = "/api/redeem", tag = "users", request_body = RedeemRequest, security(()),
    responses((status = 200, body = Redeemed), (status = 400, body = ErrorBody, description = "`invalid_code` or `invalid_email`"),
        (status = 429, body = ErrorBody, description = "too many redeems from this address; `Retry-After` says when to try again"),
        (status = 503, body = ErrorBody, description = "`no_seat_available` or `invite_failed`: the code was not used")))]
pub async fn redeem(
    State(app): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ApiJson(req): ApiJson<RedeemRequest>,
) -> ApiResult<Json<Redeemed>> {
    Ok(Json(service::redeem(&app, &addr, req).await?))
}

/// Sends the invitation of a redeemed code again, to the address that redeemed it; any other
/// code or address gets the same 400 `invalid_code`. `redeem.resend_per_hour` per client address.
#[utoipa::path(post, path = "/api/redeem/resend", tag = "users", request_body = RedeemRequest, security(()),
    responses((status = 200, body = Resent), (status = 400, body = ErrorBody, description = "`invalid_code` or `invalid_email`"),
        (status = 422, body = ErrorBody, description = "`team_gone`: the team of the invitation no longer exists"),
        (status = 429, body = ErrorBody, description = "too many resends from this address; `Retry-After` says when to try again"),
        (status = 503, body = ErrorBody, description = "`invite_failed`")))]
pub async fn resend(
    State(app): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ApiJson(req): ApiJson<RedeemRequest>,
) -> ApiResult<Json<Resent>> {
    Ok(Json(service::resend(&app, &addr, req).await?))
}
