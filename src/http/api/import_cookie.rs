//! Importing a mother from a provider credential.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};

use crate::app::AppState;
use crate::auth::Principal;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, AuditActor};
use crate::service::audit;
use crate::service::import_cookie::{self as service, ImportCookieRequest, ImportCookieResponse};

/// Asks the provider whose credential `cookie` is, then creates that mother (named after the
/// provider's organisation) or gives the existing one the new credential. In `pool` mode the
/// mother joins `pool_group_id` and her sync is queued (`job_id`, `session_id`). A credential the
/// provider rejects is a 422 `credential_rejected` with the provider's reason.
#[utoipa::path(post, path = "/api/admin/import-cookie", tag = "pool", request_body = ImportCookieRequest,
    responses((status = 201, body = ImportCookieResponse, description = "mother created"),
        (status = 200, body = ImportCookieResponse, description = "existing mother updated"),
        (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "a mother of that name exists with another provider or provider_config (`provider_mismatch`)"),
        (status = 422, body = ErrorBody, description = "the provider rejected the credential"),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn import_cookie(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    AuditActor(actor): AuditActor,
    ApiJson(req): ApiJson<ImportCookieRequest>,
) -> ApiResult<(StatusCode, Json<ImportCookieResponse>)> {
    let out = service::import_cookie(&app, req, &principal.display_name()).await?;
    if let Some(job) = &out.job_id {
        audit::mark_jobs(&app.users, &actor, std::slice::from_ref(job)).await;
    }
    let change = audit::more_changes::mother_credential_import(&out);
    audit::record(&app.users, &app.clock, &actor, change).await;
    let status = if out.updated {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(out)))
}
