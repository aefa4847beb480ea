//! The Users page: the invites redeems sent, with filters (status, address, mother) and a pager,
//! and bulk Resend / Cancel / Remove of the ticked rows. A bulk button first shows a confirmation
//! page (a plain form, so it works without JavaScript); confirming queues one job through
//! `service::invites::bulk`, like `POST /api/admin/invites/{action}`, and answers 303 to the
//! job's page with a flash naming the job.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;

use super::Layout;
use super::csrf::CsrfForm;
use super::flash::{self, Flash};
use super::list_filters::{ListFilters, Select, page_number, within_pages};
use super::times::Moment;
use crate::app::AppState;
use crate::auth::Principal;
use crate::http::error::ApiError;
use crate::http::extract::AuditActor;
use crate::service::audit;
use crate::service::invites::{self as service, BulkAction, BulkRequest};
use crate::store::invites::Invite;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/invites", get(list))
        .route("/invites/bulk", post(bulk))
}

const PAGE_SIZE: i64 = 50;

#[derive(Deserialize, Default)]
struct ListQuery {
    status: Option<String>,
    email: Option<String>,
    mother_id: Option<String>,
    page: Option<String>,
}

struct Row {
    invite: Invite,
    updated: Moment,
}

#[derive(Template, WebTemplate)]
#[template(path = "invites.html")]
struct InvitesPage {
    layout: Layout,
    rows: Vec<Row>,
    filters: ListFilters,
    total: i64,
    error: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "invites_confirm.html")]
struct ConfirmPage {
    layout: Layout,
    action: &'static str,
    /// `Resend`, `Cancel` or `Remove`.
    verb: &'static str,
    /// What the action does, in a sentence.
    effect: &'static str,
    ids: Vec<i64>,
    /// The chosen invites still on record (at most a page of them shown).
    rows: Vec<Invite>,
}

fn filters(q: &ListQuery, mothers: Vec<String>) -> ListFilters {
    let statuses = service::STATUSES.iter().map(|s| s.to_string()).collect();
    ListFilters::new(
        "/invites",
        vec![
            Select::new("Status", "status", statuses, q.status.as_deref()),
            Select::new("Mother", "mother_id", mothers, q.mother_id.as_deref()),
        ],
    )
    .with_search("Email", "email", q.email.as_deref())
}

async fn list(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Response {
    let mut page = InvitesPage {
        layout: Layout::new(&principal, "/invites"),
        rows: Vec::new(),
        filters: filters(&q, Vec::new()),
        total: 0,
        error: None,
    };
    let outcome = async {
        let err = |e: crate::service::Error| ApiError::from(e).message;
        let mothers = service::mother_ids(&app)
            .await
            .map_err(err)?
            .into_iter()
            .map(|id| id.to_string())
            .collect();
        page.filters = filters(&q, mothers);
        let mother_id = match q.mother_id.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(m) => Some(
                m.parse::<i64>()
                    .map_err(|_| "mother_id must be a mother's id".to_string())?,
            ),
        };
        let filter = service::filter(q.status.clone(), q.email.clone(), mother_id).map_err(err)?;
        // A page that is no number is explained above the first page.
        let asked = page_number(q.page.as_deref()).unwrap_or_else(|message| {
            page.error = Some(message);
            1
        });
        let (_, total) = service::list(&app, &filter, 0, 0).await.map_err(err)?;
        let number = within_pages(asked, total, PAGE_SIZE);
        let (items, total) = service::list(&app, &filter, PAGE_SIZE, (number - 1) * PAGE_SIZE)
            .await
            .map_err(err)?;
        page.filters.at_page(number, total, PAGE_SIZE);
        page.total = total;
        let now = app.clock.now_ms();
        page.rows = items
            .into_iter()
            .map(|invite| Row {
                updated: Moment::new(invite.updated_at, now),
                invite,
            })
            .collect();
        Ok::<_, String>(())
    }
    .await;
    let status = match outcome {
        Ok(()) => StatusCode::OK,
        Err(message) => {
            page.error = Some(message);
            StatusCode::BAD_REQUEST
        }
    };
    (status, page).into_response()
}

fn wording(action: BulkAction) -> (&'static str, &'static str) {
    match action {
        BulkAction::Resend => (
            "Resend",
            "The provider invites each pending or sent address again; other invites are skipped.",
        ),
        BulkAction::Cancel => (
            "Cancel",
            "Each pending or sent invite is withdrawn at the provider and its seat freed; an \
             address that already joined is left alone.",
        ),
        BulkAction::Remove => (
            "Remove",
            "Each invitee is removed from the team at the provider, whether or not they joined, \
             and the seat is freed.",
        ),
    }
}

/// The bulk form: `action`, the ticked `ids` (repeated), and `confirm=yes` from the confirmation
/// page. Without `confirm` it shows that page; with it, it queues the job.
async fn bulk(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    AuditActor(actor): AuditActor,
    CsrfForm(fields): CsrfForm<Vec<(String, String)>>,
) -> Response {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(action) = field("action").and_then(BulkAction::parse) else {
        return flash::redirect(
            &app,
            "/invites",
            Flash::not_done("choose Resend, Cancel or Remove"),
        );
    };
    let mut ids = Vec::new();
    for (_, v) in fields.iter().filter(|(k, _)| k == "ids") {
        match v.trim().parse::<i64>() {
            Ok(id) => ids.push(id),
            Err(_) => {
                return flash::redirect(
                    &app,
                    "/invites",
                    Flash::not_done("the chosen invites are not invite ids"),
                );
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return flash::redirect(
            &app,
            "/invites",
            Flash::not_done("tick at least one invite first"),
        );
    }
    if field("confirm") != Some("yes") {
        let (verb, effect) = wording(action);
        let mut rows = Vec::new();
        for &id in ids.iter().take(PAGE_SIZE as usize) {
            match service::get(&app, id).await {
                Ok(Some(i)) => rows.push(i),
                Ok(None) => {}
                Err(e) => return ApiError::from(e).into_response(),
            }
        }
        let page = ConfirmPage {
            layout: Layout::new(&principal, "/invites"),
            action: action.as_str(),
            verb,
            effect,
            ids,
            rows,
        };
        return page.into_response();
    }
    match service::bulk(&app, action, BulkRequest { ids: ids.clone() }).await {
        Ok(q) => {
            audit::mark_jobs(&app.users, &actor, std::slice::from_ref(&q.job_id)).await;
            let change = audit::more_changes::invites_bulk(&q, &ids);
            audit::record(&app.users, &app.clock, &actor, change).await;
            flash::redirect(
                &app,
                &format!("/jobs/{}", q.job_id),
                Flash::JobQueued {
                    job_id: q.job_id,
                    job_type: q.job_type,
                    count: q.count,
                },
            )
        }
        Err(e) => flash::redirect(&app, "/invites", Flash::not_done(e.message)),
    }
}
