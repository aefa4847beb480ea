//! The simulated provider: make an organisation and get its credential (only while
//! `providers.sim.enabled` is on; otherwise 404, as if the route did not exist).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::app::AppState;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, AuditActor};
use crate::service::audit;
use crate::service::sim_orgs::{self as service, AddOrgRequest, AddOrgResponse};

/// Makes an organisation of the simulated provider with one team of `seats` seats, its owner and
/// `members`, and returns the new `credential` (once; import it as a `sim` mother). 404 while the
/// simulator is disabled (`providers.sim.enabled`, off by default in production).
#[utoipa::path(post, path = "/api/admin/sim/orgs", tag = "pool", request_body = AddOrgRequest,
    responses((status = 201, body = AddOrgResponse, description = "organisation made"),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "the simulator is disabled"),
        (status = 503, body = ErrorBody)))]
pub async fn add_org(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    ApiJson(req): ApiJson<AddOrgRequest>,
) -> ApiResult<(StatusCode, Json<AddOrgResponse>)> {
    let seats = req.seats;
    let out = service::add_org(app.providers.sim.clone(), app.config.sim_enabled(), req).await?;
    let change = audit::more_changes::sim_org_add(&out, seats);
    audit::record(&app.users, &app.clock, &actor, change).await;
    Ok((StatusCode::CREATED, Json(out)))
}
