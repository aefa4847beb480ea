//! The dashboard's aggregates: each is one query that counts or sums through an index, or reads a
//! bounded number of rows (`LIMIT`), never a whole table into memory. Pool-database and
//! users-database figures are separate functions on their own handles; `service::overview` puts
//! them together. This module only reads.

use serde::Serialize;
use sqlx::FromRow;

use super::StoreResult;
use crate::db::{PoolDb, UsersDb, on_reader};

/// Mothers of one group (`None`: in no group) with one status, and their seat counters summed.
#[derive(Clone, Debug, FromRow)]
pub struct GroupStatusSeats {
    pub pool_group_id: Option<i64>,
    pub status: String,
    pub mothers: i64,
    pub seats_total: i64,
    pub seats_used: i64,
    pub seats_held: i64,
}

/// Per (group, mother status): mothers and seats. Reads the covering index `mothers_seat_counters`.
pub async fn mothers_by_group_and_status(db: &PoolDb) -> StoreResult<Vec<GroupStatusSeats>> {
    Ok(on_reader!(db, |p| sqlx::query_as(
        "SELECT pool_group_id, status, COUNT(*) AS mothers, \
         CAST(COALESCE(SUM(seat_limit), 0) AS BIGINT) AS seats_total, \
         CAST(COALESCE(SUM(seats_used), 0) AS BIGINT) AS seats_used, \
         CAST(COALESCE(SUM(seats_held), 0) AS BIGINT) AS seats_held \
         FROM mothers GROUP BY pool_group_id, status"
    )
    .fetch_all(p)
    .await)?)
}

/// The first `limit` pool groups by name: (id, name).
pub async fn groups(db: &PoolDb, limit: i64) -> StoreResult<Vec<(i64, String)>> {
    Ok(on_reader!(db, |p| sqlx::query_as(
        "SELECT id, name FROM pool_groups ORDER BY name LIMIT $1"
    )
    .bind(limit)
    .fetch_all(p)
    .await)?)
}

/// The latest sync session of a group.
#[derive(Clone, Debug, FromRow, Serialize)]
pub struct LastSync {
    pub pool_group_id: i64,
    pub session_id: String,
    pub sync_type: String,
    pub status: String,
    pub total_instances: i64,
    pub successful: i64,
    pub failed: i64,
    pub started_at: i64,
    pub completed_at: Option<i64>,
}

/// The latest session of each group (groups without one are missing). One index probe per group
/// (`sync_sessions_group_started`).
pub async fn last_sync_per_group(db: &PoolDb) -> StoreResult<Vec<LastSync>> {
    Ok(on_reader!(db, |p| sqlx::query_as(
        "SELECT g.id AS pool_group_id, s.session_id, s.sync_type, s.status, s.total_instances, \
         s.successful, s.failed, s.started_at, s.completed_at \
         FROM pool_groups g JOIN sync_sessions s ON s.session_id = ( \
             SELECT x.session_id FROM sync_sessions x WHERE x.pool_group_id = g.id \
             ORDER BY x.started_at DESC, x.session_id DESC LIMIT 1)"
    )
    .fetch_all(p)
    .await)?)
}

/// A mother that needs someone to look at her.
#[derive(Clone, Debug, FromRow, Serialize)]
pub struct AttentionMother {
    pub id: i64,
    pub name: String,
    pub status: String,
    /// Failed sync records since the cut-off (0 for an invalid mother without failures).
    pub failures: i64,
    /// When the latest of them failed, or when the mother was last changed.
    pub at: i64,
}

/// Mothers marked invalid (their credential was refused), newest change first, at most `limit`.
pub async fn invalid_mothers(db: &PoolDb, limit: i64) -> StoreResult<Vec<AttentionMother>> {
    Ok(on_reader!(db, |p| sqlx::query_as(
        "SELECT id, name, status, CAST(0 AS BIGINT) AS failures, updated_at AS at \
         FROM mothers WHERE status = 'invalid' ORDER BY updated_at DESC, id DESC LIMIT $1"
    )
    .bind(limit)
    .fetch_all(p)
    .await)?)
}

/// Mothers with failed sync records since `since` and no successful sync after the latest of
/// them, latest failure first, at most `limit`. Reads the `sync_records_failed` index range.
pub async fn failing_mothers(
    db: &PoolDb,
    since: i64,
    limit: i64,
) -> StoreResult<Vec<AttentionMother>> {
    Ok(on_reader!(db, |p| sqlx::query_as(
        "SELECT m.id, m.name, m.status, f.failures, f.at FROM ( \
             SELECT mother_id, COUNT(*) AS failures, MAX(completed_at) AS at FROM sync_records \
             WHERE status = 'failed' AND completed_at >= $1 GROUP BY mother_id) f \
         JOIN mothers m ON m.id = f.mother_id \
         WHERE m.last_synced_at IS NULL OR m.last_synced_at < f.at \
         ORDER BY f.at DESC, m.id DESC LIMIT $2"
    )
    .bind(since)
    .bind(limit)
    .fetch_all(p)
    .await)?)
}

/// The job queue at a glance.
#[derive(Clone, Debug, Default, FromRow, Serialize)]
pub struct QueueHealth {
    pub pending: i64,
    pub running: i64,
    /// Jobs that ended `failed` since the cut-off.
    pub failed_recently: i64,
    /// The earliest due time (`run_at`) of a pending job that is due, if any.
    pub oldest_due: Option<i64>,
}

/// Counts of the live queue (the small hot table) and of failures since `since` (an index range).
pub async fn queue_health(db: &UsersDb, now: i64, since: i64) -> StoreResult<QueueHealth> {
    Ok(on_reader!(db, |p| {
        sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM job_queue WHERE status = 'pending') AS pending, \
         (SELECT COUNT(*) FROM job_queue WHERE status = 'running') AS running, \
         (SELECT COUNT(*) FROM job_history WHERE finished_at >= $2 AND status = 'failed') AS failed_recently, \
         (SELECT MIN(run_at) FROM job_queue WHERE status = 'pending' AND run_at <= $1) AS oldest_due"
    )
    .bind(now)
    .bind(since)
    .fetch_one(p)
    .await
    })?)
}

/// Jobs that finished in `[from, to)`, counted per hour since `from` and per final status:
/// (hour index, status, count).
pub async fn finished_per_hour(
    db: &UsersDb,
    from: i64,
    to: i64,
) -> StoreResult<Vec<(i64, String, i64)>> {
    Ok(on_reader!(db, |p| sqlx::query_as(
        "SELECT CAST((finished_at - $1) / 3600000 AS BIGINT) AS hour, status, COUNT(*) \
         FROM job_history WHERE finished_at >= $1 AND finished_at < $2 \
         GROUP BY 1, status"
    )
    .bind(from)
    .bind(to)
    .fetch_all(p)
    .await)?)
}

/// Unused codes that have not expired, per group (`None`: codes for any group).
pub async fn unused_codes_by_group(db: &UsersDb, now: i64) -> StoreResult<Vec<(Option<i64>, i64)>> {
    Ok(on_reader!(db, |p| sqlx::query_as(
        "SELECT pool_group_id, COUNT(*) FROM redeem_codes \
         WHERE status = 'unused' AND (expires_at IS NULL OR expires_at > $1) GROUP BY pool_group_id"
    )
    .bind(now)
    .fetch_all(p)
    .await)?)
}

/// Codes redeemed in `[from, to)`, counted per hour since `from`: (hour index, count). An index
/// range over `used_at`.
pub async fn redeemed_per_hour(db: &UsersDb, from: i64, to: i64) -> StoreResult<Vec<(i64, i64)>> {
    Ok(on_reader!(db, |p| sqlx::query_as(
        "SELECT CAST((used_at - $1) / 3600000 AS BIGINT) AS hour, COUNT(*) \
         FROM redeem_codes WHERE used_at >= $1 AND used_at < $2 GROUP BY 1"
    )
    .bind(from)
    .bind(to)
    .fetch_all(p)
    .await)?)
}

/// Codes redeemed since `since` (an index range over `used_at`).
pub async fn redeemed_since(db: &UsersDb, since: i64) -> StoreResult<i64> {
    Ok(on_reader!(db, |p| sqlx::query_scalar(
        "SELECT COUNT(*) FROM redeem_codes WHERE used_at >= $1"
    )
    .bind(since)
    .fetch_one(p)
    .await)?)
}
