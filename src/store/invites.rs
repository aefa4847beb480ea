//! Invites sent for redeem codes (`invites`, users database): recorded `pending` before the
//! provider is called, then `sent` or `failed` with what it said.

use serde::Serialize;
use sqlx::FromRow;

use super::StoreResult;
use crate::db::{UsersDb, on_reader, on_writer};

#[derive(Clone, Debug, FromRow, Serialize, utoipa::ToSchema)]
pub struct Invite {
    pub id: i64,
    pub email: String,
    pub code_id: Option<i64>,
    pub mother_id: i64,
    pub team_id: i64,
    pub seat_id: Option<i64>,
    /// `pending`, `sent`, `accepted`, `failed`, `cancelled` or `removed`.
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, email, code_id, mother_id, team_id, seat_id, status, attempts, \
    last_error, created_at, updated_at";

/// Where a new invite goes.
pub struct NewInvite<'a> {
    pub email: &'a str,
    pub code_id: Option<i64>,
    pub mother_id: i64,
    pub team_id: i64,
    pub seat_id: Option<i64>,
}

/// Records an invite about to be sent (`pending`, first attempt); returns its id.
pub async fn insert(db: &UsersDb, new: &NewInvite<'_>, now: i64) -> StoreResult<i64> {
    Ok(on_writer!(db, |p| sqlx::query_scalar(
        "INSERT INTO invites (email, code_id, mother_id, team_id, seat_id, status, attempts, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'pending', 1, $6, $6) RETURNING id"
    )
    .bind(new.email)
    .bind(new.code_id)
    .bind(new.mother_id)
    .bind(new.team_id)
    .bind(new.seat_id)
    .bind(now)
    .fetch_one(p)
    .await)?)
}

/// Records what became of an invite: `sent`, or `failed` with the reason.
pub async fn finish(
    db: &UsersDb,
    id: i64,
    status: &str,
    error: Option<&str>,
    now: i64,
) -> StoreResult<()> {
    on_writer!(db, |p| sqlx::query(
        "UPDATE invites SET status = $2, last_error = $3, updated_at = $4 WHERE id = $1"
    )
    .bind(id)
    .bind(status)
    .bind(error)
    .bind(now)
    .execute(p)
    .await
    .map(drop))?;
    Ok(())
}

/// The invites a code led to, oldest first.
pub async fn for_code(db: &UsersDb, code_id: i64) -> StoreResult<Vec<Invite>> {
    let sql = format!("SELECT {COLUMNS} FROM invites WHERE code_id = $1 ORDER BY id");
    Ok(on_reader!(db, |p| sqlx::query_as(sqlx::AssertSqlSafe(
        sql.clone()
    ))
    .bind(code_id)
    .fetch_all(p)
    .await)?)
}

/// Which invites a list shows.
#[derive(Clone, Debug, Default)]
pub struct InviteFilter {
    pub status: Option<String>,
    /// Part of the address, case-insensitive.
    pub email: Option<String>,
    pub mother_id: Option<i64>,
}

/// A page of invites, newest first, and how many match.
pub async fn list(
    db: &UsersDb,
    f: &InviteFilter,
    limit: i64,
    offset: i64,
) -> StoreResult<(Vec<Invite>, i64)> {
    let cond = "(CAST($1 AS TEXT) IS NULL OR status = $1) \
        AND (CAST($2 AS TEXT) IS NULL OR LOWER(email) LIKE $2 ESCAPE '\\') \
        AND (CAST($3 AS BIGINT) IS NULL OR mother_id = $3)";
    let sql =
        format!("SELECT {COLUMNS} FROM invites WHERE {cond} ORDER BY id DESC LIMIT $4 OFFSET $5");
    let count = format!("SELECT COUNT(*) FROM invites WHERE {cond}");
    let email = f
        .email
        .as_deref()
        .map(|e| super::contains_pattern(&e.to_lowercase()));
    Ok(on_reader!(db, |p| {
        let rows: Vec<Invite> = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(&f.status)
            .bind(&email)
            .bind(f.mother_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(p)
            .await?;
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count.clone()))
            .bind(&f.status)
            .bind(&email)
            .bind(f.mother_id)
            .fetch_one(p)
            .await?;
        Ok::<_, sqlx::Error>((rows, total))
    })?)
}

/// Counts one more attempt at an invite (a resend) and records its outcome.
pub async fn record_attempt(
    db: &UsersDb,
    id: i64,
    status: &str,
    error: Option<&str>,
    now: i64,
) -> StoreResult<()> {
    on_writer!(db, |p| sqlx::query(
        "UPDATE invites SET attempts = attempts + 1, status = $2, last_error = $3, \
         updated_at = $4 WHERE id = $1"
    )
    .bind(id)
    .bind(status)
    .bind(error)
    .bind(now)
    .execute(p)
    .await
    .map(drop))?;
    Ok(())
}

/// Invites by status, for the stats answer.
pub async fn count_by_status(db: &UsersDb) -> StoreResult<Vec<(String, i64)>> {
    Ok(on_reader!(db, |p| sqlx::query_as(
        "SELECT status, COUNT(*) FROM invites GROUP BY status ORDER BY status"
    )
    .fetch_all(p)
    .await)?)
}
