//! Bulk filling of the pool database for `poolkeeper bench pool` only: big multi-row inserts in
//! large transactions, far faster than creating mothers one by one. Seat counters are set in the
//! same transaction as the seats they describe, as `store::seats` would.

use super::StoreResult;
use crate::db::{PoolDb, in_transaction, on_reader, on_writer};

/// Mothers per transaction; each gets 7 seats and one team.
pub const BATCH: i64 = 1000;
/// Rows per multi-row INSERT (5 binds each, well under every backend's bind limit).
const ROWS_PER_INSERT: usize = 500;

pub async fn count_mothers(db: &PoolDb) -> StoreResult<i64> {
    Ok(on_reader!(db, |p| sqlx::query_scalar(
        "SELECT COUNT(*) FROM mothers"
    )
    .fetch_one(p)
    .await)?)
}

/// Inserts mothers `first..first + count` named `bench-NNNNNNN`, each with `seats` seats (every third
/// mother has two used) and one team, all sharing one sealed credential.
pub async fn insert_mothers(
    db: &PoolDb,
    first: i64,
    count: i64,
    seats: i64,
    sealed: &str,
    now: i64,
) -> StoreResult<()> {
    let statuses = ["active", "active", "active", "invalid", "disabled"];
    in_transaction!(db, |tx| {
        let mut ids: Vec<i64> = Vec::with_capacity(count as usize);
        let numbers: Vec<i64> = (first..first + count).collect();
        for part in numbers.chunks(ROWS_PER_INSERT) {
            let values: Vec<String> = (0..part.len())
                .map(|i| {
                    let b = i * 5;
                    format!(
                        "(${}, 'sim', '{{}}', ${}, ${}, ${}, ${}, 0, '', $1, $1)",
                        b + 2,
                        b + 3,
                        b + 4,
                        b + 5,
                        b + 6
                    )
                })
                .collect();
            let sql = sqlx::AssertSqlSafe(format!(
                "INSERT INTO mothers (name, provider, provider_config, credential_sealed, status, \
                 seat_limit, seats_used, seats_held, notes, created_at, updated_at) VALUES {} RETURNING id",
                values.join(", ")
            ));
            let mut q = sqlx::query_scalar::<_, i64>(sql).bind(now);
            for n in part {
                let used: i64 = if n % 3 == 0 { 2.min(seats) } else { 0 };
                q = q
                    .bind(format!("bench-{n:07}"))
                    .bind(sealed)
                    .bind(statuses[(*n as usize) % statuses.len()])
                    .bind(seats)
                    .bind(used);
            }
            ids.extend(q.fetch_all(&mut *tx).await?);
        }
        let (Some(lo), Some(hi)) = (ids.iter().min().copied(), ids.iter().max().copied()) else {
            return Ok(());
        };
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT CAST(1 AS BIGINT) UNION ALL SELECT i + 1 FROM n WHERE i < $3) \
             INSERT INTO seats (mother_id, seat_no, status, holder_email, updated_at) \
             SELECT m.id, n.i, CASE WHEN n.i <= m.seats_used THEN 'used' ELSE 'free' END, \
             CASE WHEN n.i <= m.seats_used THEN m.name || '-' || n.i || '@bench.example' END, $4 \
             FROM mothers m CROSS JOIN n WHERE m.id BETWEEN $1 AND $2",
        )
        .bind(lo)
        .bind(hi)
        .bind(seats)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO teams (mother_id, name, is_enabled, is_default, created_at) \
             SELECT id, 'default', TRUE, TRUE, $3 FROM mothers WHERE id BETWEEN $1 AND $2",
        )
        .bind(lo)
        .bind(hi)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    })
}

/// Gathers planner statistics after a fill, as autovacuum would soon after a bulk load (without
/// them PostgreSQL guesses row counts for the freshly filled tables). SQLite plans without them.
pub async fn analyze(db: &PoolDb) -> StoreResult<()> {
    if db.database().backend() == crate::db::Backend::Postgres {
        on_writer!(db, |p| sqlx::query("ANALYZE").execute(p).await.map(|_| ()))?;
    }
    Ok(())
}
