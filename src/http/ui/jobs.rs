//! The Jobs page: counts by status and by type, filters, pagination, updates in place (the page's
//! script polls `/jobs/live`, an HTML fragment of the counts, table and pager, and swaps them in;
//! without script a Refresh link reloads), bulk retry and cancel of the checked jobs, "retry all failed of this type" behind a
//! confirmation page (no script needed), and a detail view with retry and cancel. Every form
//! answers with a redirect and a flash message. Jobs show what they are about by name (mothers,
//! groups, sync sessions their payload names, linked), times relative with the exact UTC time as
//! tooltip, and how long they waited and ran.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;

use std::collections::BTreeMap;

use super::csrf::{CsrfForm, NoFields};
use super::flash::{self, Flash};
use super::list_filters::{ListFilters, Select, page_number, page_query, within_pages};
use super::times::{Moment, between, duration};
use super::{Layout, not_found};
use crate::app::AppState;
use crate::auth::Principal;
use crate::http::error::ApiError;
use crate::http::extract::AuditActor;
use crate::http::pagination::PageParams;
use crate::service::audit::{self, Actor, changes};
use crate::service::jobs::{BulkAction, BulkOutcome, MAX_BULK, Subject};
use crate::service::{self, jobs as job_service};
use crate::store::jobs::{Job, JobSummary, STATUSES};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/jobs", get(list))
        .route("/jobs/live", get(live))
        .route("/jobs/bulk", post(bulk))
        .route(
            "/jobs/retry-failed",
            get(retry_failed_page).post(retry_failed),
        )
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
    created: Moment,
    finished: Option<Moment>,
    /// From due to claimed (or to now while pending).
    queued: Option<String>,
    /// From claimed to finished (or to now while running).
    ran: Option<String>,
    subjects: Vec<Subject>,
}

/// Time in queue and run time of a job at `now`.
fn durations(job: &JobSummary, now: i64) -> (Option<String>, Option<String>) {
    let live = matches!(job.status.as_str(), "pending" | "running");
    let queued = match (job.status.as_str(), job.started_at) {
        ("pending", _) if job.run_at <= now => Some(duration(now - job.run_at)),
        ("pending", _) => None,
        (_, Some(started)) => Some(duration((started - job.run_at).max(0))),
        _ => None,
    };
    let ran = match (job.status.as_str(), job.started_at) {
        ("running", Some(started)) => Some(duration(now - started)),
        (_, started) if !live => between(started, job.finished_at),
        _ => None,
    };
    (queued, ran)
}

/// A count at the top of the page, linked to its filter.
struct StatusCount {
    status: &'static str,
    count: i64,
    href: String,
    chosen: bool,
}

/// One job type with its counts per status, and whether some failed.
struct TypeCount {
    job_type: String,
    counts: BTreeMap<String, i64>,
    failed: i64,
}

impl TypeCount {
    fn count(&self, status: &str) -> i64 {
        self.counts.get(status).copied().unwrap_or(0)
    }
}

/// What the page and its live fragment share: the counts, the table and the pager of one query.
struct Listing {
    rows: Vec<Row>,
    filters: ListFilters,
    total: i64,
    live: i64,
    counts: Vec<StatusCount>,
    /// This list again, for the Refresh link (it keeps the filters and the page).
    refresh: String,
    error: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "jobs.html")]
struct ListPage {
    layout: Layout,
    list: Listing,
    types: Vec<TypeCount>,
    /// The type filter, when one is chosen, and its failed jobs.
    chosen_type: Option<(String, i64)>,
    status: String,
    job_type: String,
    max_bulk: usize,
}

/// The parts of the Jobs page that change while jobs run, with the same element ids as on the
/// page: the script swaps each in by id.
#[derive(Template, WebTemplate)]
#[template(path = "jobs_live.html")]
struct LiveFragment {
    list: Listing,
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
    let (list, stats) = listing(&app, &q).await;
    let filter_type = q.job_type.clone().filter(|t| !t.is_empty());
    let types = stats.map(|s| s.by_type).unwrap_or_default();
    ListPage {
        layout: Layout::new(&principal, "/jobs"),
        chosen_type: filter_type.map(|t| {
            let failed = (types.get(&t))
                .and_then(|c| c.get("failed"))
                .copied()
                .unwrap_or(0);
            (t, failed)
        }),
        types: types
            .into_iter()
            .map(|(job_type, counts)| TypeCount {
                job_type,
                failed: counts.get("failed").copied().unwrap_or(0),
                counts,
            })
            .collect(),
        status: q.status.clone().unwrap_or_default(),
        job_type: q.job_type.clone().unwrap_or_default(),
        max_bulk: MAX_BULK,
        list,
    }
    .into_response()
}

/// The live fragment the page's script polls: the same query as the page, the same parts.
async fn live(State(app): State<AppState>, Query(q): Query<ListQuery>) -> Response {
    let (list, _) = listing(&app, &q).await;
    LiveFragment { list }.into_response()
}

/// The counts, table and pager of a query, and the figures per type (when they could be read).
async fn listing(app: &AppState, q: &ListQuery) -> (Listing, Option<job_service::JobStats>) {
    let mut list = Listing {
        rows: Vec::new(),
        filters: filters(q, Vec::new()),
        total: 0,
        live: 0,
        counts: Vec::new(),
        refresh: String::new(),
        error: None,
    };
    let now = app.clock.now_ms();
    let number = page_number(q.page.as_deref());
    let params = PageParams::new(number.clone().ok(), Some(PAGE_SIZE)).and_then(|p| {
        let filter =
            job_service::filter(q.status.clone(), q.job_type.clone()).map_err(ApiError::from)?;
        Ok((p, filter))
    });
    let (mut params, filter) = match params {
        Ok(v) => v,
        Err(e) => {
            list.error = Some(e.message);
            list.refresh = list.filters.link(1);
            return (list, None);
        }
    };
    list.error = number.err();
    let stats = job_service::stats(&app.users).await;
    let mut listed = job_service::list(&app.users, &filter, params.limit(), params.offset()).await;
    if let Ok((_, total)) = &listed {
        let last = within_pages(params.page, *total, PAGE_SIZE);
        if last < params.page {
            params.page = last;
            listed = job_service::list(&app.users, &filter, params.limit(), params.offset()).await;
        }
    }
    let stats = match (stats, listed) {
        (Ok(stats), Ok((items, total))) => {
            list.live = stats.live();
            list.counts = STATUSES
                .iter()
                .map(|s| StatusCount {
                    status: s,
                    count: stats.by_status.get(*s).copied().unwrap_or(0),
                    href: format!(
                        "/jobs{}",
                        page_query(
                            1,
                            [
                                ("status", *s),
                                ("type", q.job_type.as_deref().unwrap_or(""))
                            ]
                        )
                    ),
                    chosen: q.status.as_deref() == Some(s),
                })
                .collect();
            list.filters = filters(q, stats.by_type.keys().cloned().collect());
            list.filters.at_page(params.page, total, PAGE_SIZE);
            list.total = total;
            let ids: Vec<String> = items.iter().map(|j| j.id.clone()).collect();
            let mut subjects = job_service::subjects(&app.pool, &app.users, &ids)
                .await
                .unwrap_or_default();
            list.rows = items
                .into_iter()
                .map(|job| {
                    let (queued, ran) = durations(&job, now);
                    Row {
                        created: Moment::new(job.created_at, now),
                        finished: Moment::maybe(job.finished_at, now),
                        queued,
                        ran,
                        subjects: subjects.remove(&job.id).unwrap_or_default(),
                        job,
                    }
                })
                .collect();
            Some(stats)
        }
        (Err(e), _) | (_, Err(e)) => {
            list.error = Some(e.message);
            None
        }
    };
    list.refresh = list.filters.link(list.filters.page);
    (list, stats)
}

#[derive(Template, WebTemplate)]
#[template(path = "job.html")]
struct DetailPage {
    layout: Layout,
    job: Job,
    payload: String,
    result: String,
    times: Vec<(&'static str, Option<Moment>)>,
    queued: Option<String>,
    ran: Option<String>,
    subjects: Vec<Subject>,
    /// Who queued it (an admin, a token, the CLI), when a person or token did.
    queued_by: Option<String>,
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
    let now = app.clock.now_ms();
    let at = |t: i64| Some(Moment::new(t, now));
    let times = vec![
        ("Created", at(job.created_at)),
        ("Run at", at(job.run_at)),
        ("Started", Moment::maybe(job.started_at, now)),
        ("Heartbeat", Moment::maybe(job.heartbeat_at, now)),
        ("Locked until", Moment::maybe(job.locked_until, now)),
        ("Finished", Moment::maybe(job.finished_at, now)),
        ("Updated", at(job.updated_at)),
    ];
    let summary = JobSummary {
        id: job.id.clone(),
        job_type: job.job_type.clone(),
        status: job.status.clone(),
        attempts: job.attempts,
        max_attempts: job.max_attempts,
        priority: job.priority,
        run_at: job.run_at,
        cancel_requested: job.cancel_requested,
        last_error: None,
        started_at: job.started_at,
        created_at: job.created_at,
        updated_at: job.updated_at,
        finished_at: job.finished_at,
    };
    let (queued, ran) = durations(&summary, now);
    let subjects = job_service::subjects(&app.pool, &app.users, std::slice::from_ref(&job.id))
        .await
        .map(|mut s| s.remove(&job.id).unwrap_or_default())
        .unwrap_or_default();
    let queued_by = audit::job_actor(&app.users, &job.id)
        .await
        .unwrap_or_default();
    DetailPage {
        layout: Layout::new(principal, "/jobs"),
        queued,
        ran,
        subjects,
        queued_by,
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
async fn act(app: &AppState, actor: &Actor, id: &str, action: Action) -> Response {
    let now = app.clock.now_ms();
    let outcome = match action {
        Action::Retry => job_service::retry(&app.pool, &app.users, id, now).await,
        Action::Cancel => job_service::cancel(&app.pool, &app.users, id, now).await,
    };
    if let Ok(job) = &outcome {
        audit::record(&app.users, &app.clock, actor, job_change(action, job)).await;
    }
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

/// The audit row of a retry or cancel, the same as the API's.
fn job_change(action: Action, job: &crate::store::jobs::Job) -> audit::Change {
    match action {
        Action::Retry => changes::job_retry(job),
        Action::Cancel => changes::job_cancel(job),
    }
}

async fn retry(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    Path(id): Path<String>,
    CsrfForm(NoFields {}): CsrfForm<NoFields>,
) -> Response {
    act(&app, &actor, &id, Action::Retry).await
}

async fn cancel(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    Path(id): Path<String>,
    CsrfForm(NoFields {}): CsrfForm<NoFields>,
) -> Response {
    act(&app, &actor, &id, Action::Cancel).await
}

/// Where a bulk form returns to: the list with the filters it was posted from.
fn list_link(status: &str, job_type: &str) -> String {
    format!(
        "/jobs{}",
        page_query(1, [("status", status), ("type", job_type)])
    )
}

/// The flash of a bulk action: how many jobs it changed, and the first refusals.
fn bulk_flash(verb: &str, outcome: &BulkOutcome) -> Flash {
    let mut text = format!("{verb} {} job(s).", outcome.done.len());
    if !outcome.refused.is_empty() {
        let first: Vec<String> = outcome
            .refused
            .iter()
            .take(3)
            .map(|(id, why)| format!("{}…: {why}", &id[..id.len().min(8)]))
            .collect();
        text.push_str(&format!(
            " {} left as they were ({}).",
            outcome.refused.len(),
            first.join("; ")
        ));
    }
    if outcome.done.is_empty() {
        Flash::not_done(text)
    } else {
        Flash::done(text)
    }
}

/// The bulk form: the checked jobs (`id`, repeated), the button pressed (`action`), and the list's
/// filters to return to. Read as pairs: a plain form struct cannot hold a repeated field.
async fn bulk(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    CsrfForm(fields): CsrfForm<Vec<(String, String)>>,
) -> Response {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    let back = list_link(field("status"), field("type"));
    let ids: Vec<String> = fields
        .iter()
        .filter(|(k, _)| k == "id")
        .map(|(_, v)| v.clone())
        .collect();
    let (action, verb) = match field("action") {
        "retry" => (BulkAction::Retry, "Retried"),
        "cancel" => (BulkAction::Cancel, "Cancelled"),
        _ => {
            return flash::redirect(
                &app,
                &back,
                Flash::not_done("choose Retry or Cancel for the checked jobs"),
            );
        }
    };
    let now = app.clock.now_ms();
    let flash = match job_service::bulk(&app.pool, &app.users, action, &ids, now).await {
        Ok(outcome) => {
            // One audit row per job changed, as a retry or cancel of each would leave.
            for id in &outcome.done {
                if let Ok(job) = job_service::get(&app.users, id).await {
                    let change = match action {
                        BulkAction::Retry => changes::job_retry(&job),
                        BulkAction::Cancel => changes::job_cancel(&job),
                    };
                    audit::record(&app.users, &app.clock, &actor, change).await;
                }
            }
            bulk_flash(verb, &outcome)
        }
        Err(e) if e.kind == service::ErrorKind::Invalid => Flash::not_done(e.message),
        Err(e) => return e.into_response(),
    };
    flash::redirect(&app, &back, flash)
}

#[derive(Deserialize)]
struct TypeQuery {
    #[serde(rename = "type")]
    job_type: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "jobs_retry_failed.html")]
struct RetryFailedPage {
    layout: Layout,
    job_type: String,
    failed: i64,
    max: usize,
}

/// The confirmation step of "retry all failed of this type": says how many jobs it would retry
/// and asks with a form of its own (so it needs no script).
async fn retry_failed_page(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<TypeQuery>,
) -> Response {
    let job_type = q.job_type.unwrap_or_default();
    match job_service::failed_of_type(&app.users, &job_type).await {
        Ok(failed) => RetryFailedPage {
            layout: Layout::new(&principal, "/jobs"),
            job_type,
            failed,
            max: job_service::MAX_RETRY_ALL,
        }
        .into_response(),
        Err(e) if e.kind == service::ErrorKind::Invalid => {
            flash::redirect(&app, "/jobs", Flash::not_done(e.message))
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct RetryFailedForm {
    #[serde(rename = "type", default)]
    job_type: String,
}

async fn retry_failed(
    State(app): State<AppState>,
    CsrfForm(form): CsrfForm<RetryFailedForm>,
) -> Response {
    let now = app.clock.now_ms();
    let back = list_link("", &form.job_type);
    let flash =
        match job_service::retry_failed_of_type(&app.pool, &app.users, &form.job_type, now).await {
            Ok(outcome) => bulk_flash("Retried", &outcome),
            Err(e) if e.kind == service::ErrorKind::Invalid => {
                return flash::redirect(&app, "/jobs", Flash::not_done(e.message));
            }
            Err(e) => return e.into_response(),
        };
    flash::redirect(&app, &back, flash)
}
