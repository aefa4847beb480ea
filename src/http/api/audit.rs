//! The audit log (users database): read-only. No route changes or removes a row.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::app::AppState;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::ApiQuery;
use crate::http::pagination::{Page, PageParams};
use crate::service::audit::{self as service, AuditQuery};
use crate::store::audit::AuditEntry;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditListQuery {
    /// Who: a username, `token:<name>` or `cli:<os user>` (exact).
    pub actor: Option<String>,
    /// What: an action such as `mother.create`, or a prefix ending in `*` (`mother.*`).
    pub action: Option<String>,
    /// A target type (`mother`) or `type:id` (`mother:7`).
    pub target: Option<String>,
    /// From this time on (inclusive): RFC 3339, a date (UTC) or milliseconds.
    pub from: Option<String>,
    /// Before this time (exclusive; a date includes that whole day).
    pub to: Option<String>,
    /// 1-based page number (default 1).
    pub page: Option<i64>,
    /// Items per page (default 50, at most 500).
    pub page_size: Option<i64>,
}

/// Lists audit rows, newest first: who changed what, when, from where, with a summary of the
/// change (secrets left out) and the row's place in the hash chain.
#[utoipa::path(get, path = "/api/admin/audit", tag = "users", params(AuditListQuery),
    responses(
        (status = 200, body = Page<AuditEntry>),
        (status = 400, body = ErrorBody, description = "a filter or page value is malformed; the message names it"),
        (status = 401, body = ErrorBody),
    ))]
pub async fn list_audit(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<AuditListQuery>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    let page = PageParams::new(q.page, q.page_size)?;
    let query = AuditQuery {
        actor: q.actor,
        action: q.action,
        target: q.target,
        from: q.from,
        to: q.to,
    }
    .check()?;
    let (items, total) =
        service::list_page(&app.users, &query, page.limit(), page.offset()).await?;
    Ok(Json(page.wrap(items, total)))
}
