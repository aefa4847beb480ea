//! Credential accounts, the admins' side of leasing: create, import, list, change, reset and
//! delete accounts, and read status and usage. Passwords are sealed before they reach the store
//! and never returned.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::leasing::{
    LeasingCtx, MAX_IMPORT_ROWS, RECENT_USAGE, check_login, check_metadata, check_password,
    check_pool, check_text, metadata_value, seal,
};
use super::{Error, Result, not_found};
use crate::crypto::Credential;
use crate::domain::leases::{self, AccountStatus, LeasePolicy};
use crate::store::StoreError;
use crate::store::credential_accounts::{self as accounts, Account, AccountFilter, NewAccount};
use crate::store::leases::{self as store, Usage, UsageGroup};
/// An account as admins see it: never its password.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountView {
    pub id: i64,
    pub pool: String,
    pub login: String,
    pub phone: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub is_active: bool,
    /// `available`, `in_use`, `cooldown`, `quarantined` or `inactive`, now.
    pub status: AccountStatus,
    /// When a resting or leased account is available again (ms); null when available or inactive.
    pub returns_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub cooldown_until: Option<i64>,
    pub quarantine_until: Option<i64>,
    pub consecutive_failures: i64,
    pub total_uses: i64,
    pub total_successes: i64,
    pub current_lease_id: Option<String>,
    pub leased_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

fn view(a: Account, now: i64, policy: &LeasePolicy) -> AccountView {
    let times = a.times();
    let status = leases::status_at(&times, now, policy.cooldown_ms);
    let returns_at = match status {
        AccountStatus::Available | AccountStatus::Inactive => None,
        _ => leases::returns_at(&times, policy.cooldown_ms),
    };
    // An expired lease is over even before housekeeping closes it.
    let open = a.leased_until.is_some_and(|u| u > now);
    AccountView {
        id: a.id,
        pool: a.pool,
        login: a.login,
        phone: a.phone,
        metadata: metadata_value(&a.metadata),
        is_active: a.is_active,
        status,
        returns_at,
        last_used_at: a.last_used_at,
        cooldown_until: a.cooldown_until,
        quarantine_until: a.quarantine_until,
        consecutive_failures: a.consecutive_failures,
        total_uses: a.total_uses,
        total_successes: a.total_successes,
        current_lease_id: a.current_lease_id.filter(|_| open),
        leased_until: a.leased_until.filter(|_| open),
        created_at: a.created_at,
        updated_at: a.updated_at,
    }
}

/// `POST /api/admin/accounts` (and one row of an import).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountRequest {
    /// Pool name (default `default`).
    pub pool: Option<String>,
    /// The login (usually an email), unique per pool.
    pub login: Option<String>,
    pub password: Option<String>,
    pub phone: Option<String>,
    /// A JSON object (default `{}`).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

impl fmt::Debug for CreateAccountRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateAccountRequest")
            .field("pool", &self.pool)
            .field("login", &self.login)
            .field("password", &"***")
            .finish_non_exhaustive()
    }
}

struct CheckedAccount {
    pool: String,
    login: String,
    password: Credential,
    phone: Option<String>,
    metadata: String,
}

fn check_account(req: CreateAccountRequest, default_pool: Option<&str>) -> Result<CheckedAccount> {
    Ok(CheckedAccount {
        pool: check_pool(req.pool.or_else(|| default_pool.map(str::to_string)))?,
        login: check_login(req.login)?,
        password: check_password(req.password)?,
        phone: check_text("phone", req.phone, 32)?,
        metadata: check_metadata(req.metadata)?,
    })
}

fn new_account(ctx: LeasingCtx<'_>, a: CheckedAccount) -> Result<NewAccount> {
    Ok(NewAccount {
        password_sealed: seal(ctx, &a.password)?,
        pool: a.pool,
        login: a.login,
        phone: a.phone,
        metadata: a.metadata,
    })
}

pub async fn create_account(ctx: LeasingCtx<'_>, req: CreateAccountRequest) -> Result<AccountView> {
    let checked = check_account(req, None)?;
    let (pool, login) = (checked.pool.clone(), checked.login.clone());
    let new = new_account(ctx, checked)?;
    let now = ctx.clock.now_ms();
    match accounts::insert(ctx.pool, &new, now).await {
        Ok(a) => {
            tracing::info!(account = a.id, pool = %a.pool, "credential account created");
            Ok(view(a, now, &ctx.policy))
        }
        Err(StoreError::Conflict(_)) => Err(Error::new(
            super::ErrorKind::Conflict,
            "duplicate_login",
            format!("login {login} already exists in pool {pool}"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// `POST /api/admin/accounts/import`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// Pool for rows that name none (default `default`).
    pub pool: Option<String>,
    /// `csv` or `jsonl`; by default JSON lines when the first non-blank character is `{`, else CSV.
    pub format: Option<String>,
    /// CSV (`login,password,phone`, then optional columns; a header row starting with `login` is
    /// skipped and names the extra columns, which go into metadata) or JSON lines (one create body
    /// per line).
    pub data: String,
}

impl fmt::Debug for ImportRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportRequest")
            .field("pool", &self.pool)
            .field("format", &self.format)
            .field("data", &"***")
            .finish()
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportRow {
    /// 1-based, in data order (a CSV header is not counted).
    pub row: usize,
    pub login: Option<String>,
    pub ok: bool,
    /// The login appears earlier in the data, or exists in its pool already.
    pub duplicate: bool,
    pub id: Option<i64>,
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportSummary {
    pub total: usize,
    pub valid: usize,
    pub invalid: usize,
    /// Rows written: all of them, or none when any row was refused.
    pub imported: usize,
    pub rows: Vec<ImportRow>,
}

/// The format of import data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportFormat {
    Csv,
    Jsonl,
}

impl ImportFormat {
    /// `csv` or `jsonl` (`ndjson`); by default JSON lines when the data starts with `{`.
    pub fn choose(named: Option<&str>, head: &[u8]) -> Result<Self> {
        match named {
            Some("csv") => Ok(Self::Csv),
            Some("jsonl") | Some("ndjson") => Ok(Self::Jsonl),
            Some(other) => Err(Error::invalid(
                "invalid_format",
                format!("format must be csv or jsonl, got {other}"),
            )),
            None if head.trim_ascii_start().starts_with(b"{") => Ok(Self::Jsonl),
            None => Ok(Self::Csv),
        }
    }
}

/// One parsed row of import data: a create request, or why the row could not be read.
pub type ParsedRow = std::result::Result<CreateAccountRequest, String>;

/// Reads import rows one at a time, so a file of any size streams through: CSV rows
/// `login,password,phone` (a first row starting with `login` is a header naming further columns,
/// which go into metadata; a `pool` column sets the pool), or JSON lines (blank lines skipped).
pub fn read_rows<R: std::io::Read + Send + 'static>(
    reader: R,
    format: ImportFormat,
) -> Box<dyn Iterator<Item = ParsedRow> + Send> {
    use std::io::BufRead;
    match format {
        ImportFormat::Jsonl => Box::new(
            std::io::BufReader::new(reader)
                .lines()
                .filter(|l| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
                .map(|line| match line {
                    Ok(line) => serde_json::from_str::<CreateAccountRequest>(&line)
                        .map_err(|e| format!("not a valid JSON line: {e}")),
                    Err(e) => Err(format!("cannot read the line: {e}")),
                }),
        ),
        ImportFormat::Csv => {
            let records = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .trim(csv::Trim::All)
                .from_reader(reader)
                .into_records();
            let mut headers: Option<Vec<String>> = None;
            let mut first = true;
            Box::new(records.filter_map(move |record| {
                let record = match record {
                    Ok(r) => r,
                    Err(e) => return Some(Err(format!("not valid CSV: {e}"))),
                };
                let is_first = std::mem::replace(&mut first, false);
                if is_first
                    && record
                        .get(0)
                        .is_some_and(|f| f.eq_ignore_ascii_case("login"))
                {
                    headers = Some(record.iter().map(str::to_string).collect());
                    return None;
                }
                Some(Ok(csv_row(&record, headers.as_deref())))
            }))
        }
    }
}

fn csv_row(record: &csv::StringRecord, headers: Option<&[String]>) -> CreateAccountRequest {
    let field = |n: usize| record.get(n).map(str::to_string).filter(|s| !s.is_empty());
    let mut metadata = serde_json::Map::new();
    let mut pool = None;
    if let Some(h) = headers {
        for (n, name) in h.iter().enumerate().skip(3) {
            match (name.as_str(), field(n)) {
                ("pool", v) => pool = v,
                (_, Some(v)) => {
                    metadata.insert(name.clone(), serde_json::Value::String(v));
                }
                _ => {}
            }
        }
    }
    CreateAccountRequest {
        pool,
        login: field(0),
        password: record.get(1).map(str::to_string),
        phone: field(2),
        metadata: Some(serde_json::Value::Object(metadata)),
    }
}

fn parse_rows(req: &ImportRequest) -> Result<Vec<ParsedRow>> {
    let format = ImportFormat::choose(req.format.as_deref(), req.data.as_bytes())?;
    Ok(read_rows(std::io::Cursor::new(req.data.clone().into_bytes()), format).collect())
}

/// Checks rows (numbered from `first_row`): fields, and logins twice in these rows (duplicates).
fn check_rows(
    parsed: Vec<ParsedRow>,
    default_pool: &str,
    first_row: usize,
) -> (Vec<ImportRow>, Vec<Option<CheckedAccount>>) {
    let mut rows = Vec::with_capacity(parsed.len());
    let mut checked: Vec<Option<CheckedAccount>> = Vec::with_capacity(parsed.len());
    let mut seen = HashSet::new();
    for (i, p) in parsed.into_iter().enumerate() {
        let (login, result) = match p {
            Ok(r) => (
                r.login.clone(),
                check_account(r, Some(default_pool)).map_err(|e| e.message),
            ),
            Err(e) => (None, Err(e)),
        };
        let mut errors = Vec::new();
        let mut duplicate = false;
        let a = match result {
            Ok(a) => {
                if !seen.insert((a.pool.clone(), a.login.clone())) {
                    duplicate = true;
                    errors.push(format!("login {} appears twice in the data", a.login));
                }
                Some(a)
            }
            Err(e) => {
                errors.push(e);
                None
            }
        };
        rows.push(ImportRow {
            row: first_row + i,
            login,
            ok: errors.is_empty(),
            duplicate,
            id: None,
            errors,
        });
        checked.push(a);
    }
    (rows, checked)
}

/// Imports accounts: every row is checked (fields, duplicates in the data and in the pool); when
/// all pass they are written in one transaction, else nothing is written.
pub async fn import_accounts(ctx: LeasingCtx<'_>, req: ImportRequest) -> Result<ImportSummary> {
    let default_pool = check_pool(req.pool.clone())?;
    let parsed = parse_rows(&req)?;
    if parsed.is_empty() {
        return Err(Error::invalid("invalid_data", "data holds no rows"));
    }
    if parsed.len() > MAX_IMPORT_ROWS {
        return Err(Error::invalid(
            "invalid_data",
            format!(
                "data holds {} rows; at most {MAX_IMPORT_ROWS}",
                parsed.len()
            ),
        ));
    }
    let (mut rows, checked) = check_rows(parsed, &default_pool, 1);
    // Logins already in their pool.
    let mut by_pool: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in checked.iter().flatten() {
        by_pool
            .entry(a.pool.clone())
            .or_default()
            .push(a.login.clone());
    }
    let mut taken = HashSet::new();
    for (pool, logins) in &by_pool {
        for login in accounts::existing_logins(ctx.pool, pool, logins).await? {
            taken.insert((pool.clone(), login));
        }
    }
    for (row, a) in rows.iter_mut().zip(&checked) {
        if let Some(a) = a
            && taken.contains(&(a.pool.clone(), a.login.clone()))
        {
            row.ok = false;
            row.duplicate = true;
            row.errors.push(format!(
                "login {} already exists in pool {}",
                a.login, a.pool
            ));
        }
    }
    let valid = rows.iter().filter(|r| r.ok).count();
    let mut summary = ImportSummary {
        total: rows.len(),
        valid,
        invalid: rows.len() - valid,
        imported: 0,
        rows,
    };
    if summary.invalid > 0 {
        return Ok(summary);
    }
    let mut new = Vec::with_capacity(checked.len());
    for a in checked.into_iter().flatten() {
        new.push(new_account(ctx, a)?);
    }
    let now = ctx.clock.now_ms();
    let ids = match accounts::insert_all(ctx.pool, &new, now).await {
        Ok(ids) => ids,
        Err(StoreError::Conflict(what)) => {
            return Err(Error::conflict(format!(
                "an account was created meanwhile ({what}); nothing was imported"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    for (row, id) in summary.rows.iter_mut().zip(ids) {
        row.id = Some(id);
    }
    summary.imported = new.len();
    tracing::info!(imported = summary.imported, "credential accounts imported");
    Ok(summary)
}

/// Imports one chunk of a stream of rows (numbered from `first_row`), writing the valid rows and
/// reporting the others: the way `poolkeeper accounts import` goes through a file of any size.
/// Unlike [`import_accounts`] it is not all-or-nothing: a login taken in its pool (before, or
/// earlier in the stream) is a duplicate row, and the rest are still created.
pub async fn import_new_rows(
    ctx: LeasingCtx<'_>,
    default_pool: Option<&str>,
    parsed: Vec<ParsedRow>,
    first_row: usize,
) -> Result<Vec<ImportRow>> {
    let default_pool = check_pool(default_pool.map(str::to_string))?;
    let (mut rows, checked) = check_rows(parsed, &default_pool, first_row);
    let mut writing = Vec::new();
    let mut new = Vec::new();
    for (i, (row, a)) in rows.iter().zip(checked).enumerate() {
        if let (true, Some(a)) = (row.ok, a) {
            writing.push(i);
            new.push(new_account(ctx, a)?);
        }
    }
    let ids = accounts::insert_new(ctx.pool, &new, ctx.clock.now_ms()).await?;
    for ((i, id), a) in writing.into_iter().zip(ids).zip(&new) {
        let row = &mut rows[i];
        match id {
            Some(id) => row.id = Some(id),
            None => {
                row.ok = false;
                row.duplicate = true;
                row.errors.push(format!(
                    "login {} already exists in pool {}",
                    a.login, a.pool
                ));
            }
        }
    }
    Ok(rows)
}

/// Filters of `GET /api/admin/accounts`.
#[derive(Debug, Default)]
pub struct AccountQuery {
    pub pool: Option<String>,
    pub status: Option<String>,
    pub search: Option<String>,
}

pub async fn list_accounts(
    ctx: LeasingCtx<'_>,
    q: AccountQuery,
    limit: i64,
    offset: i64,
) -> Result<(Vec<AccountView>, i64)> {
    let pool = match q.pool.filter(|p| !p.trim().is_empty()) {
        Some(p) => Some(check_pool(Some(p))?),
        None => None,
    };
    let status = match q.status.filter(|s| !s.is_empty()) {
        Some(s) => Some(
            AccountStatus::parse(&s)
                .ok_or_else(|| {
                    Error::invalid(
                        "invalid_status",
                        "status must be available, in_use, cooldown, quarantined or inactive",
                    )
                })?
                .as_str()
                .to_string(),
        ),
        None => None,
    };
    let search = q
        .search
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let filter = AccountFilter {
        pool,
        status,
        search,
    };
    let now = ctx.clock.now_ms();
    let (items, total) = accounts::list(
        ctx.pool,
        &filter,
        now,
        ctx.policy.cooldown_ms,
        limit,
        offset,
    )
    .await?;
    Ok((
        items
            .into_iter()
            .map(|a| view(a, now, &ctx.policy))
            .collect(),
        total,
    ))
}

/// One account with its latest usage.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountDetail {
    #[serde(flatten)]
    pub account: AccountView,
    pub recent_usage: Vec<Usage>,
}

fn account_not_found(id: i64) -> impl FnOnce(StoreError) -> Error {
    not_found(format!("no account {id}"))
}

pub async fn get_account(ctx: LeasingCtx<'_>, id: i64) -> Result<AccountDetail> {
    let a = accounts::get(ctx.pool, id)
        .await
        .map_err(account_not_found(id))?;
    let recent_usage = store::recent_usage(ctx.pool, id, RECENT_USAGE).await?;
    Ok(AccountDetail {
        account: view(a, ctx.clock.now_ms(), &ctx.policy),
        recent_usage,
    })
}

/// `PATCH /api/admin/accounts/{id}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchAccountRequest {
    pub is_active: Option<bool>,
    /// Replaces the metadata (a JSON object).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// A new password, sealed at once.
    pub password: Option<String>,
}

impl fmt::Debug for PatchAccountRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PatchAccountRequest")
            .field("is_active", &self.is_active)
            .field("metadata", &self.metadata)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

pub async fn patch_account(
    ctx: LeasingCtx<'_>,
    id: i64,
    req: PatchAccountRequest,
) -> Result<AccountView> {
    let metadata = match req.metadata {
        Some(m) => Some(check_metadata(Some(m))?),
        None => None,
    };
    let password_sealed = match req.password {
        Some(p) => Some(seal(ctx, &check_password(Some(p))?)?),
        None => None,
    };
    let patch = accounts::AccountPatch {
        is_active: req.is_active,
        metadata,
        password_sealed,
    };
    let now = ctx.clock.now_ms();
    let a = accounts::patch(ctx.pool, id, &patch, now)
        .await
        .map_err(account_not_found(id))?;
    Ok(view(a, now, &ctx.policy))
}

pub async fn reset_account(ctx: LeasingCtx<'_>, id: i64) -> Result<AccountView> {
    let now = ctx.clock.now_ms();
    let a = accounts::reset(ctx.pool, id, now)
        .await
        .map_err(account_not_found(id))?;
    Ok(view(a, now, &ctx.policy))
}

pub async fn delete_account(ctx: LeasingCtx<'_>, id: i64, force: bool) -> Result<()> {
    match accounts::delete(ctx.pool, id, force, ctx.clock.now_ms()).await {
        Ok(()) => Ok(()),
        Err(StoreError::Conflict(m)) => {
            Err(Error::new(super::ErrorKind::Conflict, "account_leased", m))
        }
        Err(e) => Err(account_not_found(id)(e)),
    }
}

/// Accounts by status now; the parts add up to `total`.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct AccountStatusCounts {
    pub total: i64,
    /// Accounts with `is_active` (available + in_use + cooldown + quarantined).
    pub active: i64,
    pub available: i64,
    pub in_use: i64,
    pub cooldown: i64,
    pub quarantined: i64,
    pub inactive: i64,
}

pub async fn status_counts(
    ctx: LeasingCtx<'_>,
    pool: Option<String>,
) -> Result<AccountStatusCounts> {
    let pool = match pool.filter(|p| !p.trim().is_empty()) {
        Some(p) => Some(check_pool(Some(p))?),
        None => None,
    };
    let rows = accounts::count_by_status(
        ctx.pool,
        pool.as_deref(),
        ctx.clock.now_ms(),
        ctx.policy.cooldown_ms,
    )
    .await?;
    let mut c = AccountStatusCounts::default();
    for (status, n) in rows {
        match AccountStatus::parse(&status) {
            Some(AccountStatus::Available) => c.available += n,
            Some(AccountStatus::InUse) => c.in_use += n,
            Some(AccountStatus::Cooldown) => c.cooldown += n,
            Some(AccountStatus::Quarantined) => c.quarantined += n,
            Some(AccountStatus::Inactive) | None => c.inactive += n,
        }
        c.total += n;
    }
    c.active = c.total - c.inactive;
    Ok(c)
}

/// The pools that hold accounts, by name.
pub async fn pool_names(ctx: LeasingCtx<'_>) -> Result<Vec<String>> {
    Ok(accounts::pool_names(ctx.pool).await?)
}

/// One group of a usage report.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageGroupRow {
    /// The day (`YYYY-MM-DD`, UTC), the account id, or the mission (`""` for none).
    pub key: String,
    pub uses: i64,
    pub successes: i64,
    /// `login_fail`, `error`, `banned` and `expired` results.
    pub failures: i64,
    /// successes / uses.
    pub success_rate: f64,
    pub mean_duration_ms: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageReport {
    pub from: i64,
    pub to: i64,
    pub group_by: String,
    pub groups: Vec<UsageGroupRow>,
}

/// Usage finished in `[from, to)` (ms; default the last 7 days), grouped by `day` (default),
/// `account` or `mission`.
pub async fn usage_report(
    ctx: LeasingCtx<'_>,
    from: Option<i64>,
    to: Option<i64>,
    group_by: Option<String>,
) -> Result<UsageReport> {
    let now = ctx.clock.now_ms();
    let to = to.unwrap_or(now.saturating_add(1));
    // Saturating: any `to` is input, and `to` near i64::MIN must be a 400, not an overflow.
    let from = from.unwrap_or(to.saturating_sub(7 * 86_400_000));
    if from >= to {
        return Err(Error::invalid("invalid_from", "from must be before to"));
    }
    let group_by = group_by.unwrap_or_else(|| "day".to_string());
    let group = match group_by.as_str() {
        "day" => UsageGroup::Day,
        "account" => UsageGroup::Account,
        "mission" => UsageGroup::Mission,
        _ => {
            return Err(Error::invalid(
                "invalid_group_by",
                "group_by must be day, account or mission",
            ));
        }
    };
    let rows = store::usage_report(ctx.pool, from, to, group).await?;
    let groups = rows
        .into_iter()
        .map(|r| {
            let key = match group {
                UsageGroup::Day => r
                    .key
                    .parse::<i64>()
                    .map(|d| {
                        crate::clock::rfc3339(d * 86_400_000)
                            .chars()
                            .take(10)
                            .collect()
                    })
                    .unwrap_or(r.key),
                _ => r.key,
            };
            UsageGroupRow {
                key,
                uses: r.uses,
                successes: r.successes,
                failures: r.failures,
                success_rate: if r.uses > 0 {
                    r.successes as f64 / r.uses as f64
                } else {
                    0.0
                },
                mean_duration_ms: r.mean_duration_ms.unwrap_or(0.0),
            }
        })
        .collect();
    Ok(UsageReport {
        from,
        to,
        group_by,
        groups,
    })
}
