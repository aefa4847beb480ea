//! The Sync sessions page: statistics cards, filters, progress bars, and a detail view of a
//! session's records with cancel (asking for confirmation). Groups and mothers show by name,
//! linked; times are relative with the exact UTC time as tooltip, with run times.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;

use super::csrf::{CsrfForm, NoFields};
use super::flash::{self, Flash};
use super::list_filters::{ListFilters, Select, page_number, within_pages};
use super::times::{Moment, between};
use super::{Layout, page_error};
use crate::app::AppState;
use crate::auth::Principal;
use crate::domain::sync_sessions::{CATEGORIES, STATUSES, SYNC_TYPES};
use crate::http::extract::AuditActor;
use crate::http::pagination::PageParams;
use crate::service::audit;
use crate::service::sync_sessions as service;
use crate::store::sync_sessions::{Record, Session, Statistics};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sync-sessions", get(list))
        .route("/sync-sessions/{id}", get(detail))
        .route("/sync-sessions/{id}/cancel", post(cancel))
}

#[derive(Deserialize)]
struct ListQuery {
    sync_type: Option<String>,
    status: Option<String>,
    category: Option<String>,
    /// Read as text: a page that is no number is explained on the page.
    page: Option<String>,
}

struct Row {
    session: Session,
    started: Moment,
    /// From start to completion, or to now while running.
    ran: Option<String>,
    /// The session's pool group by name.
    group: Option<(i64, String)>,
    /// Progress in whole percent.
    percent: i64,
}

#[derive(Template, WebTemplate)]
#[template(path = "sync_sessions.html")]
struct ListPage {
    layout: Layout,
    stats: Statistics,
    rows: Vec<Row>,
    filters: ListFilters,
    total: i64,
    error: Option<String>,
}

const PAGE_SIZE: i64 = 50;

/// The filter form: type, status and category.
fn filters(q: &ListQuery) -> ListFilters {
    let options = |values: &[&str]| values.iter().map(|v| v.to_string()).collect();
    ListFilters::new(
        "/sync-sessions",
        vec![
            Select::new(
                "Type",
                "sync_type",
                options(&SYNC_TYPES),
                q.sync_type.as_deref(),
            ),
            Select::new("Status", "status", options(&STATUSES), q.status.as_deref()),
            Select::new(
                "Category",
                "category",
                options(&CATEGORIES),
                q.category.as_deref(),
            ),
        ],
    )
}

fn percent(progress: f64) -> i64 {
    (progress * 100.0).round() as i64
}

async fn list(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Response {
    let mut page = ListPage {
        layout: Layout::new(&principal, "/sync-sessions"),
        stats: Statistics::default(),
        rows: Vec::new(),
        filters: filters(&q),
        total: 0,
        error: None,
    };
    let number = page_number(q.page.as_deref());
    let filter = service::filter(q.sync_type, q.status, q.category).map_err(|e| e.message);
    let params = PageParams::new(number.clone().ok(), Some(PAGE_SIZE)).map_err(|e| e.message);
    let (filter, mut params) = match (filter, params) {
        (Ok(f), Ok(p)) => (f, p),
        (Err(e), _) | (_, Err(e)) => {
            page.error = Some(e);
            return page.into_response();
        }
    };
    page.error = number.err();
    let stats = service::statistics(&app).await;
    let mut listed = service::list(&app, &filter, params.limit(), params.offset()).await;
    if let Ok((_, total)) = &listed {
        let last = within_pages(params.page, *total, PAGE_SIZE);
        if last < params.page {
            params.page = last;
            listed = service::list(&app, &filter, params.limit(), params.offset()).await;
        }
    }
    match (stats, listed) {
        (Ok(stats), Ok((items, total))) => {
            page.stats = stats;
            page.total = total;
            page.filters.at_page(params.page, total, PAGE_SIZE);
            let now = app.clock.now_ms();
            let groups: Vec<i64> = items.iter().filter_map(|s| s.pool_group_id).collect();
            let names = crate::service::names::of(&app.pool, &[], &groups)
                .await
                .unwrap_or_default();
            page.rows = items
                .into_iter()
                .map(|session| Row {
                    started: Moment::new(session.started_at, now),
                    ran: between(
                        Some(session.started_at),
                        Some(session.completed_at.unwrap_or(now)),
                    ),
                    group: session.pool_group_id.map(|g| (g, names.group(g))),
                    percent: percent(session.progress),
                    session,
                })
                .collect();
        }
        (Err(e), _) | (_, Err(e)) => page.error = Some(e.message),
    }
    page.into_response()
}

struct RecordRow {
    record: Record,
    mother: String,
    started: Option<Moment>,
    /// From start to completion, or to now while running.
    ran: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "sync_session.html")]
struct DetailPage {
    layout: Layout,
    session: Session,
    group: Option<(i64, String)>,
    records: Vec<RecordRow>,
    started: Moment,
    completed: Option<Moment>,
    ran: Option<String>,
    percent: i64,
}

async fn render_detail(app: &AppState, principal: &Principal, id: &str) -> Response {
    let detail = match service::get(app, id).await {
        Ok(d) => d,
        Err(e) => return page_error(e),
    };
    let now = app.clock.now_ms();
    let mothers: Vec<i64> = detail.records.iter().map(|r| r.mother_id).collect();
    let groups: Vec<i64> = detail.session.pool_group_id.into_iter().collect();
    let names = crate::service::names::of(&app.pool, &mothers, &groups)
        .await
        .unwrap_or_default();
    let s = &detail.session;
    DetailPage {
        layout: Layout::new(principal, "/sync-sessions"),
        group: s.pool_group_id.map(|g| (g, names.group(g))),
        started: Moment::new(s.started_at, now),
        completed: Moment::maybe(s.completed_at, now),
        ran: between(Some(s.started_at), Some(s.completed_at.unwrap_or(now))),
        percent: percent(s.progress),
        records: detail
            .records
            .into_iter()
            .map(|record| RecordRow {
                mother: names.mother(record.mother_id),
                started: Moment::maybe(record.started_at, now),
                ran: match record.status.as_str() {
                    "running" => between(record.started_at, Some(now)),
                    _ => between(record.started_at, record.completed_at),
                },
                record,
            })
            .collect(),
        session: detail.session,
    }
    .into_response()
}

async fn detail(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    render_detail(&app, &principal, &id).await
}

/// Cancels the session, then redirects to it with the outcome as a flash message.
async fn cancel(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    Path(id): Path<String>,
    CsrfForm(NoFields {}): CsrfForm<NoFields>,
) -> Response {
    let flash = match service::cancel(&app, &id).await {
        Ok(c) => {
            let change = audit::more_changes::sync_session_cancel(&id, c.cancelled_jobs);
            audit::record(&app.users, &app.clock, &actor, change).await;
            Flash::done(format!(
                "Cancelled: {} pending job(s) will not run; running records finish on their own.",
                c.cancelled_jobs
            ))
        }
        Err(e) if e.is_conflict() => Flash::not_done(e.message),
        Err(e) => return page_error(e),
    };
    flash::redirect(&app, &format!("/sync-sessions/{id}"), flash)
}
