//! Helpers of `poolkeeper bench jobs`: latencies, drain time, and removing its scratch jobs.

use sqlx::AssertSqlSafe;

use super::*;

/// Claim-to-finish latencies (ms) of succeeded jobs, for the benchmark.
pub async fn succeeded_latencies(db: &UsersDb) -> StoreResult<Vec<i64>> {
    Ok(on_reader!(db, |p| sqlx::query_scalar(
        "SELECT finished_at - started_at FROM job_history WHERE status = 'succeeded' ORDER BY 1"
    )
    .fetch_all(p)
    .await)?)
}

/// The latest `finished_at`, for the benchmark's drain time.
pub async fn last_finished_at(db: &UsersDb) -> StoreResult<Option<i64>> {
    Ok(on_reader!(db, |p| sqlx::query_scalar(
        "SELECT MAX(finished_at) FROM job_history"
    )
    .fetch_one(p)
    .await)?)
}

/// Deletes every job of one type (the benchmark's scratch jobs).
pub async fn delete_by_type(db: &UsersDb, job_type: &str) -> StoreResult<u64> {
    let mut deleted = 0;
    for table in ["job_queue", "job_history"] {
        let sql = AssertSqlSafe(format!("DELETE FROM {table} WHERE job_type = $1"));
        deleted += on_writer!(db, |p| sqlx::query(sql)
            .bind(job_type)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
    }
    Ok(deleted)
}
