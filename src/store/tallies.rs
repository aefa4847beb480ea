//! Running tallies of mothers (by status and group: how many, their seats total, used and held)
//! and of children, so the stats, the quota and the mothers list's total read a few rows instead
//! of every mother.
//!
//! Triggers on `mothers` and `children` (pool migration 0008) append a row of differences for every
//! change, in the same transaction as the change, so a tally is always the sum of its rows and
//! concurrent writers never wait on a shared total. [`compact`] folds the rows into one per key;
//! housekeeping runs it, and between runs the sums read the rows added since.

use sqlx::FromRow;

use super::StoreResult;
use crate::db::{Backend, PoolDb, in_transaction, on_reader};

/// The tally of one (status, group): mothers and their seat counters.
#[derive(Clone, Debug, Default, FromRow, PartialEq, Eq)]
pub struct MotherTally {
    pub status: String,
    pub pool_group_id: Option<i64>,
    pub mothers: i64,
    pub seats_total: i64,
    pub seats_used: i64,
    pub seats_held: i64,
}

/// Every (status, group) that has mothers, ordered by status then group.
pub async fn mothers(db: &PoolDb) -> StoreResult<Vec<MotherTally>> {
    Ok(on_reader!(db, |p| sqlx::query_as(
        "SELECT status, pool_group_id, CAST(SUM(mothers) AS BIGINT) AS mothers, \
         CAST(SUM(seats_total) AS BIGINT) AS seats_total, \
         CAST(SUM(seats_used) AS BIGINT) AS seats_used, \
         CAST(SUM(seats_held) AS BIGINT) AS seats_held \
         FROM mother_tallies GROUP BY status, pool_group_id HAVING SUM(mothers) <> 0 \
         ORDER BY status, pool_group_id"
    )
    .fetch_all(p)
    .await)?)
}

/// How many mothers have this status (any when `None`) and group (any when `None`).
pub async fn count_mothers(
    db: &PoolDb,
    status: Option<&str>,
    pool_group_id: Option<i64>,
) -> StoreResult<i64> {
    Ok(on_reader!(db, |p| sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(mothers), 0) AS BIGINT) FROM mother_tallies \
         WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR pool_group_id = $2)"
    )
    .bind(status)
    .bind(pool_group_id)
    .fetch_one(p)
    .await)?)
}

/// How many children there are, in every mother and team.
pub async fn count_children(db: &PoolDb) -> StoreResult<i64> {
    Ok(on_reader!(db, |p| sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(children), 0) AS BIGINT) FROM child_tallies"
    )
    .fetch_one(p)
    .await)?)
}

/// Folds the tally rows into one per key (and one for children), keeping every sum. Safe beside
/// writers and other compactions: on PostgreSQL the rows are deleted and their sums inserted in
/// one statement, which folds only the rows it deleted (a row committed meanwhile stays as it
/// is); on SQLite the single writer runs it alone.
pub async fn compact(db: &PoolDb) -> StoreResult<()> {
    const MOTHER_SUMS: &str = "status, pool_group_id, SUM(mothers), SUM(seats_total), \
        SUM(seats_used), SUM(seats_held)";
    const MOTHER_COLUMNS: &str =
        "status, pool_group_id, mothers, seats_total, seats_used, seats_held";
    let backend = db.0.backend();
    in_transaction!(db, |tx| {
        match backend {
            Backend::Postgres => {
                let mothers = sqlx::AssertSqlSafe(format!(
                    "WITH folded AS (DELETE FROM mother_tallies RETURNING {MOTHER_COLUMNS}) \
                     INSERT INTO mother_tallies ({MOTHER_COLUMNS}) \
                     SELECT {MOTHER_SUMS} FROM folded GROUP BY status, pool_group_id \
                     HAVING SUM(mothers) <> 0 OR SUM(seats_total) <> 0 \
                       OR SUM(seats_used) <> 0 OR SUM(seats_held) <> 0"
                ));
                sqlx::query(mothers).execute(&mut *tx).await?;
                sqlx::query(
                    "WITH folded AS (DELETE FROM child_tallies RETURNING children) \
                     INSERT INTO child_tallies (children) SELECT SUM(children) FROM folded \
                     HAVING SUM(children) <> 0",
                )
                .execute(&mut *tx)
                .await?;
            }
            Backend::Sqlite => {
                let fold = sqlx::AssertSqlSafe(format!(
                    "INSERT INTO mother_tallies ({MOTHER_COLUMNS}) \
                     SELECT {MOTHER_SUMS} FROM mother_tallies WHERE id <= $1 \
                     GROUP BY status, pool_group_id \
                     HAVING SUM(mothers) <> 0 OR SUM(seats_total) <> 0 \
                       OR SUM(seats_used) <> 0 OR SUM(seats_held) <> 0"
                ));
                let last: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM mother_tallies")
                    .fetch_one(&mut *tx)
                    .await?;
                if let Some(last) = last {
                    sqlx::query(fold).bind(last).execute(&mut *tx).await?;
                    sqlx::query("DELETE FROM mother_tallies WHERE id <= $1")
                        .bind(last)
                        .execute(&mut *tx)
                        .await?;
                }
                let last: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM child_tallies")
                    .fetch_one(&mut *tx)
                    .await?;
                if let Some(last) = last {
                    sqlx::query(
                        "INSERT INTO child_tallies (children) SELECT SUM(children) \
                         FROM child_tallies WHERE id <= $1 HAVING SUM(children) <> 0",
                    )
                    .bind(last)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("DELETE FROM child_tallies WHERE id <= $1")
                        .bind(last)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    })
}

/// The same figures as [`mothers`] and [`count_children`], counted from the rows themselves: a
/// full scan, for checks that the tallies keep up (tests, and an operator who doubts them).
pub async fn recount(db: &PoolDb) -> StoreResult<(Vec<MotherTally>, i64)> {
    let mothers = on_reader!(db, |p| sqlx::query_as(
        "SELECT status, pool_group_id, COUNT(*) AS mothers, \
         CAST(SUM(seat_limit) AS BIGINT) AS seats_total, \
         CAST(SUM(seats_used) AS BIGINT) AS seats_used, \
         CAST(SUM(seats_held) AS BIGINT) AS seats_held \
         FROM mothers GROUP BY status, pool_group_id ORDER BY status, pool_group_id"
    )
    .fetch_all(p)
    .await)?;
    let children = on_reader!(db, |p| sqlx::query_scalar("SELECT COUNT(*) FROM children")
        .fetch_one(p)
        .await)?;
    Ok((mothers, children))
}
