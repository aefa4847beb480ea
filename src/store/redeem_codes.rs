//! Redeem codes (`redeem_codes`, users database). Only a SHA-256 of each code is stored.
//!
//! Every status change is one compare-and-set statement: `unused -> reserved` when a redeem
//! starts, `reserved -> used` when its invite went out, `reserved -> unused` when it failed. Of two
//! redeems racing for one code, the database lets exactly one reserve it.

use serde::Serialize;
use sqlx::FromRow;

use super::{StoreError, StoreResult, contains_pattern};
use crate::db::{Backend, UsersDb, in_transaction, on_reader, on_writer};

#[derive(Clone, Debug, FromRow, Serialize, utoipa::ToSchema)]
pub struct RedeemCode {
    pub id: i64,
    /// The first characters of the code, for display and search.
    pub prefix: String,
    pub batch_id: String,
    pub pool_group_id: Option<i64>,
    /// `unused`, `reserved`, `used`, `expired` or `disabled`.
    pub status: String,
    pub expires_at: Option<i64>,
    pub used_by_email: Option<String>,
    pub used_at: Option<i64>,
    /// The mother and team the code placed its user in.
    pub mother_id: Option<i64>,
    pub team_id: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, prefix, batch_id, pool_group_id, status, expires_at, used_by_email, \
    used_at, mother_id, team_id, created_at, updated_at";

/// A new code as stored.
pub struct NewCode {
    pub code_hash: String,
    pub prefix: String,
}

/// Rows per multi-row insert (well under SQLite's bound-parameter limit).
const INSERT_CHUNK: usize = 200;

/// Stores a batch of codes in one transaction: all of them or none.
pub async fn insert_batch(
    db: &UsersDb,
    codes: &[NewCode],
    batch_id: &str,
    pool_group_id: Option<i64>,
    expires_at: Option<i64>,
    now: i64,
) -> StoreResult<()> {
    in_transaction!(db, |tx| {
        for chunk in codes.chunks(INSERT_CHUNK) {
            let mut sql = String::from(
                "INSERT INTO redeem_codes (code_hash, prefix, batch_id, pool_group_id, status, \
                 expires_at, created_at, updated_at) VALUES ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                let n = i * 2;
                sql.push_str(&format!(
                    "(${}, ${}, $1, $2, 'unused', $3, $4, $4)",
                    n + 5,
                    n + 6
                ));
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(batch_id)
                .bind(pool_group_id)
                .bind(expires_at)
                .bind(now);
            for c in chunk {
                q = q.bind(&c.code_hash).bind(&c.prefix);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    })
}

/// Codes that still promise a seat (`unused` or `reserved`), of one group or all.
pub async fn open_count(db: &UsersDb, pool_group_id: Option<i64>) -> StoreResult<i64> {
    Ok(on_reader!(db, |p| sqlx::query_scalar(
        "SELECT COUNT(*) FROM redeem_codes WHERE status IN ('unused', 'reserved') \
         AND (CAST($1 AS BIGINT) IS NULL OR pool_group_id = $1)"
    )
    .bind(pool_group_id)
    .fetch_one(p)
    .await)?)
}

/// A code a redeem has reserved.
#[derive(Clone, Debug, FromRow)]
pub struct Reserved {
    pub id: i64,
    pub pool_group_id: Option<i64>,
}

/// Reserves an unused, unexpired code for `email` until `until`. `None` when the code is unknown
/// or not redeemable now.
pub async fn reserve(
    db: &UsersDb,
    code_hash: &str,
    email: &str,
    until: i64,
    now: i64,
) -> StoreResult<Option<Reserved>> {
    Ok(on_writer!(db, |p| sqlx::query_as(
        "UPDATE redeem_codes SET status = 'reserved', reserved_by_email = $2, \
         reserved_until = $3, updated_at = $4 \
         WHERE code_hash = $1 AND status = 'unused' AND (expires_at IS NULL OR expires_at > $4) \
         RETURNING id, pool_group_id"
    )
    .bind(code_hash)
    .bind(email)
    .bind(until)
    .bind(now)
    .fetch_optional(p)
    .await)?)
}

/// The code with this hash, whatever its status.
pub async fn find(db: &UsersDb, code_hash: &str) -> StoreResult<Option<RedeemCode>> {
    let sql = format!("SELECT {COLUMNS} FROM redeem_codes WHERE code_hash = $1");
    Ok(on_reader!(db, |p| sqlx::query_as(sqlx::AssertSqlSafe(
        sql.clone()
    ))
    .bind(code_hash)
    .fetch_optional(p)
    .await)?)
}

/// `reserved -> used`: the invite `invite_id` went out to `email` in `team_id` of `mother_id`.
/// The invite is marked `sent` in the same transaction, so the code and its invite never
/// disagree (the one place this module writes `invites`: the two rows are one step of a redeem).
pub async fn mark_used(
    db: &UsersDb,
    id: i64,
    invite_id: i64,
    email: &str,
    mother_id: i64,
    team_id: i64,
    now: i64,
) -> StoreResult<()> {
    // SQLite runs both in one round trip; PostgreSQL in one statement.
    let sql = match db.0.backend() {
        Backend::Sqlite => {
            "UPDATE invites SET status = 'sent', last_error = NULL, updated_at = $3 WHERE id = $6; \
             UPDATE redeem_codes SET status = 'used', used_by_email = $2, used_at = $3, \
             mother_id = $4, team_id = $5, reserved_until = NULL, updated_at = $3 \
             WHERE id = $1 AND status = 'reserved' RETURNING id"
        }
        Backend::Postgres => {
            "WITH sent AS (UPDATE invites SET status = 'sent', last_error = NULL, updated_at = $3 \
               WHERE id = $6) \
             UPDATE redeem_codes SET status = 'used', used_by_email = $2, used_at = $3, \
             mother_id = $4, team_id = $5, reserved_until = NULL, updated_at = $3 \
             WHERE id = $1 AND status = 'reserved' RETURNING id"
        }
    };
    in_transaction!(db, |tx| {
        // `fetch_all`: SQLite's statements run only as far as the rows are read.
        let used: Vec<i64> = sqlx::query_scalar(sql)
            .bind(id)
            .bind(email)
            .bind(now)
            .bind(mother_id)
            .bind(team_id)
            .bind(invite_id)
            .fetch_all(&mut *tx)
            .await?;
        if used.is_empty() {
            return Err(StoreError::Conflict(format!("code {id} is not reserved")));
        }
        tx.commit().await?;
        Ok(())
    })
}

/// `reserved -> unused`: the redeem did not place anyone.
pub async fn unreserve(db: &UsersDb, id: i64, now: i64) -> StoreResult<()> {
    on_writer!(db, |p| sqlx::query(
        "UPDATE redeem_codes SET status = 'unused', reserved_by_email = NULL, \
         reserved_until = NULL, updated_at = $2 WHERE id = $1 AND status = 'reserved'"
    )
    .bind(id)
    .bind(now)
    .execute(p)
    .await
    .map(drop))?;
    Ok(())
}

/// Maintenance after a crash: reservations past `reserved_until` end. A code with an invite marked
/// `sent` becomes `used` (a guard: [`mark_used`] writes the two together); any other returns to
/// `unused`, and its invites still `pending` are marked `failed`. Returns `(used, unused)`.
pub async fn settle_stale_reservations(db: &UsersDb, now: i64) -> StoreResult<(u64, u64)> {
    in_transaction!(db, |tx| {
        let used = sqlx::query(
            "UPDATE redeem_codes SET status = 'used', used_at = $1, updated_at = $1, \
             used_by_email = reserved_by_email, reserved_until = NULL, \
             mother_id = (SELECT i.mother_id FROM invites i WHERE i.code_id = redeem_codes.id \
                          AND i.status = 'sent' ORDER BY i.id DESC LIMIT 1), \
             team_id = (SELECT i.team_id FROM invites i WHERE i.code_id = redeem_codes.id \
                        AND i.status = 'sent' ORDER BY i.id DESC LIMIT 1) \
             WHERE status = 'reserved' AND reserved_until < $1 AND EXISTS \
             (SELECT 1 FROM invites i WHERE i.code_id = redeem_codes.id AND i.status = 'sent')",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "UPDATE invites SET status = 'failed', last_error = 'abandoned: the redeem did not \
             finish', updated_at = $1 WHERE status = 'pending' AND code_id IN (SELECT id FROM \
             redeem_codes WHERE status = 'reserved' AND reserved_until < $1)",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let unused = sqlx::query(
            "UPDATE redeem_codes SET status = 'unused', reserved_by_email = NULL, \
             reserved_until = NULL, updated_at = $1 \
             WHERE status = 'reserved' AND reserved_until < $1",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok((used, unused))
    })
}

/// Unused codes past their `expires_at` become `expired`; returns how many.
pub async fn expire(db: &UsersDb, now: i64) -> StoreResult<u64> {
    Ok(on_writer!(db, |p| sqlx::query(
        "UPDATE redeem_codes SET status = 'expired', updated_at = $1 \
         WHERE status = 'unused' AND expires_at IS NOT NULL AND expires_at <= $1"
    )
    .bind(now)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?)
}

/// Unused codes of a batch: what disabling the batch would change.
pub async fn count_unused_in_batch(db: &UsersDb, batch_id: &str) -> StoreResult<i64> {
    Ok(on_reader!(db, |p| sqlx::query_scalar(
        "SELECT COUNT(*) FROM redeem_codes WHERE batch_id = $1 AND status = 'unused'"
    )
    .bind(batch_id)
    .fetch_one(p)
    .await)?)
}

/// The newest `limit` batch ids, newest first (for a batch filter).
pub async fn recent_batches(db: &UsersDb, limit: i64) -> StoreResult<Vec<String>> {
    Ok(on_reader!(db, |p| sqlx::query_scalar(
        "SELECT batch_id FROM redeem_codes GROUP BY batch_id ORDER BY MAX(id) DESC LIMIT $1"
    )
    .bind(limit)
    .fetch_all(p)
    .await)?)
}

/// Which codes `disable` turns off.
pub enum Selection<'a> {
    Ids(&'a [i64]),
    Batch(&'a str),
}

/// Disables the unused codes of a selection; returns how many.
pub async fn disable(db: &UsersDb, which: Selection<'_>, now: i64) -> StoreResult<u64> {
    Ok(on_writer!(db, |p| match which {
        Selection::Ids(ids) => {
            let list: Vec<String> = ids.iter().map(i64::to_string).collect();
            // The ids are numbers parsed from the request, not text.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE redeem_codes SET status = 'disabled', updated_at = $1 \
                 WHERE status = 'unused' AND id IN ({})",
                list.join(", ")
            )))
            .bind(now)
            .execute(p)
            .await
        }
        Selection::Batch(batch) => {
            sqlx::query(
                "UPDATE redeem_codes SET status = 'disabled', updated_at = $1 \
                 WHERE status = 'unused' AND batch_id = $2",
            )
            .bind(now)
            .bind(batch)
            .execute(p)
            .await
        }
    }
    .map(|r| r.rows_affected()))?)
}

/// Which codes a list shows.
#[derive(Clone, Debug, Default)]
pub struct CodeFilter {
    pub status: Option<String>,
    pub batch_id: Option<String>,
    /// Found in the displayed prefix or in the address that used the code.
    pub search: Option<String>,
}

/// A page of codes, newest first, and how many match.
pub async fn list(
    db: &UsersDb,
    f: &CodeFilter,
    limit: i64,
    offset: i64,
) -> StoreResult<(Vec<RedeemCode>, i64)> {
    let cond = "(CAST($1 AS TEXT) IS NULL OR status = $1) \
        AND (CAST($2 AS TEXT) IS NULL OR batch_id = $2) \
        AND (CAST($3 AS TEXT) IS NULL OR prefix LIKE $3 ESCAPE '\\' \
             OR used_by_email LIKE $3 ESCAPE '\\')";
    let sql = format!(
        "SELECT {COLUMNS} FROM redeem_codes WHERE {cond} ORDER BY id DESC LIMIT $4 OFFSET $5"
    );
    let count = format!("SELECT COUNT(*) FROM redeem_codes WHERE {cond}");
    let search = f.search.as_deref().map(contains_pattern);
    Ok(on_reader!(db, |p| {
        let rows: Vec<RedeemCode> = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(&f.status)
            .bind(&f.batch_id)
            .bind(&search)
            .bind(limit)
            .bind(offset)
            .fetch_all(p)
            .await?;
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count.clone()))
            .bind(&f.status)
            .bind(&f.batch_id)
            .bind(&search)
            .fetch_one(p)
            .await?;
        Ok::<_, sqlx::Error>((rows, total))
    })?)
}

/// Codes by status, for the stats answer.
pub async fn count_by_status(db: &UsersDb) -> StoreResult<Vec<(String, i64)>> {
    Ok(on_reader!(db, |p| sqlx::query_as(
        "SELECT status, COUNT(*) FROM redeem_codes GROUP BY status ORDER BY status"
    )
    .fetch_all(p)
    .await)?)
}
