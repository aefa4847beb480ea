//! The Codes page: the quota of new codes (overall and per pool group), the generate form, the list
//! of codes with its filters and pager, and disabling selected codes or a whole batch after a
//! confirmation page. Every read and change goes through `service::codes`, like the API.
//!
//! A new batch's plaintext codes are shown once: the generate form seals them (with the keyring)
//! into a short-lived in-memory slot and redirects to `/codes/new/{token}`, which shows them once;
//! `/codes/new/{token}/csv` downloads them once. The slot is dropped when both were used or after
//! [`KEEP_NEW_BATCH`]; it is never listed, logged or written to a database.

use crate::http::extract::AuditActor;
use crate::service::audit::{self, more_changes};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;

use super::Layout;
use super::csrf::CsrfForm;
use super::flash::{self, Flash};
use super::list_filters::{ListFilters, Select, page_number, within_pages};
use super::times::Moment;
use crate::app::{App, AppState};
use crate::auth::Principal;
use crate::crypto::Credential;
use crate::http::error::ApiError;
use crate::http::pagination::PageParams;
use crate::service::codes::{
    self as service, CodeQuota, DisableOutcome, DisableRequest, GenerateRequest, GeneratedBatch,
};
use crate::store::redeem_codes::RedeemCode;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/codes", get(list))
        .route("/codes/generate", post(generate))
        .route("/codes/new/{token}", get(new_batch))
        .route("/codes/new/{token}/csv", get(new_batch_csv))
        .route("/codes/disable", post(disable))
}

const PAGE_SIZE: i64 = 50;
const STATUSES: [&str; 5] = ["unused", "reserved", "used", "expired", "disabled"];
/// Batches offered in the batch filter, newest first.
const BATCHES_OFFERED: i64 = 50;

/// How long a new batch waits to be shown and downloaded.
pub const KEEP_NEW_BATCH: Duration = Duration::from_secs(10 * 60);
/// New batches waiting at most at once; the oldest goes first.
const MAX_NEW_BATCHES: usize = 64;

/// A generated batch waiting to be shown and downloaded, sealed.
struct NewBatch {
    /// Who generated it: only they may see it.
    owner: String,
    batch_id: String,
    count: usize,
    /// The batch's CSV, sealed with the keyring.
    sealed_csv: String,
    created: Instant,
    shown: bool,
    downloaded: bool,
}

static NEW_BATCHES: LazyLock<Mutex<HashMap<String, NewBatch>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn new_batches() -> std::sync::MutexGuard<'static, HashMap<String, NewBatch>> {
    NEW_BATCHES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Keeps a sealed batch; returns the token of its page.
fn keep_new_batch(app: &App, owner: String, batch: &GeneratedBatch) -> anyhow::Result<String> {
    let sealed_csv = app.keyring.seal(&Credential::new(batch.to_csv()))?;
    let token = uuid::Uuid::new_v4().simple().to_string();
    let mut kept = new_batches();
    kept.retain(|_, b| b.created.elapsed() < KEEP_NEW_BATCH);
    while kept.len() >= MAX_NEW_BATCHES {
        let oldest = kept
            .iter()
            .min_by_key(|(_, b)| b.created)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => kept.remove(&k),
            None => break,
        };
    }
    kept.insert(
        token.clone(),
        NewBatch {
            owner,
            batch_id: batch.batch_id.clone(),
            count: batch.codes.len(),
            sealed_csv,
            created: Instant::now(),
            shown: false,
            downloaded: false,
        },
    );
    Ok(token)
}

/// What of a kept batch to take.
enum Take {
    Show,
    Download,
}

/// Takes the codes (show) or the CSV (download) of a kept batch, once each, for its owner;
/// drops the batch once both were taken. `None` when there is nothing (left) to take.
fn take_new_batch(
    app: &App,
    token: &str,
    owner: &str,
    what: Take,
) -> Option<(String, String, usize)> {
    let mut kept = new_batches();
    let batch = kept.get_mut(token)?;
    if batch.owner != owner || batch.created.elapsed() >= KEEP_NEW_BATCH {
        return None;
    }
    let taken = match what {
        Take::Show => std::mem::replace(&mut batch.shown, true),
        Take::Download => std::mem::replace(&mut batch.downloaded, true),
    };
    if taken {
        return None;
    }
    let csv = app.keyring.open(&batch.sealed_csv).ok()?;
    let out = (
        csv.expose().to_string(),
        batch.batch_id.clone(),
        batch.count,
    );
    if batch.shown && batch.downloaded {
        kept.remove(token);
    }
    Some(out)
}

#[derive(Deserialize, Default)]
struct ListQuery {
    status: Option<String>,
    batch_id: Option<String>,
    search: Option<String>,
    /// Read as text: a page that is no number is explained on the page.
    page: Option<String>,
}

struct Row {
    code: RedeemCode,
    created: Moment,
    expires: Option<Moment>,
    used_at: Option<Moment>,
}

/// A pool group's line in the quota table.
struct GroupQuota {
    id: i64,
    name: String,
    quota: CodeQuota,
}

#[derive(Template, WebTemplate)]
#[template(path = "codes.html")]
struct CodesPage {
    layout: Layout,
    quota: CodeQuota,
    groups: Vec<GroupQuota>,
    rows: Vec<Row>,
    filters: ListFilters,
    total: i64,
    /// The batch filter's value, offered to the batch-disable form.
    batch: String,
    error: Option<String>,
}

fn filters(q: &ListQuery, batches: Vec<String>) -> ListFilters {
    let statuses = STATUSES.iter().map(|s| s.to_string()).collect();
    ListFilters::new(
        "/codes",
        vec![
            Select::new("Status", "status", statuses, q.status.as_deref()),
            Select::new("Batch", "batch_id", batches, q.batch_id.as_deref()),
        ],
    )
    .with_search("Prefix or email", "search", q.search.as_deref())
}

async fn list(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Response {
    let mut page = CodesPage {
        layout: Layout::new(&principal, "/codes"),
        quota: CodeQuota {
            free_seats: 0,
            open_codes: 0,
            available: 0,
        },
        groups: Vec::new(),
        rows: Vec::new(),
        filters: filters(&q, Vec::new()),
        total: 0,
        batch: q.batch_id.clone().unwrap_or_default(),
        error: None,
    };
    let outcome = async {
        let err = |e: crate::service::Error| ApiError::from(e).message;
        page.quota = service::quota(&app, None).await.map_err(err)?;
        let seats = crate::service::mothers::quota(app.pool_ctx())
            .await
            .map_err(err)?;
        for line in seats.groups {
            if let Some(id) = line.pool_group_id {
                page.groups.push(GroupQuota {
                    id,
                    name: line.pool_group_name.unwrap_or_else(|| format!("#{id}")),
                    quota: service::quota(&app, Some(id)).await.map_err(err)?,
                });
            }
        }
        let mut batches = service::recent_batches(&app, BATCHES_OFFERED)
            .await
            .map_err(err)?;
        if let Some(b) = q.batch_id.as_ref().filter(|b| !b.is_empty())
            && !batches.contains(b)
        {
            batches.push(b.clone());
        }
        page.filters = filters(&q, batches);
        // A page that is no number is explained above the first page.
        let number = page_number(q.page.as_deref()).unwrap_or_else(|message| {
            page.error = Some(message);
            1
        });
        let filter =
            service::filter(q.status.clone(), q.batch_id.clone(), q.search.clone()).map_err(err)?;
        let params = PageParams::new(Some(number), Some(PAGE_SIZE)).map_err(|e| e.message)?;
        let (mut items, mut total) = service::list(&app, &filter, params.limit(), params.offset())
            .await
            .map_err(err)?;
        let shown = within_pages(number, total, PAGE_SIZE);
        if shown != number {
            let params = PageParams::new(Some(shown), Some(PAGE_SIZE)).map_err(|e| e.message)?;
            (items, total) = service::list(&app, &filter, params.limit(), params.offset())
                .await
                .map_err(err)?;
        }
        page.filters.at_page(shown, total, PAGE_SIZE);
        page.total = total;
        let now = app.clock.now_ms();
        page.rows = items
            .into_iter()
            .map(|c| Row {
                created: Moment::new(c.created_at, now),
                expires: Moment::maybe(c.expires_at, now),
                used_at: Moment::maybe(c.used_at, now),
                code: c,
            })
            .collect();
        Ok::<_, String>(())
    }
    .await;
    match outcome {
        Ok(()) => (StatusCode::OK, page).into_response(),
        Err(message) => {
            page.error = Some(message);
            (StatusCode::BAD_REQUEST, page).into_response()
        }
    }
}

#[derive(Deserialize)]
struct GenerateForm {
    #[serde(default)]
    count: String,
    #[serde(default)]
    prefix: String,
    /// `YYYY-MM-DDTHH:MM` (a `datetime-local` input), UTC; empty for never.
    #[serde(default)]
    expires_at: String,
    #[serde(default)]
    pool_group_id: String,
}

/// A `datetime-local` value (`YYYY-MM-DDTHH:MM`, seconds optional) read as UTC, in milliseconds.
pub(crate) fn parse_expiry(raw: &str) -> Result<Option<i64>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let with_seconds =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let without = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    time::PrimitiveDateTime::parse(raw, with_seconds)
        .or_else(|_| time::PrimitiveDateTime::parse(raw, without))
        .map(|t| Some(t.assume_utc().unix_timestamp() * 1000))
        .map_err(|_| "expiry must be a date and time such as 2030-01-31T18:00 (UTC)".to_string())
}

impl GenerateForm {
    fn request(&self) -> Result<GenerateRequest, String> {
        let count = self
            .count
            .trim()
            .parse::<i64>()
            .map_err(|_| "count must be a whole number from 1 to 1000".to_string())?;
        let pool_group_id = match self.pool_group_id.trim() {
            "" => None,
            g => Some(
                g.parse::<i64>()
                    .map_err(|_| "pool group must be a group's id".to_string())?,
            ),
        };
        Ok(GenerateRequest {
            count,
            prefix: Some(self.prefix.trim().to_string()).filter(|p| !p.is_empty()),
            expires_at: parse_expiry(&self.expires_at)?,
            pool_group_id,
        })
    }
}

/// Generates a batch like `POST /api/admin/codes`, keeps it sealed for one showing and one
/// download, and redirects to the page that shows it.
async fn generate(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    AuditActor(actor): AuditActor,
    CsrfForm(form): CsrfForm<GenerateForm>,
) -> Response {
    let req = match form.request() {
        Ok(req) => req,
        Err(message) => return flash::redirect(&app, "/codes", Flash::not_done(message)),
    };
    let batch = match service::generate(&app, req).await {
        Ok(batch) => {
            let change = more_changes::codes_generate(&batch);
            audit::record(&app.users, &app.clock, &actor, change).await;
            batch
        }
        Err(e) => {
            return flash::redirect(&app, "/codes", Flash::not_done(ApiError::from(e).message));
        }
    };
    match keep_new_batch(&app, principal.display_name(), &batch) {
        Ok(token) => axum::response::Redirect::to(&format!("/codes/new/{token}")).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "sealing a new batch for its page failed");
            flash::redirect(
                &app,
                "/codes",
                Flash::not_done(format!(
                    "batch {} was generated but cannot be shown; disable it",
                    batch.batch_id
                )),
            )
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "codes_new.html")]
struct NewBatchPage {
    layout: Layout,
    token: String,
    batch_id: String,
    /// The plaintext codes, or none when this page was shown before.
    codes: Vec<String>,
    gone: bool,
}

/// The codes of the batch just generated, once.
async fn new_batch(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(token): Path<String>,
) -> Response {
    let taken = take_new_batch(&app, &token, &principal.display_name(), Take::Show);
    let gone = taken.is_none();
    let (csv, batch_id, _) = taken.unwrap_or_default();
    let codes = csv
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .map(str::to_string)
        .collect();
    let page = NewBatchPage {
        layout: Layout::new(&principal, "/codes"),
        token,
        batch_id,
        codes,
        gone,
    };
    let status = if gone {
        StatusCode::GONE
    } else {
        StatusCode::OK
    };
    (status, page).into_response()
}

/// The CSV of the batch just generated, once.
async fn new_batch_csv(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(token): Path<String>,
) -> Response {
    match take_new_batch(&app, &token, &principal.display_name(), Take::Download) {
        Some((csv, batch_id, _)) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"codes-{batch_id}.csv\""),
                ),
            ],
            csv,
        )
            .into_response(),
        None => (
            StatusCode::GONE,
            "This download was used already or has expired: a batch's codes download once.",
        )
            .into_response(),
    }
}

/// What the disable form sent: `ids` (repeated) or `batch_id`, and `confirm=yes` on the second step.
struct DisableForm {
    ids: Vec<i64>,
    batch_id: Option<String>,
    confirmed: bool,
}

impl DisableForm {
    fn parse(fields: Vec<(String, String)>) -> Result<Self, String> {
        let mut form = DisableForm {
            ids: Vec::new(),
            batch_id: None,
            confirmed: false,
        };
        for (name, value) in fields {
            match name.as_str() {
                "ids" => form.ids.push(
                    value
                        .parse()
                        .map_err(|_| "a selected code is not a code id".to_string())?,
                ),
                "batch_id" if !value.trim().is_empty() => {
                    form.batch_id = Some(value.trim().to_string());
                }
                "confirm" => form.confirmed = value == "yes",
                _ => {}
            }
        }
        Ok(form)
    }

    fn request(self) -> DisableRequest {
        if self.ids.is_empty() {
            DisableRequest {
                ids: None,
                batch_id: self.batch_id,
            }
        } else {
            DisableRequest {
                ids: Some(self.ids),
                batch_id: None,
            }
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "codes_confirm.html")]
struct ConfirmPage {
    layout: Layout,
    ids: Vec<i64>,
    batch_id: Option<String>,
    /// What will be disabled, in words.
    what: String,
}

/// Disables selected codes or a batch: the first post shows what will be disabled and asks; the
/// confirmed post disables (a `codes_disable` job for more than 1,000) and redirects to the list.
async fn disable(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    AuditActor(actor): AuditActor,
    CsrfForm(fields): CsrfForm<Vec<(String, String)>>,
) -> Response {
    let form = match DisableForm::parse(fields) {
        Ok(form) => form,
        Err(message) => return flash::redirect(&app, "/codes", Flash::not_done(message)),
    };
    if form.ids.is_empty() && form.batch_id.is_none() {
        return flash::redirect(
            &app,
            "/codes",
            Flash::not_done("select codes or name a batch to disable"),
        );
    }
    if !form.confirmed {
        let what = if form.ids.is_empty() {
            let batch = form.batch_id.clone().unwrap_or_default();
            match service::unused_in_batch(&app, &batch).await {
                Ok(n) => format!("the {n} unused code(s) of batch {batch}"),
                Err(e) => return super::page_error(e),
            }
        } else {
            format!("{} selected code(s)", form.ids.len())
        };
        let batch_id = if form.ids.is_empty() {
            form.batch_id
        } else {
            None
        };
        return ConfirmPage {
            layout: Layout::new(&principal, "/codes"),
            ids: form.ids,
            batch_id,
            what,
        }
        .into_response();
    }
    let back = match &form.batch_id {
        Some(b) if form.ids.is_empty() => format!("/codes?batch_id={}", urlencode(b)),
        _ => "/codes".to_string(),
    };
    let request = form.request();
    let (batch_id, ids) = (
        request.batch_id.clone(),
        request.ids.as_ref().map_or(0, Vec::len),
    );
    let outcome = service::disable(&app, request).await;
    if let Ok(outcome) = &outcome {
        let change = more_changes::codes_disable(outcome, batch_id.as_deref(), ids);
        audit::record(&app.users, &app.clock, &actor, change).await;
        if let DisableOutcome::Queued(q) = outcome {
            audit::mark_jobs(&app.users, &actor, std::slice::from_ref(&q.job_id)).await;
        }
    }
    match outcome {
        Ok(DisableOutcome::Done(done)) => flash::redirect(
            &app,
            &back,
            Flash::done(format!(
                "Disabled {} code(s); used, reserved and expired codes stay as they were.",
                done.disabled
            )),
        ),
        Ok(DisableOutcome::Queued(queued)) => flash::redirect(
            &app,
            &back,
            Flash::done(format!(
                "Disabling {} code(s) runs as job {}; follow it on the Jobs page.",
                queued.codes, queued.job_id
            )),
        ),
        Err(e) => flash::redirect(&app, &back, Flash::not_done(ApiError::from(e).message)),
    }
}

fn urlencode(value: &str) -> String {
    serde_urlencoded::to_string([("v", value)])
        .unwrap_or_default()
        .trim_start_matches("v=")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_a_utc_date_and_time_or_nothing() {
        assert_eq!(parse_expiry(""), Ok(None));
        assert_eq!(parse_expiry("  "), Ok(None));
        assert_eq!(
            parse_expiry("2030-01-31T18:00"),
            Ok(Some(1_896_112_800_000))
        );
        assert_eq!(
            parse_expiry("2030-01-31T18:00:30"),
            Ok(Some(1_896_112_830_000))
        );
        for bad in ["2030-01-31", "tomorrow", "2030-13-01T00:00"] {
            assert!(parse_expiry(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_disable_form_reads_repeated_ids_or_a_batch() {
        let fields = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let f = DisableForm::parse(fields(&[("ids", "3"), ("ids", "5"), ("csrf", "x")])).unwrap();
        assert_eq!((f.ids.as_slice(), f.confirmed), (&[3, 5][..], false));
        let f = DisableForm::parse(fields(&[("batch_id", " b1 "), ("confirm", "yes")])).unwrap();
        assert_eq!((f.batch_id.as_deref(), f.confirmed), (Some("b1"), true));
        assert!(DisableForm::parse(fields(&[("ids", "x")])).is_err());
    }
}
