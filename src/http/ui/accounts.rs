//! The Accounts page of credential leasing: status cards, the account list with its filters and
//! pager (and when each resting account returns), a reset button per account, the import form with
//! each row's outcome, the active leases, and a 14-day usage chart drawn here as inline SVG. Every
//! read and change goes through `service::credential_accounts` / `service::leasing`, like the API.
//! Times are relative with the exact UTC time as tooltip (`times`). Every form answers with a
//! redirect and a flash message. No password is ever put into the page, not even the one just
//! imported.

use crate::http::extract::AuditActor;
use crate::service::audit::{self, more_changes};
use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;

use super::csrf::{CsrfForm, NoFields};
use super::flash::{self, Flash};
use super::list_filters::{ListFilters, Select, page_number, within_pages};
use super::times::Moment;
use super::{Layout, page_error};
use crate::app::AppState;
use crate::auth::Principal;
use crate::clock::rfc3339;
use crate::domain::leases::AccountStatus;
use crate::http::error::ApiError;
use crate::http::pagination::PageParams;
use crate::service::credential_accounts::{
    self as accounts, AccountQuery, AccountStatusCounts, AccountView, ImportRequest,
};
use crate::service::leasing;
use crate::store::leases::LeaseWithLogin;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/accounts", get(list))
        .route("/accounts/import", post(import))
        .route("/accounts/{id}/reset", post(reset))
}

const PAGE_SIZE: i64 = 50;
/// Active leases shown (newest first).
const LEASES_SHOWN: i64 = 50;
/// Days in the usage chart, today included.
const CHART_DAYS: i64 = 14;
const DAY_MS: i64 = 86_400_000;

#[derive(Deserialize, Default)]
struct ListQuery {
    pool: Option<String>,
    status: Option<String>,
    search: Option<String>,
    /// Read as text: a page that is no number is explained on the page.
    page: Option<String>,
}

/// An account row as the page shows it.
struct Row {
    account: AccountView,
    /// When a resting or leased account is free again.
    returns: Option<Moment>,
    /// `None`: never used.
    last_used: Option<Moment>,
    /// Whether a reset would change anything.
    can_reset: bool,
}

struct LeaseRow {
    lease: LeaseWithLogin,
    acquired: Moment,
    expires: Moment,
}

/// One day of the usage chart, with its bars' geometry in SVG units.
struct ChartDay {
    /// `MM-DD`.
    label: String,
    day: String,
    successes: i64,
    failures: i64,
    x: i64,
    ok_y: i64,
    ok_h: i64,
    fail_y: i64,
    fail_h: i64,
}

struct Chart {
    days: Vec<ChartDay>,
    /// The largest bar's value (the top of the scale).
    max: i64,
    width: i64,
    height: i64,
    /// The y of the base line.
    base: i64,
}

#[derive(Template, WebTemplate)]
#[template(path = "accounts.html")]
struct AccountsPage {
    layout: Layout,
    counts: AccountStatusCounts,
    rows: Vec<Row>,
    filters: ListFilters,
    total: i64,
    leases: Vec<LeaseRow>,
    chart: Chart,
    error: Option<String>,
}

/// The chart's 14 days (ending today, UTC) from a usage report by day; days without use are 0.
fn chart(report: &[accounts::UsageGroupRow], today_start: i64) -> Chart {
    let (width, height, top, base) = (14 * 40, 160, 10, 140);
    let mut days: Vec<ChartDay> = (0..CHART_DAYS)
        .map(|i| {
            let day: String = rfc3339(today_start - (CHART_DAYS - 1 - i) * DAY_MS)
                .chars()
                .take(10)
                .collect();
            let found = report.iter().find(|g| g.key == day);
            ChartDay {
                label: day[5..].to_string(),
                successes: found.map_or(0, |g| g.successes),
                failures: found.map_or(0, |g| g.failures),
                day,
                x: i * 40,
                ok_y: base,
                ok_h: 0,
                fail_y: base,
                fail_h: 0,
            }
        })
        .collect();
    let max = days
        .iter()
        .map(|d| d.successes.max(d.failures))
        .max()
        .unwrap_or(0)
        .max(1);
    let scale = |n: i64| (n * (base - top) + max - 1) / max;
    for d in &mut days {
        d.ok_h = scale(d.successes);
        d.ok_y = base - d.ok_h;
        d.fail_h = scale(d.failures);
        d.fail_y = base - d.fail_h;
    }
    Chart {
        days,
        max,
        width,
        height,
        base,
    }
}

fn filters(q: &ListQuery, pools: Vec<String>) -> ListFilters {
    let statuses = AccountStatus::ALL
        .iter()
        .map(|s| s.as_str().to_string())
        .collect();
    ListFilters::new(
        "/accounts",
        vec![
            Select::new("Pool", "pool", pools, q.pool.as_deref()),
            Select::new("Status", "status", statuses, q.status.as_deref()),
        ],
    )
    .with_search("Login", "search", q.search.as_deref())
}

async fn render(app: &AppState, principal: &Principal, q: ListQuery) -> Response {
    let ctx = app.leasing_ctx();
    let now = app.clock.now_ms();
    let mut page = AccountsPage {
        layout: Layout::new(principal, "/accounts"),
        counts: AccountStatusCounts::default(),
        rows: Vec::new(),
        filters: filters(&q, Vec::new()),
        total: 0,
        leases: Vec::new(),
        chart: chart(&[], now - now.rem_euclid(DAY_MS)),
        error: None,
    };
    // A page that is no number is explained above the first page.
    let number = page_number(q.page.as_deref());
    page.error = number.clone().err();
    let outcome = async {
        let asked = number.unwrap_or(1);
        let err = |e: crate::service::Error| ApiError::from(e).message;
        let pools = accounts::pool_names(ctx).await.map_err(err)?;
        page.filters = filters(&q, pools);
        let query = || AccountQuery {
            pool: q.pool.clone(),
            status: q.status.clone(),
            search: q.search.clone(),
        };
        let params = PageParams::new(Some(asked), Some(PAGE_SIZE)).map_err(|e| e.message)?;
        let (mut items, total) =
            accounts::list_accounts(ctx, query(), params.limit(), params.offset())
                .await
                .map_err(err)?;
        // A page past the end shows the last one.
        let shown = within_pages(asked, total, PAGE_SIZE);
        if shown < asked {
            let params = PageParams::new(Some(shown), Some(PAGE_SIZE)).map_err(|e| e.message)?;
            items = accounts::list_accounts(ctx, query(), params.limit(), params.offset())
                .await
                .map_err(err)?
                .0;
        }
        page.filters.at_page(shown, total, PAGE_SIZE);
        page.total = total;
        page.counts = accounts::status_counts(ctx, q.pool.clone())
            .await
            .map_err(err)?;
        page.rows = items
            .into_iter()
            .map(|a| Row {
                returns: Moment::maybe(a.returns_at, now),
                last_used: Moment::maybe(a.last_used_at, now),
                can_reset: a.cooldown_until.is_some_and(|t| t > now)
                    || a.quarantine_until.is_some_and(|t| t > now)
                    || a.consecutive_failures > 0
                    || a.status == AccountStatus::Cooldown,
                account: a,
            })
            .collect();
        let (leases, _) = leasing::list_leases(ctx, true, LEASES_SHOWN, 0)
            .await
            .map_err(err)?;
        page.leases = leases
            .into_iter()
            .map(|l| LeaseRow {
                acquired: Moment::new(l.lease.acquired_at, now),
                expires: Moment::new(l.lease.expires_at, now),
                lease: l,
            })
            .collect();
        let today_start = now - now.rem_euclid(DAY_MS);
        let from = today_start - (CHART_DAYS - 1) * DAY_MS;
        let usage = accounts::usage_report(ctx, Some(from), Some(now + 1), Some("day".into()))
            .await
            .map_err(err)?;
        page.chart = chart(&usage.groups, today_start);
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

async fn list(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Response {
    render(&app, &principal, q).await
}

/// Resets an account (after the browser asked), then shows the list again with what it did.
async fn reset(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    Path(id): Path<i64>,
    CsrfForm(NoFields {}): CsrfForm<NoFields>,
) -> Response {
    match accounts::reset_account(app.leasing_ctx(), id).await {
        Ok(account) => {
            let change = more_changes::account_reset(&account);
            audit::record(&app.users, &app.clock, &actor, change).await;
            flash::redirect(
                &app,
                "/accounts",
                Flash::done(format!(
                    "Account {} was reset: no cooldown, quarantine or failures.",
                    account.login
                )),
            )
        }
        Err(e) if e.kind == crate::service::ErrorKind::NotFound => page_error(e),
        Err(e) => flash::redirect(
            &app,
            "/accounts",
            Flash::not_done(ApiError::from(e).message),
        ),
    }
}

#[derive(Deserialize)]
struct ImportForm {
    /// The CSV or JSON lines (typed, or read from the chosen file by the page's script).
    #[serde(default)]
    data: String,
    /// `csv`, `jsonl` or empty (guess).
    #[serde(default)]
    format: String,
    #[serde(default)]
    pool: String,
}

/// Imports accounts like `POST /api/admin/accounts/import` (all rows or none), then shows the
/// list with the counts and the refused rows (post/redirect/get: a reload imports nothing again).
/// The data holds passwords: it is never put back into the page.
async fn import(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    CsrfForm(form): CsrfForm<ImportForm>,
) -> Response {
    let blank = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
    let req = ImportRequest {
        pool: blank(&form.pool),
        format: blank(&form.format),
        data: form.data,
    };
    let flash = match accounts::import_accounts(app.leasing_ctx(), req).await {
        Ok(report) => {
            let change = more_changes::account_import(&report);
            audit::record(&app.users, &app.clock, &actor, change).await;
            Flash::Batch {
                total: report.total,
                valid: report.valid,
                invalid: report.invalid,
                imported: report.imported,
                refused: (report.rows.iter())
                    .filter(|r| !r.ok)
                    .map(|r| {
                        let why = r.errors.join("; ");
                        let why = if r.duplicate {
                            format!("duplicate: {why}")
                        } else {
                            why
                        };
                        (r.row, why)
                    })
                    .collect(),
            }
        }
        Err(e) => Flash::not_done(ApiError::from(e).message),
    };
    flash::redirect(&app, "/accounts", flash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_fourteen_days_ending_today_scaled_to_the_largest_bar() {
        let today = 20_000 * DAY_MS;
        let row = |key: &str, successes, failures| accounts::UsageGroupRow {
            key: key.into(),
            uses: successes + failures,
            successes,
            failures,
            success_rate: 0.0,
            mean_duration_ms: 0.0,
        };
        let today_key: String = rfc3339(today).chars().take(10).collect();
        let first_key: String = rfc3339(today - 13 * DAY_MS).chars().take(10).collect();
        let c = chart(&[row(&today_key, 4, 2), row(&first_key, 0, 1)], today);
        assert_eq!(c.days.len(), 14);
        assert_eq!(c.days[13].day, today_key);
        assert_eq!(c.days[0].day, first_key);
        assert_eq!(c.max, 4);
        let last = &c.days[13];
        assert_eq!((last.ok_h, last.fail_h), (130, 65));
        assert_eq!(last.ok_y + last.ok_h, c.base);
        assert_eq!((c.days[5].ok_h, c.days[5].fail_h), (0, 0));
        assert_eq!(c.days[0].fail_h, 33, "a small bar still shows");
    }
}
