//! Credential accounts for leasing (pool domain, admin): create, import, list, detail, change,
//! reset, delete, status counts, usage report, and the list of leases. No response carries a
//! password.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::app::AppState;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, AuditActor};
use crate::http::pagination::{Page, PageParams};
use crate::service::credential_accounts::{
    self as service, AccountDetail, AccountQuery, AccountStatusCounts, AccountView,
    CreateAccountRequest, ImportRequest, ImportSummary, PatchAccountRequest, UsageReport,
};
use crate::store::leases::LeaseWithLogin;

/// Creates an account; the password is sealed. Duplicate login in the pool -> 409 `duplicate_login`.
#[utoipa::path(post, path = "/api/admin/accounts", tag = "pool", request_body = CreateAccountRequest,
    responses((status = 201, body = AccountView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_account(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    ApiJson(req): ApiJson<CreateAccountRequest>,
) -> ApiResult<(StatusCode, Json<AccountView>)> {
    let a = service::create_account(app.leasing_ctx(), req).await?;
    let change = crate::service::audit::more_changes::account_create(&a);
    crate::service::audit::record(&app.users, &app.clock, &actor, change).await;
    Ok((StatusCode::CREATED, Json(a)))
}

/// Imports accounts from CSV or JSON lines: every row is checked and reported; nothing is written
/// unless every row is valid.
#[utoipa::path(post, path = "/api/admin/accounts/import", tag = "pool", request_body = ImportRequest,
    responses((status = 200, body = ImportSummary), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn import_accounts(
    State(app): State<AppState>,
    crate::http::extract::AuditActor(actor): crate::http::extract::AuditActor,
    ApiJson(req): ApiJson<ImportRequest>,
) -> ApiResult<Json<ImportSummary>> {
    let summary = service::import_accounts(app.leasing_ctx(), req).await?;
    let change = crate::service::audit::more_changes::account_import(&summary);
    crate::service::audit::record(&app.users, &app.clock, &actor, change).await;
    Ok(Json(summary))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AccountListQuery {
    /// Pool name.
    pub pool: Option<String>,
    /// `available`, `in_use`, `cooldown`, `quarantined` or `inactive`.
    pub status: Option<String>,
    /// Part of the login, case-insensitive.
    pub search: Option<String>,
    pub page: Option<i64>,
    pub page_size: Option<i64>,
}

/// Lists accounts by id with their status now (never a password).
#[utoipa::path(get, path = "/api/admin/accounts", tag = "pool", params(AccountListQuery),
    responses((status = 200, body = Page<AccountView>), (status = 400, body = ErrorBody)))]
pub async fn list_accounts(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<AccountListQuery>,
) -> ApiResult<Json<Page<AccountView>>> {
    let page = PageParams::new(q.page, q.page_size)?;
    let query = AccountQuery {
        pool: q.pool,
        status: q.status,
        search: q.search,
    };
    let (items, total) =
        service::list_accounts(app.leasing_ctx(), query, page.limit(), page.offset()).await?;
    Ok(Json(page.wrap(items, total)))
}

/// One account with its latest usage rows.
#[utoipa::path(get, path = "/api/admin/accounts/{id}", tag = "pool", params(("id" = i64, Path, description = "account id")),
    responses((status = 200, body = AccountDetail), (status = 404, body = ErrorBody)))]
pub async fn get_account(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<AccountDetail>> {
    Ok(Json(service::get_account(app.leasing_ctx(), id).await?))
}

/// Changes `is_active`, `metadata` or the password.
#[utoipa::path(patch, path = "/api/admin/accounts/{id}", tag = "pool", params(("id" = i64, Path, description = "account id")),
    request_body = PatchAccountRequest,
    responses((status = 200, body = AccountView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn patch_account(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<PatchAccountRequest>,
) -> ApiResult<Json<AccountView>> {
    let change = crate::service::audit::more_changes::account_update(id, &req);
    let account = service::patch_account(app.leasing_ctx(), id, req).await?;
    crate::service::audit::record(&app.users, &app.clock, &actor, change).await;
    Ok(Json(account))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Delete even while the account is leased.
    pub force: Option<bool>,
}

/// Deletes an account (its usage log stays); 409 `account_leased` while leased unless `force=true`.
#[utoipa::path(delete, path = "/api/admin/accounts/{id}", tag = "pool", params(("id" = i64, Path, description = "account id"), DeleteQuery),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_account(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> ApiResult<StatusCode> {
    let force = q.force.unwrap_or(false);
    service::delete_account(app.leasing_ctx(), id, force).await?;
    let change = crate::service::audit::more_changes::account_delete(id, force);
    crate::service::audit::record(&app.users, &app.clock, &actor, change).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Clears cooldown, quarantine and failures.
#[utoipa::path(post, path = "/api/admin/accounts/{id}/reset", tag = "pool", params(("id" = i64, Path, description = "account id")),
    responses((status = 200, body = AccountView), (status = 404, body = ErrorBody)))]
pub async fn reset_account(
    State(app): State<AppState>,
    crate::http::extract::AuditActor(actor): crate::http::extract::AuditActor,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<AccountView>> {
    let account = service::reset_account(app.leasing_ctx(), id).await?;
    let change = crate::service::audit::more_changes::account_reset(&account);
    crate::service::audit::record(&app.users, &app.clock, &actor, change).await;
    Ok(Json(account))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// Pool name (all pools when absent).
    pub pool: Option<String>,
}

/// Accounts by status now; the parts add up to `total`.
#[utoipa::path(get, path = "/api/admin/accounts/status", tag = "pool", params(StatusQuery),
    responses((status = 200, body = AccountStatusCounts), (status = 400, body = ErrorBody)))]
pub async fn account_status(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<StatusQuery>,
) -> ApiResult<Json<AccountStatusCounts>> {
    Ok(Json(
        service::status_counts(app.leasing_ctx(), q.pool).await?,
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Start (ms since the epoch, inclusive; default `to` minus 7 days).
    pub from: Option<i64>,
    /// End (ms, exclusive; default now).
    pub to: Option<i64>,
    /// `day` (default), `account` or `mission`.
    pub group_by: Option<String>,
}

/// Uses, successes, failures, success rate and mean duration of finished leases, grouped.
#[utoipa::path(get, path = "/api/admin/accounts/usage", tag = "pool", params(UsageQuery),
    responses((status = 200, body = UsageReport), (status = 400, body = ErrorBody)))]
pub async fn account_usage(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> ApiResult<Json<UsageReport>> {
    Ok(Json(
        service::usage_report(app.leasing_ctx(), q.from, q.to, q.group_by).await?,
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LeaseListQuery {
    /// Only leases open and unexpired now.
    pub active: Option<bool>,
    pub page: Option<i64>,
    pub page_size: Option<i64>,
}

/// Leases, newest first: who holds what.
#[utoipa::path(get, path = "/api/admin/leases", tag = "pool", params(LeaseListQuery),
    responses((status = 200, body = Page<LeaseWithLogin>), (status = 400, body = ErrorBody)))]
pub async fn list_leases(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<LeaseListQuery>,
) -> ApiResult<Json<Page<LeaseWithLogin>>> {
    let page = PageParams::new(q.page, q.page_size)?;
    let (items, total) = crate::service::leasing::list_leases(
        app.leasing_ctx(),
        q.active.unwrap_or(false),
        page.limit(),
        page.offset(),
    )
    .await?;
    Ok(Json(page.wrap(items, total)))
}
