//! Daily seat snapshots per pool group (pool database), for the dashboard's "seats used over time"
//! chart. Only this module writes `pool_seat_snapshots`; a snapshot is taken once per (UTC day,
//! group) and never updated, so every process may try to take it.

use serde::Serialize;
use sqlx::FromRow;

use super::StoreResult;
use crate::db::{PoolDb, on_reader, on_writer};

#[derive(Clone, Debug, FromRow, Serialize, PartialEq, Eq)]
pub struct SeatSnapshot {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    pub pool_group_id: i64,
    pub seats_total: i64,
    pub seats_used: i64,
    pub seats_held: i64,
    pub taken_at: i64,
}

/// Takes `day`'s snapshot of every group that has none yet (the seat counters of its active
/// mothers, summed); returns how many rows it wrote. A second call on the same day writes nothing
/// for the groups it already has, and reads no mother: only groups without a row are summed.
pub async fn take(db: &PoolDb, day: &str, now: i64) -> StoreResult<u64> {
    // The WHERE clause also keeps SQLite from reading ON CONFLICT as part of the SELECT; ON
    // CONFLICT settles two processes taking the same snapshot at once.
    Ok(on_writer!(db, |p| {
        sqlx::query(
        "INSERT INTO pool_seat_snapshots (day, pool_group_id, seats_total, seats_used, seats_held, taken_at) \
         SELECT $1, g.id, CAST(COALESCE(SUM(m.seat_limit), 0) AS BIGINT), \
                CAST(COALESCE(SUM(m.seats_used), 0) AS BIGINT), \
                CAST(COALESCE(SUM(m.seats_held), 0) AS BIGINT), $2 \
         FROM pool_groups g LEFT JOIN mothers m ON m.pool_group_id = g.id AND m.status = 'active' \
         WHERE NOT EXISTS (SELECT 1 FROM pool_seat_snapshots s WHERE s.day = $1 AND s.pool_group_id = g.id) \
         GROUP BY g.id \
         ON CONFLICT (day, pool_group_id) DO NOTHING"
    )
    .bind(day)
    .bind(now)
    .execute(p)
    .await
    .map(|r| r.rows_affected())
    })?)
}

/// Snapshots of days from `first_day` on (`YYYY-MM-DD`), oldest first, at most `limit` rows.
pub async fn since(db: &PoolDb, first_day: &str, limit: i64) -> StoreResult<Vec<SeatSnapshot>> {
    Ok(on_reader!(db, |p| sqlx::query_as(
        "SELECT day, pool_group_id, seats_total, seats_used, seats_held, taken_at \
         FROM pool_seat_snapshots WHERE day >= $1 ORDER BY day, pool_group_id LIMIT $2"
    )
    .bind(first_day)
    .bind(limit)
    .fetch_all(p)
    .await)?)
}
