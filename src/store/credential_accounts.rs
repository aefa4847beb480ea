//! Credential accounts (pool database): the logins that workers lease. Only this module and
//! `store::leases` write `credential_accounts`; the sealed password is read only by
//! [`sealed_password`] and by a lease's acquire, never by a list.
//!
//! An account's status is not stored: [`STATUS_SQL`] computes it from the timestamps at query time,
//! the same rule as `domain::leases::status_at`.

use serde::Serialize;
use sqlx::FromRow;

use super::{StoreError, StoreResult};
use crate::db::{Backend, PoolDb, in_transaction, on_reader, on_writer};
use crate::domain::leases::AccountTimes;

/// An account without its password.
#[derive(Clone, Debug, FromRow, Serialize)]
pub struct Account {
    pub id: i64,
    pub pool: String,
    pub login: String,
    pub phone: Option<String>,
    /// JSON object as text.
    pub metadata: String,
    pub is_active: bool,
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

impl Account {
    pub fn times(&self) -> AccountTimes {
        AccountTimes {
            is_active: self.is_active,
            leased_until: self.leased_until,
            cooldown_until: self.cooldown_until,
            quarantine_until: self.quarantine_until,
        }
    }
}

pub(crate) const COLUMNS: &str = "id, pool, login, phone, metadata, is_active, last_used_at, \
    cooldown_until, quarantine_until, consecutive_failures, total_uses, total_successes, \
    current_lease_id, leased_until, created_at, updated_at";

/// The status of a row at `$now` with a cooldown of `$cool` ms (see `domain::leases::status_at`).
/// The caller substitutes its own parameter numbers for `{now}` and `{cool}`.
fn status_sql(now: &str, cool: &str) -> String {
    format!(
        "CASE WHEN NOT is_active THEN 'inactive' \
         WHEN leased_until IS NOT NULL AND leased_until > {now} THEN 'in_use' \
         WHEN quarantine_until IS NOT NULL AND quarantine_until > {now} THEN 'quarantined' \
         WHEN (cooldown_until IS NOT NULL AND cooldown_until > {now}) \
           OR (leased_until IS NOT NULL AND leased_until + {cool} > {now}) THEN 'cooldown' \
         ELSE 'available' END"
    )
}

/// The `WHERE` part that says an account is available at `{now}`.
pub(crate) fn available_sql(now: &str, cool: &str) -> String {
    format!(
        "is_active AND (leased_until IS NULL OR leased_until + {cool} <= {now}) \
         AND (cooldown_until IS NULL OR cooldown_until <= {now}) \
         AND (quarantine_until IS NULL OR quarantine_until <= {now})"
    )
}

pub struct NewAccount {
    pub pool: String,
    pub login: String,
    pub password_sealed: String,
    pub phone: Option<String>,
    pub metadata: String,
}

const INSERT: &str = "INSERT INTO credential_accounts \
    (pool, login, password_sealed, phone, metadata, is_active, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $5, TRUE, $6, $6)";

/// Creates an account; `Conflict` when the login is taken in its pool.
pub async fn insert(db: &PoolDb, a: &NewAccount, now: i64) -> StoreResult<Account> {
    let sql = sqlx::AssertSqlSafe(format!("{INSERT} RETURNING {COLUMNS}"));
    on_writer!(db, |p| sqlx::query_as(sql)
        .bind(&a.pool)
        .bind(&a.login)
        .bind(&a.password_sealed)
        .bind(&a.phone)
        .bind(&a.metadata)
        .bind(now)
        .fetch_one(p)
        .await
        .map_err(StoreError::from))
}

/// An import of at least this many accounts gathers PostgreSQL's planner statistics of the table.
/// An acquire walks the index `credential_accounts_pick` and stops at the first available
/// account only when the planner knows how many accounts a pool has; without statistics (a
/// fresh table, autovacuum off or not yet round) it sorts the whole pool on every acquire.
const ANALYZE_AFTER_ROWS: usize = 100;

/// Inside an import's write transaction `$tx` of `$rows` accounts: on PostgreSQL, when they are
/// [`ANALYZE_AFTER_ROWS`] or more, gathers the table's statistics.
macro_rules! analyze_after_import {
    ($db:expr, $tx:ident, $rows:expr) => {
        if $db.0.backend() == Backend::Postgres && $rows >= ANALYZE_AFTER_ROWS {
            sqlx::query("ANALYZE credential_accounts")
                .execute(&mut *$tx)
                .await?;
        }
    };
}

/// Creates all accounts in one transaction: all or none (`Conflict` on a taken login).
pub async fn insert_all(db: &PoolDb, accounts: &[NewAccount], now: i64) -> StoreResult<Vec<i64>> {
    let sql = format!("{INSERT} RETURNING id");
    in_transaction!(db, |tx| {
        let mut ids = Vec::with_capacity(accounts.len());
        for a in accounts {
            let id: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
                .bind(&a.pool)
                .bind(&a.login)
                .bind(&a.password_sealed)
                .bind(&a.phone)
                .bind(&a.metadata)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
            ids.push(id);
        }
        analyze_after_import!(db, tx, accounts.len());
        tx.commit().await?;
        Ok(ids)
    })
}

/// Creates the accounts whose login is free in their pool, in one transaction; the answer holds
/// each one's id, or `None` where the login was taken (before, or earlier in `accounts`). The
/// unique index decides, so a concurrent import of the same login cannot create it twice.
pub async fn insert_new(
    db: &PoolDb,
    accounts: &[NewAccount],
    now: i64,
) -> StoreResult<Vec<Option<i64>>> {
    let sql = format!("{INSERT} ON CONFLICT (pool, login) DO NOTHING RETURNING id");
    in_transaction!(db, |tx| {
        let mut ids = Vec::with_capacity(accounts.len());
        for a in accounts {
            let id: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
                .bind(&a.pool)
                .bind(&a.login)
                .bind(&a.password_sealed)
                .bind(&a.phone)
                .bind(&a.metadata)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            ids.push(id);
        }
        analyze_after_import!(db, tx, accounts.len());
        tx.commit().await?;
        Ok(ids)
    })
}

/// Which of `logins` already exist in `pool`.
pub async fn existing_logins(
    db: &PoolDb,
    pool: &str,
    logins: &[String],
) -> StoreResult<Vec<String>> {
    let mut found = Vec::new();
    for chunk in logins.chunks(500) {
        let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT login FROM credential_accounts WHERE pool = $1 AND login IN ({})",
            marks.join(", ")
        ));
        let rows: Vec<String> = on_reader!(db, |p| {
            let mut q = sqlx::query_scalar::<_, String>(sql).bind(pool);
            for login in chunk {
                q = q.bind(login);
            }
            q.fetch_all(p).await
        })?;
        found.extend(rows);
    }
    Ok(found)
}

pub async fn get(db: &PoolDb, id: i64) -> StoreResult<Account> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM credential_accounts WHERE id = $1"
    ));
    Ok(on_reader!(db, |p| sqlx::query_as(sql)
        .bind(id)
        .fetch_one(p)
        .await)?)
}

/// The sealed password of an account.
pub async fn sealed_password(db: &PoolDb, id: i64) -> StoreResult<String> {
    Ok(on_reader!(db, |p| sqlx::query_scalar(
        "SELECT password_sealed FROM credential_accounts WHERE id = $1"
    )
    .bind(id)
    .fetch_one(p)
    .await)?)
}

#[derive(Clone, Debug, Default)]
pub struct AccountFilter {
    pub pool: Option<String>,
    /// One of `domain::leases::AccountStatus` as text.
    pub status: Option<String>,
    /// Part of the login, case-insensitive, taken literally.
    pub search: Option<String>,
}

/// A page of accounts, by id, and the total that match.
pub async fn list(
    db: &PoolDb,
    filter: &AccountFilter,
    now: i64,
    cooldown_ms: i64,
    limit: i64,
    offset: i64,
) -> StoreResult<(Vec<Account>, i64)> {
    let login_like = filter
        .search
        .as_deref()
        .map(|term| super::contains_pattern(&term.to_lowercase()));
    let status = status_sql("$4", "$5");
    let cond = format!(
        "($1 IS NULL OR pool = $1) AND ($2 IS NULL OR {status} = $2) \
         AND ($3 IS NULL OR LOWER(login) LIKE $3 ESCAPE '\\')"
    );
    let page_sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM credential_accounts WHERE {cond} ORDER BY id LIMIT $6 OFFSET $7"
    ));
    let count_sql = sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM credential_accounts WHERE {cond}"
    ));
    let items: Vec<Account> = on_reader!(db, |p| sqlx::query_as(page_sql)
        .bind(&filter.pool)
        .bind(&filter.status)
        .bind(&login_like)
        .bind(now)
        .bind(cooldown_ms)
        .bind(limit)
        .bind(offset)
        .fetch_all(p)
        .await)?;
    let total: i64 = on_reader!(db, |p| sqlx::query_scalar(count_sql)
        .bind(&filter.pool)
        .bind(&filter.status)
        .bind(&login_like)
        .bind(now)
        .bind(cooldown_ms)
        .fetch_one(p)
        .await)?;
    Ok((items, total))
}

/// How many accounts of `pool` (all pools when `None`) are in each status at `now`.
pub async fn count_by_status(
    db: &PoolDb,
    pool: Option<&str>,
    now: i64,
    cooldown_ms: i64,
) -> StoreResult<Vec<(String, i64)>> {
    let status = status_sql("$2", "$3");
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT s, COUNT(*) FROM (SELECT {status} AS s FROM credential_accounts \
         WHERE $1 IS NULL OR pool = $1) t GROUP BY s"
    ));
    Ok(on_reader!(db, |p| sqlx::query_as(sql)
        .bind(pool)
        .bind(now)
        .bind(cooldown_ms)
        .fetch_all(p)
        .await)?)
}

/// How many accounts each pool has in each status at `now`, as (pool, status, count) ordered by
/// pool: the same single pass over the accounts as [`count_by_status`] for all pools.
pub async fn count_by_pool_and_status(
    db: &PoolDb,
    now: i64,
    cooldown_ms: i64,
) -> StoreResult<Vec<(String, String, i64)>> {
    let status = status_sql("$1", "$2");
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT pool, s, COUNT(*) FROM (SELECT pool, {status} AS s FROM credential_accounts) t \
         GROUP BY pool, s ORDER BY pool, s"
    ));
    Ok(on_reader!(db, |p| sqlx::query_as(sql)
        .bind(now)
        .bind(cooldown_ms)
        .fetch_all(p)
        .await)?)
}

/// The pools that hold accounts, by name (for filter choices).
pub async fn pool_names(db: &PoolDb) -> StoreResult<Vec<String>> {
    Ok(on_reader!(db, |p| sqlx::query_scalar(
        "SELECT DISTINCT pool FROM credential_accounts ORDER BY pool LIMIT 1000"
    )
    .fetch_all(p)
    .await)?)
}

/// The timestamps of every active account of a pool (to say when the next one comes back).
pub async fn times_in_pool(db: &PoolDb, pool: &str) -> StoreResult<Vec<AccountTimes>> {
    let rows: Vec<(Option<i64>, Option<i64>, Option<i64>)> = on_reader!(db, |p| sqlx::query_as(
        "SELECT leased_until, cooldown_until, quarantine_until FROM credential_accounts \
         WHERE pool = $1 AND is_active"
    )
    .bind(pool)
    .fetch_all(p)
    .await)?;
    Ok(rows
        .into_iter()
        .map(
            |(leased_until, cooldown_until, quarantine_until)| AccountTimes {
                is_active: true,
                leased_until,
                cooldown_until,
                quarantine_until,
            },
        )
        .collect())
}

#[derive(Clone, Debug, Default)]
pub struct AccountPatch {
    pub is_active: Option<bool>,
    pub metadata: Option<String>,
    pub password_sealed: Option<String>,
}

pub async fn patch(db: &PoolDb, id: i64, patch: &AccountPatch, now: i64) -> StoreResult<Account> {
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE credential_accounts SET is_active = COALESCE($2, is_active), \
         metadata = COALESCE($3, metadata), password_sealed = COALESCE($4, password_sealed), \
         updated_at = $5 WHERE id = $1 RETURNING {COLUMNS}"
    ));
    on_writer!(db, |p| sqlx::query_as(sql)
        .bind(id)
        .bind(patch.is_active)
        .bind(&patch.metadata)
        .bind(&patch.password_sealed)
        .bind(now)
        .fetch_one(p)
        .await
        .map_err(StoreError::from))
}

/// Clears cooldown, quarantine and failures (an open lease stays open).
pub async fn reset(db: &PoolDb, id: i64, now: i64) -> StoreResult<Account> {
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE credential_accounts SET cooldown_until = NULL, quarantine_until = NULL, \
         consecutive_failures = 0, updated_at = $2 WHERE id = $1 RETURNING {COLUMNS}"
    ));
    on_writer!(db, |p| sqlx::query_as(sql)
        .bind(id)
        .bind(now)
        .fetch_one(p)
        .await
        .map_err(StoreError::from))
}

/// Deletes an account (its leases go with it; the usage log stays). `Conflict` while a lease on it
/// is open and unexpired, unless `force`. One statement, so no acquire slips in between.
pub async fn delete(db: &PoolDb, id: i64, force: bool, now: i64) -> StoreResult<()> {
    let n = on_writer!(db, |p| sqlx::query(
        "DELETE FROM credential_accounts WHERE id = $1 \
         AND ($2 OR leased_until IS NULL OR leased_until <= $3)"
    )
    .bind(id)
    .bind(force)
    .bind(now)
    .execute(p)
    .await
    .map(|r| r.rows_affected())
    .map_err(StoreError::from))?;
    if n == 0 {
        get(db, id).await?;
        return Err(StoreError::Conflict(format!(
            "account {id} is leased; pass force=true to delete it anyway"
        )));
    }
    Ok(())
}
