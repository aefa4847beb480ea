//! The Jobs page: filters, pagination, auto-refresh while jobs are live, and a detail view with
//! retry and cancel (each asking for confirmation, each answered by a redirect to the job with a
//! flash message).

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
use super::{Layout, not_found};
use crate::app::AppState;
use crate::auth::Principal;
use crate::clock::rfc3339;
use crate::http::error::ApiError;
use crate::http::pagination::PageParams;
use crate::service::{self, jobs as job_service};
use crate::store::jobs::{Job, JobSummary, STATUSES};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/jobs", get(list))
        .route("/jobs/{id}", get(detail))
        .route("/jobs/{id}/retry", post(retry))
        .route("/jobs/{id}/cancel", post(cancel))
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    #[serde(rename = "type")]
    job_type: Option<String>,
    /// Read as text: a page that is no number is explained on the page.
    page: Option<String>,
}

/// A job row as the page shows it.
struct Row {
    job: JobSummary,
    created: String,
    finished: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "jobs.html")]
struct ListPage {
    layout: Layout,
    rows: Vec<Row>,
    filters: ListFilters,
    total: i64,
    live: i64,
    error: Option<String>,
}

const PAGE_SIZE: i64 = 50;

/// The filter form: status, and the job types that exist.
fn filters(q: &ListQuery, job_types: Vec<String>) -> ListFilters {
    let statuses = STATUSES.iter().map(|s| s.to_string()).collect();
    ListFilters::new(
        "/jobs",
        vec![
            Select::new("Status", "status", statuses, q.status.as_deref()),
            Select::new("Type", "type", job_types, q.job_type.as_deref()),
        ],
    )
}

async fn list(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Response {
    let mut page = ListPage {
        layout: Layout::new(&principal, "/jobs"),
        rows: Vec::new(),
        filters: filters(&q, Vec::new()),
        total: 0,
        live: 0,
        error: None,
    };
    let number = page_number(q.page.as_deref());
    let params = PageParams::new(number.clone().ok(), Some(PAGE_SIZE)).and_then(|p| {
        let filter =
            job_service::filter(q.status.clone(), q.job_type.clone()).map_err(ApiError::from)?;
        Ok((p, filter))
    });
    let (mut params, filter) = match params {
        Ok(v) => v,
        Err(e) => {
            page.error = Some(e.message);
            return page.into_response();
        }
    };
    page.error = number.err();
    let stats = job_service::stats(&app.users).await;
    let mut listed = job_service::list(&app.users, &filter, params.limit(), params.offset()).await;
    if let Ok((_, total)) = &listed {
        let last = within_pages(params.page, *total, PAGE_SIZE);
        if last < params.page {
            params.page = last;
            listed = job_service::list(&app.users, &filter, params.limit(), params.offset()).await;
        }
    }
    match (stats, listed) {
        (Ok(stats), Ok((items, total))) => {
            page.live = stats.live();
            page.filters = filters(&q, stats.by_type.into_keys().collect());
            page.filters.at_page(params.page, total, PAGE_SIZE);
            page.total = total;
            page.rows = items
                .into_iter()
                .map(|job| Row {
                    created: rfc3339(job.created_at),
                    finished: job.finished_at.map(rfc3339).unwrap_or_default(),
                    job,
                })
                .collect();
        }
        (Err(e), _) | (_, Err(e)) => page.error = Some(e.message),
    }
    page.into_response()
}

#[derive(Template, WebTemplate)]
#[template(path = "job.html")]
struct DetailPage {
    layout: Layout,
    job: Job,
    payload: String,
    result: String,
    times: Vec<(&'static str, String)>,
}

fn pretty(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| json.to_string())
}

async fn render_detail(app: &AppState, principal: &Principal, id: &str) -> Response {
    let job = match job_service::get(&app.users, id).await {
        Ok(job) => job,
        Err(e) => return not_found_page(e),
    };
    let opt = |t: Option<i64>| t.map(rfc3339).unwrap_or_else(|| "-".into());
    let times = vec![
        ("Created", rfc3339(job.created_at)),
        ("Run at", rfc3339(job.run_at)),
        ("Started", opt(job.started_at)),
        ("Heartbeat", opt(job.heartbeat_at)),
        ("Locked until", opt(job.locked_until)),
        ("Finished", opt(job.finished_at)),
        ("Updated", rfc3339(job.updated_at)),
    ];
    DetailPage {
        layout: Layout::new(principal, "/jobs"),
        payload: pretty(&job.payload),
        result: job.result.as_deref().map(pretty).unwrap_or_default(),
        times,
        job,
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

/// What a job's page can ask for.
#[derive(Clone, Copy)]
enum Action {
    Retry,
    Cancel,
}

/// Runs a state change (its form already passed the CSRF check), then redirects to the job with
/// the outcome as a flash message.
async fn act(app: &AppState, id: &str, action: Action) -> Response {
    let now = app.clock.now_ms();
    let outcome = match action {
        Action::Retry => job_service::retry(&app.pool, &app.users, id, now).await,
        Action::Cancel => job_service::cancel(&app.pool, &app.users, id, now).await,
    };
    let flash = match (action, outcome) {
        (Action::Retry, Ok(_)) => Flash::done("Queued again with a fresh attempt budget."),
        (Action::Cancel, Ok(job)) if job.status == "cancelled" => Flash::done("Cancelled."),
        (Action::Cancel, Ok(_)) => {
            Flash::done("Cancel requested: the job stops within seconds and ends cancelled.")
        }
        (_, Err(e)) if e.is_conflict() => Flash::not_done(e.message),
        (_, Err(e)) => return not_found_page(e),
    };
    flash::redirect(app, &format!("/jobs/{id}"), flash)
}

/// A job id that is no UUID names no job, as far as a page address goes.
fn not_found_page(e: service::Error) -> Response {
    match e.kind {
        service::ErrorKind::Invalid | service::ErrorKind::NotFound => not_found(),
        _ => e.into_response(),
    }
}

async fn retry(
    State(app): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(NoFields {}): CsrfForm<NoFields>,
) -> Response {
    act(&app, &id, Action::Retry).await
}

async fn cancel(
    State(app): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(NoFields {}): CsrfForm<NoFields>,
) -> Response {
    act(&app, &id, Action::Cancel).await
}
