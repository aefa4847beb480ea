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
