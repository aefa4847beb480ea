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
use crate::error::ApiError;
use crate::http::api::jobs::job_filter;
use crate::http::pagination::PageParams;
use crate::store::StoreError;
use crate::store::jobs::{self as job_store, Job, JobSummary, STATUSES};

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
    let params = PageParams::new(q.page, Some(PAGE_SIZE))
        .and_then(|p| Ok((p, job_filter(q.status, q.job_type)?)));
    let (params, filter) = match params {
        Ok(v) => v,
        Err(e) => {
            page.error = Some(e.message);
            return page.into_response();
        }
    };
    let counts = job_store::counts(&app.users).await;
    let listed = job_store::list(&app.users, &filter, params.limit(), params.offset()).await;
    match (counts, listed) {
        (Ok(counts), Ok((items, total))) => {
            let mut types: Vec<String> = counts.iter().map(|(_, t, _)| t.clone()).collect();
            types.dedup();
            types.sort();
            types.dedup();
            page.job_types = types;
            page.live = counts
                .iter()
                .filter(|(s, _, _)| s == "pending" || s == "running")
                .map(|(_, _, n)| n)
                .sum();
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
        (Err(e), _) | (_, Err(e)) => page.error = Some(ApiError::from(e).message),
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
    if uuid::Uuid::parse_str(id).is_err() {
        return ApiError::not_found(format!("no job {id}")).into_response();
    }
    let job = match job_store::get(&app.users, id).await {
        Ok(job) => job,
        Err(StoreError::NotFound) => {
            return ApiError::not_found(format!("no job {id}")).into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
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
    if uuid::Uuid::parse_str(id).is_err() {
        return ApiError::not_found(format!("no job {id}")).into_response();
    }
    let now = app.clock.now_ms();
    let outcome = match action {
        "retry" => job_store::retry(&app.users, id, now)
            .await
            .map(|_| "Job queued again with a fresh attempt budget."),
        _ => job_store::cancel(&app.users, id, now).await.map(|job| {
            if job.status == "cancelled" {
                "Job cancelled."
            } else {
                "Cancellation requested; the job stops when its handler notices."
            }
        }),
    };
    match outcome {
        Ok(_) if action == "retry" => {
            if let Err(e) = job_store::notify_ready(&app.users).await {
                return ApiError::from(e).into_response();
            }
            Redirect::to(&format!("/jobs/{id}")).into_response()
        }
        Ok(_) => Redirect::to(&format!("/jobs/{id}")).into_response(),
        Err(StoreError::Conflict(why)) => {
            render_detail(app, principal, id, Some(format!("Not done: {why}."))).await
        }
        Err(e) => ApiError::from(e).into_response(),
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
