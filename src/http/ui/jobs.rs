//! The Jobs page: filters, pagination, auto-refresh while jobs are live, and a detail view with
//! retry and cancel (each asking for confirmation).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;

use super::{CsrfForm, Layout, check_form_csrf};
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
    page: Option<i64>,
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
    statuses: &'static [&'static str],
    job_types: Vec<String>,
    status: String,
    job_type: String,
    page: i64,
    pages: i64,
    total: i64,
    live: i64,
    error: Option<String>,
}

impl ListPage {
    /// Query string for another page with the same filters.
    fn page_link(&self, page: i64) -> String {
        let mut q = format!("?page={page}");
        if !self.status.is_empty() {
            q.push_str(&format!("&status={}", self.status));
        }
        if !self.job_type.is_empty() {
            q.push_str(&format!("&type={}", self.job_type));
        }
        q
    }
}

const PAGE_SIZE: i64 = 50;

async fn list(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Response {
    let mut page = ListPage {
        layout: Layout::new(&principal, "/jobs"),
        rows: Vec::new(),
        statuses: &STATUSES,
        job_types: Vec::new(),
        status: q.status.clone().unwrap_or_default(),
        job_type: q.job_type.clone().unwrap_or_default(),
        page: 1,
        pages: 1,
        total: 0,
        live: 0,
        error: None,
    };
    let params = PageParams::new(q.page, Some(PAGE_SIZE)).and_then(|p| {
        let filter = job_service::filter(q.status, q.job_type).map_err(ApiError::from)?;
        Ok((p, filter))
    });
    let (params, filter) = match params {
        Ok(v) => v,
        Err(e) => {
            page.error = Some(e.message);
            return page.into_response();
        }
    };
    let stats = job_service::stats(&app.users).await;
    let listed = job_service::list(&app.users, &filter, params.limit(), params.offset()).await;
    match (stats, listed) {
        (Ok(stats), Ok((items, total))) => {
            page.live = stats.live();
            page.job_types = stats.by_type.into_keys().collect();
            page.total = total;
            page.page = params.page;
            page.pages = ((total + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
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
    notice: Option<String>,
}

fn pretty(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| json.to_string())
}

async fn render_detail(
    app: &AppState,
    principal: &Principal,
    id: &str,
    notice: Option<String>,
) -> Response {
    let job = match job_service::get(&app.users, id).await {
        Ok(job) => job,
        Err(e) => return not_found_page(e, id),
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
        notice,
        job,
    }
    .into_response()
}

async fn detail(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    render_detail(&app, &principal, &id, None).await
}

/// Runs a state change from a form after the CSRF check, then shows the job with the outcome.
async fn act(
    app: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    form: &CsrfForm,
    id: &str,
    action: &str,
) -> Response {
    if let Err(e) = check_form_csrf(principal, headers, &form.csrf) {
        return e.into_response();
    }
    let now = app.clock.now_ms();
    let outcome = match action {
        "retry" => job_service::retry(&app.users, id, now).await,
        _ => job_service::cancel(&app.users, id, now).await,
    };
    match outcome {
        Ok(_) => Redirect::to(&format!("/jobs/{id}")).into_response(),
        Err(e) if e.is_conflict() => {
            render_detail(
                app,
                principal,
                id,
                Some(format!("Not done: {}.", e.message)),
            )
            .await
        }
        Err(e) => not_found_page(e, id),
    }
}

/// A job id that is no UUID names no job, as far as a page address goes.
fn not_found_page(e: service::Error, id: &str) -> Response {
    match e.kind {
        service::ErrorKind::Invalid | service::ErrorKind::NotFound => {
            ApiError::not_found(format!("no job {id}")).into_response()
        }
        _ => e.into_response(),
    }
}

async fn retry(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    act(&app, &principal, &headers, &form, &id, "retry").await
}

async fn cancel(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    act(&app, &principal, &headers, &form, &id, "cancel").await
}
