//! API tokens (`api_tokens`, users database). Only hashes are stored.

use serde::Serialize;
use sqlx::FromRow;

use super::StoreResult;
use crate::db::{UsersDb, on_reader, on_writer};

#[derive(Clone, Debug, FromRow, Serialize, utoipa::ToSchema)]
pub struct ApiToken {
    pub id: i64,
    pub name: String,
    pub scope: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

const COLUMNS: &str = "id, name, scope, created_at, last_used_at, revoked_at";

pub async fn create(
    db: &UsersDb,
    name: &str,
    scope: &str,
    token_hash: &str,
    now: i64,
) -> StoreResult<ApiToken> {
    Ok(on_writer!(db, |p| sqlx::query_as(
        "INSERT INTO api_tokens (name, scope, token_hash, created_at) VALUES ($1, $2, $3, $4) \
         RETURNING id, name, scope, created_at, last_used_at, revoked_at"
    )
    .bind(name)
    .bind(scope)
    .bind(token_hash)
    .bind(now)
    .fetch_one(p)
    .await)?)
}

pub async fn list(db: &UsersDb) -> StoreResult<Vec<ApiToken>> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM api_tokens ORDER BY id"));
    Ok(on_reader!(db, |p| sqlx::query_as(sql).fetch_all(p).await)?)
}

/// Which tokens a page lists.
#[derive(Clone, Debug, Default)]
pub struct TokenFilter<'a> {
    pub scope: Option<&'a str>,
    pub include_revoked: bool,
}

/// One page of tokens, newest first, and how many match in all.
pub async fn list_page(
    db: &UsersDb,
    filter: &TokenFilter<'_>,
    limit: i64,
    offset: i64,
) -> StoreResult<(Vec<ApiToken>, i64)> {
    // `$1 IS NULL OR ...` keeps one statement per query for every filter combination.
    let condition = "($1 IS NULL OR scope = $1) AND ($2 OR revoked_at IS NULL)";
    let items_sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_tokens WHERE {condition} ORDER BY id DESC LIMIT $3 OFFSET $4"
    ));
    let count_sql =
        sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM api_tokens WHERE {condition}"));
    let items = on_reader!(db, |p| sqlx::query_as(items_sql)
        .bind(filter.scope)
        .bind(filter.include_revoked)
        .bind(limit)
        .bind(offset)
        .fetch_all(p)
        .await)?;
    let total = on_reader!(db, |p| sqlx::query_scalar(count_sql)
        .bind(filter.scope)
        .bind(filter.include_revoked)
        .fetch_one(p)
        .await)?;
    Ok((items, total))
}

/// The unrevoked token with this hash.
pub async fn find_active(db: &UsersDb, token_hash: &str) -> StoreResult<Option<ApiToken>> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL"
    ));
    Ok(on_reader!(db, |p| sqlx::query_as(sql)
        .bind(token_hash)
        .fetch_optional(p)
        .await)?)
}

/// How often a token's `last_used_at` is written at most.
pub const TOUCH_INTERVAL_MS: i64 = 60_000;

/// Records use at most once a minute per token, so reads do not turn into a write per request.
pub async fn touch(db: &UsersDb, id: i64, now: i64) -> StoreResult<()> {
    on_writer!(db, |p| {
        sqlx::query(
        "UPDATE api_tokens SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)"
    )
    .bind(id)
    .bind(now)
    .bind(now - TOUCH_INTERVAL_MS)
    .execute(p)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// Revokes the active token with this id; `NotFound` when there is none.
pub async fn revoke_by_id(db: &UsersDb, id: i64, now: i64) -> StoreResult<ApiToken> {
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING {COLUMNS}"
    ));
    Ok(on_writer!(db, |p| sqlx::query_as(sql)
        .bind(id)
        .bind(now)
        .fetch_one(p)
        .await)?)
}

/// Revokes the active token with this name; `NotFound` when there is none.
pub async fn revoke_by_name(db: &UsersDb, name: &str, now: i64) -> StoreResult<ApiToken> {
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE api_tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL RETURNING {COLUMNS}"
    ));
    Ok(on_writer!(db, |p| sqlx::query_as(sql)
        .bind(name)
        .bind(now)
        .fetch_one(p)
        .await)?)
}
