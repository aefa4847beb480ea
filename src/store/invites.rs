//! Invites sent for redeem codes (`invites`, users database): recorded `pending` before the
//! provider is called, then `sent` or `failed` with what it said.

use serde::Serialize;
use sqlx::FromRow;

use super::StoreResult;
use crate::db::{UsersDb, in_transaction, on_reader, on_writer};

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

/// One invite by id.
pub async fn get(db: &UsersDb, id: i64) -> StoreResult<Option<Invite>> {
    let sql = format!("SELECT {COLUMNS} FROM invites WHERE id = $1");
    Ok(on_reader!(db, |p| sqlx::query_as(sqlx::AssertSqlSafe(
        sql.clone()
    ))
    .bind(id)
    .fetch_optional(p)
    .await)?)
}

/// The change a bulk job item makes to its invite, applied only while the invite is still in one
/// of the `from` statuses.
#[derive(Clone, Copy, Debug)]
pub struct ItemChange<'a> {
    /// Statuses the invite may be in; the caller's constants, never input.
    pub from: &'a [&'a str],
    /// The new status; `None` keeps it.
    pub to: Option<&'a str>,
    /// Counts one more provider attempt and records `error` as its outcome.
    pub attempt: bool,
    pub error: Option<&'a str>,
}

/// Records what bulk job `job_id` did to invite `invite_id`, and makes the invite's `change`, in
/// one transaction. When the invite left the `from` statuses meanwhile nothing changes and the
/// item says so. When the item was already recorded (a retried job) nothing is written. Returns
/// the item's result as stored.
pub async fn record_job_item(
    db: &UsersDb,
    job_id: &str,
    invite_id: i64,
    change: Option<ItemChange<'_>>,
    result: &str,
    now: i64,
) -> StoreResult<String> {
    let update = change.map(|c| {
        let from: Vec<String> = c.from.iter().map(|s| format!("'{s}'")).collect();
        sqlx::AssertSqlSafe(format!(
            "UPDATE invites SET status = COALESCE($2, status), attempts = attempts + $3, \
             last_error = CASE WHEN $3 = 1 THEN $4 ELSE last_error END, updated_at = $5 \
             WHERE id = $1 AND status IN ({})",
            from.join(", ")
        ))
    });
    in_transaction!(db, |tx| {
        let done: Option<String> = sqlx::query_scalar(
            "SELECT result FROM invite_job_items WHERE job_id = $1 AND invite_id = $2",
        )
        .bind(job_id)
        .bind(invite_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(done) = done {
            return Ok(done);
        }
        let mut result = result.to_string();
        if let (Some(c), Some(update)) = (change, update) {
            let n = sqlx::query(update)
                .bind(invite_id)
                .bind(c.to)
                .bind(i64::from(c.attempt))
                .bind(c.error)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                result = "skipped: the invite changed while the job ran".into();
            }
        }
        sqlx::query(
            "INSERT INTO invite_job_items (job_id, invite_id, result, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(job_id)
        .bind(invite_id)
        .bind(&result)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(result)
    })
}

/// The items bulk job `job_id` has finished, by invite id.
pub async fn job_items(db: &UsersDb, job_id: &str) -> StoreResult<Vec<(i64, String)>> {
    Ok(on_reader!(db, |p| sqlx::query_as(
        "SELECT invite_id, result FROM invite_job_items WHERE job_id = $1 ORDER BY invite_id"
    )
    .bind(job_id)
    .fetch_all(p)
    .await)?)
}

/// Marks mother `mother_id`'s `sent` invites to any of `members` (lower-case addresses)
/// `accepted`; returns how many. Reads the mother's sent invites first (few), then moves each
/// matching one with a compare-and-set, so an invite cancelled meanwhile stays cancelled.
pub async fn mark_accepted(
    db: &UsersDb,
    mother_id: i64,
    members: &std::collections::HashSet<String>,
    now: i64,
) -> StoreResult<u64> {
    let sent: Vec<(i64, String)> = on_reader!(db, |p| sqlx::query_as(
        "SELECT id, email FROM invites WHERE mother_id = $1 AND status = 'sent'"
    )
    .bind(mother_id)
    .fetch_all(p)
    .await)?;
    let mut accepted = 0;
    for (id, email) in sent {
        if !members.contains(&email.to_ascii_lowercase()) {
            continue;
        }
        accepted += on_writer!(db, |p| sqlx::query(
            "UPDATE invites SET status = 'accepted', updated_at = $2 \
             WHERE id = $1 AND status = 'sent'"
        )
        .bind(id)
        .bind(now)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
    }
    Ok(accepted)
}

/// The mothers invites went to, in id order.
pub async fn mother_ids(db: &UsersDb) -> StoreResult<Vec<i64>> {
    Ok(on_reader!(db, |p| sqlx::query_scalar(
        "SELECT DISTINCT mother_id FROM invites ORDER BY mother_id"
    )
    .fetch_all(p)
    .await)?)
}
