//! The Sync sessions page: statistics cards, filters, progress bars, and a detail view of a
//! session's records with cancel (asking for confirmation).

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
use super::{Layout, page_error};
use crate::app::AppState;
use crate::auth::Principal;
use crate::clock::rfc3339;
use crate::domain::sync_sessions::{CATEGORIES, STATUSES, SYNC_TYPES};
use crate::http::pagination::PageParams;
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
    started: String,
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
            page.rows = items
                .into_iter()
                .map(|session| Row {
                    started: rfc3339(session.started_at),
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
    started: String,
    completed: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "sync_session.html")]
struct DetailPage {
    layout: Layout,
    session: Session,
    records: Vec<RecordRow>,
    started: String,
    completed: String,
    percent: i64,
}

async fn render_detail(app: &AppState, principal: &Principal, id: &str) -> Response {
    let detail = match service::get(app, id).await {
        Ok(d) => d,
        Err(e) => return page_error(e),
    };
    let opt = |t: Option<i64>| t.map(rfc3339).unwrap_or_else(|| "-".into());
    DetailPage {
        layout: Layout::new(principal, "/sync-sessions"),
        started: rfc3339(detail.session.started_at),
        completed: opt(detail.session.completed_at),
        percent: percent(detail.session.progress),
        records: detail
            .records
            .into_iter()
            .map(|record| RecordRow {
                started: opt(record.started_at),
                completed: opt(record.completed_at),
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
    Path(id): Path<String>,
    CsrfForm(NoFields {}): CsrfForm<NoFields>,
) -> Response {
    let flash = match service::cancel(&app, &id).await {
        Ok(c) => Flash::done(format!(
            "Cancelled: {} pending job(s) will not run; running records finish on their own.",
            c.cancelled_jobs
        )),
        Err(e) if e.is_conflict() => Flash::not_done(e.message),
        Err(e) => return page_error(e),
    };
    flash::redirect(&app, &format!("/sync-sessions/{id}"), flash)
}
