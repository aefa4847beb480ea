//! The Accounts page of credential leasing: status cards, the account list with its filters and
//! pager (and when each resting account returns), a reset button per account, the import form with
//! each row's outcome, the active leases, and a 14-day usage chart drawn here as inline SVG. Every
//! read and change goes through `service::credential_accounts` / `service::leasing`, like the API.
//! No password is ever put into the page, not even the one just imported.

use crate::http::extract::AuditActor;
use crate::service::audit::{self, more_changes};
use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;

use super::Layout;
use super::csrf::{CsrfForm, NoFields};
use super::list_filters::{ListFilters, Select};
use crate::app::AppState;
use crate::auth::Principal;
use crate::clock::rfc3339;
use crate::domain::leases::AccountStatus;
use crate::http::error::ApiError;
use crate::http::pagination::PageParams;
use crate::service::credential_accounts::{
    self as accounts, AccountQuery, AccountStatusCounts, AccountView, ImportRequest, ImportSummary,
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
    page: Option<i64>,
    /// Set by the redirect after a reset: the account that was reset.
    reset: Option<i64>,
}

/// An account row as the page shows it.
struct Row {
    account: AccountView,
    /// `in 4 min` for a resting or leased account, else empty.
    returns: String,
    /// The absolute time behind `returns`, for its tooltip.
    returns_at: String,
    last_used: String,
    /// Whether a reset would change anything.
    can_reset: bool,
}

struct LeaseRow {
    lease: LeaseWithLogin,
    acquired: String,
    expires: String,
    expires_at: String,
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
    notice: Option<String>,
    error: Option<String>,
    import: Option<ImportSummary>,
    import_error: Option<String>,
    import_pool: String,
}

/// `in 42 s`, `in 5 min`, `in 3 h`, `in 2 d`; `now` when it is due.
fn relative(at: i64, now: i64) -> String {
    let Ok(secs) = u64::try_from((at - now) / 1000) else {
        return "now".into();
    };
    match secs {
        0 => "now".into(),
        s if s < 120 => format!("in {s} s"),
        s if s < 2 * 3600 => format!("in {} min", s.div_ceil(60)),
        s if s < 2 * 86_400 => format!("in {} h", s.div_ceil(3600)),
        s => format!("in {} d", s.div_ceil(86_400)),
    }
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

/// What a POST leaves for the page to show.
#[derive(Default)]
struct Posted {
    import: Option<ImportSummary>,
    import_error: Option<String>,
    import_pool: String,
}

async fn render(app: &AppState, principal: &Principal, q: ListQuery, posted: Posted) -> Response {
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
        notice: None,
        error: None,
        import: posted.import,
        import_error: posted.import_error,
        import_pool: posted.import_pool,
    };
    let outcome = async {
        let params = PageParams::new(q.page, Some(PAGE_SIZE)).map_err(|e| e.message)?;
        let err = |e: crate::service::Error| ApiError::from(e).message;
        let pools = accounts::pool_names(ctx).await.map_err(err)?;
        page.filters = filters(&q, pools);
        let query = AccountQuery {
            pool: q.pool.clone(),
            status: q.status.clone(),
            search: q.search.clone(),
        };
        let (items, total) = accounts::list_accounts(ctx, query, params.limit(), params.offset())
            .await
            .map_err(err)?;
        page.filters.at_page(params.page, total, PAGE_SIZE);
        page.total = total;
        page.counts = accounts::status_counts(ctx, q.pool.clone())
            .await
            .map_err(err)?;
        page.rows = items
            .into_iter()
            .map(|a| Row {
                returns: a.returns_at.map(|t| relative(t, now)).unwrap_or_default(),
                returns_at: a.returns_at.map(rfc3339).unwrap_or_default(),
                last_used: a
                    .last_used_at
                    .map(rfc3339)
                    .unwrap_or_else(|| "never".into()),
                can_reset: a.cooldown_until.is_some_and(|t| t > now)
                    || a.quarantine_until.is_some_and(|t| t > now)
                    || a.consecutive_failures > 0
                    || a.status == AccountStatus::Cooldown,
                account: a,
            })
            .collect();
        if let Some(id) = q.reset
            && let Some(row) = page.rows.iter().find(|r| r.account.id == id)
        {
            page.notice = Some(format!(
                "Account {} was reset: no cooldown, quarantine or failures.",
                row.account.login
            ));
        }
        let (leases, _) = leasing::list_leases(ctx, true, LEASES_SHOWN, 0)
            .await
            .map_err(err)?;
        page.leases = leases
            .into_iter()
            .map(|l| LeaseRow {
                acquired: rfc3339(l.lease.acquired_at),
                expires: relative(l.lease.expires_at, now),
                expires_at: rfc3339(l.lease.expires_at),
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
    let status = match outcome {
        Ok(()) => StatusCode::OK,
        Err(message) => {
            page.error = Some(message);
            StatusCode::BAD_REQUEST
        }
    };
    let status = if page.import_error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    (status, page).into_response()
}

async fn list(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Response {
    render(&app, &principal, q, Posted::default()).await
}

/// Resets an account (after the browser asked), then shows the list again (post/redirect/get).
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
            Redirect::to(&format!("/accounts?reset={id}")).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
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

/// Imports accounts like `POST /api/admin/accounts/import` (all rows or none) and shows each
/// row's outcome. The data holds passwords: it is never put back into the page.
async fn import(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    AuditActor(actor): AuditActor,
    CsrfForm(form): CsrfForm<ImportForm>,
) -> Response {
    let blank = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
    let req = ImportRequest {
        pool: blank(&form.pool),
        format: blank(&form.format),
        data: form.data,
    };
    let mut posted = Posted {
        import_pool: form.pool,
        ..Posted::default()
    };
    match accounts::import_accounts(app.leasing_ctx(), req).await {
        Ok(summary) => {
            let change = more_changes::account_import(&summary);
            audit::record(&app.users, &app.clock, &actor, change).await;
            posted.import = Some(summary)
        }
        Err(e) => posted.import_error = Some(ApiError::from(e).message),
    }
    render(&app, &principal, ListQuery::default(), posted).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        let cases = [
            (0, "now"),
            (-5_000, "now"),
            (42_000, "in 42 s"),
            (600_000, "in 10 min"),
            (601_000, "in 11 min"),
            (3 * 3_600_000, "in 3 h"),
            (3 * DAY_MS, "in 3 d"),
        ];
        for (delta, want) in cases {
            assert_eq!(relative(1_000_000 + delta, 1_000_000), want, "{delta}");
        }
    }

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
