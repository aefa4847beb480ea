//! The job queue table (`jobs`, users database). Only this module writes job rows.
//!
//! De-duplication is the database's job: a unique index over `dedup_key` restricted to live
//! (`pending`/`running`) rows and one `INSERT ... ON CONFLICT DO NOTHING RETURNING`. Claims, completions
//! and rescues are single statements that re-check the row's state, so two runners never both own a
//! job attempt, and a runner that lost its lock cannot finish a job someone else now holds.

use serde::Serialize;
use sqlx::{AssertSqlSafe, FromRow};

use super::{StoreError, StoreResult};
use crate::db::{Backend, UsersDb, in_transaction, on_reader, on_writer};

pub const STATUSES: [&str; 5] = ["pending", "running", "succeeded", "failed", "cancelled"];

/// A job to enqueue.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub job_type: String,
    pub payload: serde_json::Value,
    pub dedup_key: Option<String>,
    pub priority: i64,
    /// Run no sooner than this (ms); now when `None`.
    pub run_at: Option<i64>,
    /// Attempts before failing; the configured default when `None`.
    pub max_attempts: Option<i64>,
}

impl NewJob {
    pub fn new(job_type: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            job_type: job_type.into(),
            payload,
            dedup_key: None,
            priority: 0,
            run_at: None,
            max_attempts: None,
        }
    }
    pub fn dedup_key(mut self, key: impl Into<String>) -> Self {
        self.dedup_key = Some(key.into());
        self
    }
}

#[derive(Clone, Debug, FromRow, Serialize, utoipa::ToSchema)]
pub struct Job {
    pub id: String,
    pub job_type: String,
    /// JSON text of the payload.
    pub payload: String,
    pub dedup_key: Option<String>,
    pub status: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub priority: i64,
    pub run_at: i64,
    pub locked_by: Option<String>,
    pub locked_until: Option<i64>,
    pub heartbeat_at: Option<i64>,
    pub started_at: Option<i64>,
    pub cancel_requested: bool,
    pub last_error: Option<String>,
    /// JSON text of the handler's result.
    pub result: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

const JOB_COLUMNS: &str = "id, job_type, payload, dedup_key, status, attempts, max_attempts, priority, run_at, \
    locked_by, locked_until, heartbeat_at, started_at, cancel_requested, last_error, result, created_at, updated_at, finished_at";

/// What a runner needs of a job it claimed.
#[derive(Clone, Debug, FromRow)]
pub struct ClaimedJob {
    pub id: String,
    pub job_type: String,
    pub payload: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub priority: i64,
    pub cancel_requested: bool,
}

fn backend(db: &UsersDb) -> Backend {
    db.0.backend()
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Enqueues a job; with a dedup key that a live job already holds, returns that job instead.
/// The flag is true when the job was deduplicated.
pub async fn enqueue(
    db: &UsersDb,
    job: &NewJob,
    default_max_attempts: i64,
    now: i64,
) -> StoreResult<(Job, bool)> {
    let insert = format!(
        "INSERT INTO jobs (id, job_type, payload, dedup_key, status, max_attempts, priority, run_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $8) \
         ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL AND status IN ('pending', 'running') DO NOTHING \
         RETURNING {JOB_COLUMNS}"
    );
    let existing = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE dedup_key = $1 AND status IN ('pending', 'running')"
    );
    let payload = job.payload.to_string();
    // The live job that blocked the insert may finish before we read it; then insert again.
    for _ in 0..10 {
        let inserted: Option<Job> =
            on_writer!(db, |p| sqlx::query_as(AssertSqlSafe(insert.clone()))
                .bind(new_id())
                .bind(&job.job_type)
                .bind(&payload)
                .bind(&job.dedup_key)
                .bind(job.max_attempts.unwrap_or(default_max_attempts))
                .bind(job.priority)
                .bind(job.run_at.unwrap_or(now))
                .bind(now)
                .fetch_optional(p)
                .await)?;
        if let Some(job) = inserted {
            return Ok((job, false));
        }
        let Some(key) = &job.dedup_key else {
            return Err(StoreError::Conflict("job id".into()));
        };
        let live: Option<Job> =
            on_writer!(db, |p| sqlx::query_as(AssertSqlSafe(existing.clone()))
                .bind(key)
                .fetch_optional(p)
                .await)?;
        if let Some(job) = live {
            return Ok((job, true));
        }
    }
    Err(StoreError::Conflict(format!(
        "dedup key {:?} keeps changing hands",
        job.dedup_key
    )))
}

/// Enqueues many jobs in one transaction. Returns each job's id and whether it was deduplicated, in
/// input order. Each statement carries a chunk of jobs as one JSON parameter: thousands of bound
/// parameters per statement cost far more than decoding JSON in the database.
pub async fn enqueue_many(
    db: &UsersDb,
    jobs: &[NewJob],
    default_max_attempts: i64,
    now: i64,
) -> StoreResult<Vec<(String, bool)>> {
    const ROWS_PER_STATEMENT: usize = 5_000;
    const COLUMNS: &str = "id, job_type, payload, dedup_key, status, max_attempts, priority, run_at, created_at, updated_at";
    const ON_CONFLICT: &str = "ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL AND status IN ('pending', 'running') DO NOTHING RETURNING id";
    let insert = match backend(db) {
        // `WHERE true` keeps SQLite from reading ON CONFLICT as part of the SELECT.
        Backend::Sqlite => format!(
            "INSERT INTO jobs ({COLUMNS}) SELECT json_extract(value, '$.id'), json_extract(value, '$.t'), \
             json_extract(value, '$.p'), json_extract(value, '$.k'), 'pending', json_extract(value, '$.m'), \
             json_extract(value, '$.pr'), json_extract(value, '$.r'), $2, $2 FROM json_each($1) WHERE true {ON_CONFLICT}"
        ),
        Backend::Postgres => format!(
            "INSERT INTO jobs ({COLUMNS}) SELECT r.id, r.t, r.p, r.k, 'pending', r.m, r.pr, r.r, $2, $2 \
             FROM jsonb_to_recordset($1::jsonb) AS r(id TEXT, t TEXT, p TEXT, k TEXT, m BIGINT, pr BIGINT, r BIGINT) \
             {ON_CONFLICT}"
        ),
    };
    let mut out: Vec<(String, bool)> = Vec::with_capacity(jobs.len());
    in_transaction!(db, |tx| {
        for chunk in jobs.chunks(ROWS_PER_STATEMENT) {
            let ids: Vec<String> = chunk.iter().map(|_| new_id()).collect();
            let rows: Vec<serde_json::Value> = chunk
                .iter()
                .zip(&ids)
                .map(|(job, id)| {
                    serde_json::json!({
                        "id": id,
                        "t": job.job_type,
                        "p": job.payload.to_string(),
                        "k": job.dedup_key,
                        "m": job.max_attempts.unwrap_or(default_max_attempts),
                        "pr": job.priority,
                        "r": job.run_at.unwrap_or(now),
                    })
                })
                .collect();
            let rows = serde_json::Value::Array(rows).to_string();
            let inserted: std::collections::HashSet<String> =
                sqlx::query_scalar::<_, String>(AssertSqlSafe(insert.clone()))
                    .bind(rows)
                    .bind(now)
                    .fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .collect();
            for (job, id) in chunk.iter().zip(ids) {
                if inserted.contains(&id) {
                    out.push((id, false));
                    continue;
                }
                let key = job
                    .dedup_key
                    .clone()
                    .ok_or_else(|| StoreError::Conflict("job id".into()))?;
                let existing: String = sqlx::query_scalar(
                    "SELECT id FROM jobs WHERE dedup_key = $1 AND status IN ('pending', 'running')",
                )
                .bind(key)
                .fetch_one(&mut *tx)
                .await?;
                out.push((existing, true));
            }
        }
        tx.commit().await?;
    });
    Ok(out)
}

/// Claims up to `limit` ready jobs for `runner`: they become `running`, locked until `lock_until`,
/// with the attempt counted. Returned in run order: highest priority first, then oldest.
pub async fn claim(
    db: &UsersDb,
    runner: &str,
    limit: i64,
    now: i64,
    lock_until: i64,
) -> StoreResult<Vec<ClaimedJob>> {
    const SET: &str = "status = 'running', attempts = attempts + 1, locked_by = $1, locked_until = $2, \
        heartbeat_at = $3, started_at = $3, updated_at = $3";
    const RETURNING: &str =
        "id, job_type, payload, attempts, max_attempts, priority, cancel_requested";
    let sql = match backend(db) {
        // One UPDATE in the single-writer connection: nobody else can claim between select and set.
        // Both forms re-check `status = 'pending'` on the row they update, so a row is claimed once
        // even when PostgreSQL re-evaluates the statement against a row another runner just took.
        // On SQLite, `INDEXED BY` and the unary `+` keep the planner on the ready-queue index and on
        // primary-key lookups instead of scanning every pending row. On PostgreSQL the candidates are
        // a MATERIALIZED CTE: a subquery the planner may re-run would lock and claim past the LIMIT.
        Backend::Sqlite => format!(
            "UPDATE jobs SET {SET} WHERE +status = 'pending' AND id IN (SELECT id FROM jobs INDEXED BY jobs_ready \
             WHERE status = 'pending' AND run_at <= $3 ORDER BY priority DESC, run_at, id LIMIT $4) RETURNING {RETURNING}"
        ),
        Backend::Postgres => format!(
            "WITH c AS MATERIALIZED (SELECT id AS claimed_id FROM jobs WHERE status = 'pending' AND run_at <= $3 \
             ORDER BY priority DESC, run_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
             UPDATE jobs SET {SET} FROM c WHERE jobs.id = c.claimed_id AND jobs.status = 'pending' RETURNING {RETURNING}"
        ),
    };
    let mut claimed: Vec<ClaimedJob> =
        on_writer!(db, |p| sqlx::query_as(AssertSqlSafe(sql.clone()))
            .bind(runner)
            .bind(lock_until)
            .bind(now)
            .bind(limit)
            .fetch_all(p)
            .await)?;
    // RETURNING has no order; UUID v7 ids sort by creation.
    claimed.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.id.cmp(&b.id)));
    Ok(claimed)
}

/// Marks jobs this runner holds as succeeded, with their results (JSON text), in one statement.
/// Jobs the runner no longer holds are left alone. Returns how many were finished.
pub async fn complete(
    db: &UsersDb,
    runner: &str,
    results: &[(String, Option<String>)],
    now: i64,
) -> StoreResult<u64> {
    if results.is_empty() {
        return Ok(0);
    }
    let batch: Vec<serde_json::Value> = results
        .iter()
        .map(|(id, result)| serde_json::json!({"id": id, "result": result}))
        .collect();
    let batch = serde_json::Value::Array(batch).to_string();
    const SET: &str = "status = 'succeeded', result = r.result, finished_at = $2, updated_at = $2, locked_until = NULL";
    // SQLite: the `+` keeps the planner driving from the batch by primary key.
    let sql = match backend(db) {
        Backend::Sqlite => format!(
            "UPDATE jobs SET {SET} FROM (SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.result') AS result \
             FROM json_each($1)) AS r WHERE jobs.id = r.id AND +jobs.locked_by = $3 AND +jobs.status = 'running'"
        ),
        Backend::Postgres => format!(
            "UPDATE jobs SET {SET} FROM jsonb_to_recordset($1::jsonb) AS r(id TEXT, result TEXT) \
             WHERE jobs.id = r.id AND jobs.locked_by = $3 AND jobs.status = 'running'"
        ),
    };
    Ok(on_writer!(db, |p| sqlx::query(AssertSqlSafe(sql.clone()))
        .bind(&batch)
        .bind(now)
        .bind(runner)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?)
}

/// After a failed attempt: back to `pending` at `retry_at`, or `failed` when `retry_at` is `None`.
/// Returns false when the runner no longer held the job.
pub async fn fail_attempt(
    db: &UsersDb,
    runner: &str,
    id: &str,
    error: &str,
    retry_at: Option<i64>,
    now: i64,
) -> StoreResult<bool> {
    let sql = match retry_at {
        Some(_) => {
            "UPDATE jobs SET status = 'pending', run_at = $4, last_error = $3, locked_until = NULL, updated_at = $5 \
                    WHERE id = $1 AND locked_by = $2 AND status = 'running'"
        }
        None => {
            "UPDATE jobs SET status = 'failed', last_error = $3, locked_until = NULL, finished_at = $5, updated_at = $5 \
                 WHERE id = $1 AND locked_by = $2 AND status = 'running'"
        }
    };
    let done = on_writer!(db, |p| sqlx::query(sql)
        .bind(id)
        .bind(runner)
        .bind(error)
        .bind(retry_at.unwrap_or(now))
        .bind(now)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// A running job whose cancellation was requested ends `cancelled`.
pub async fn finish_cancelled(db: &UsersDb, runner: &str, id: &str, now: i64) -> StoreResult<bool> {
    let done = on_writer!(db, |p| {
        sqlx::query(
        "UPDATE jobs SET status = 'cancelled', last_error = 'cancelled on request', locked_until = NULL, \
         finished_at = $3, updated_at = $3 WHERE id = $1 AND locked_by = $2 AND status = 'running'"
    )
    .bind(id)
    .bind(runner)
    .bind(now)
    .execute(p)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(done == 1)
}

/// Extends the locks of every job `runner` holds; returns the ids whose cancellation was requested.
pub async fn heartbeat(
    db: &UsersDb,
    runner: &str,
    now: i64,
    lock_until: i64,
) -> StoreResult<Vec<String>> {
    let cancel =
        "SELECT id FROM jobs WHERE locked_by = $1 AND status = 'running' AND cancel_requested";
    on_writer!(db, |p| {
        sqlx::query(
        "UPDATE jobs SET locked_until = $2, heartbeat_at = $3 WHERE locked_by = $1 AND status = 'running'"
    )
    .bind(runner)
    .bind(lock_until)
    .bind(now)
    .execute(p)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(on_reader!(db, |p| sqlx::query_scalar(cancel)
        .bind(runner)
        .fetch_all(p)
        .await)?)
}

/// Puts jobs `runner` holds back to `pending` without spending the attempt (graceful shutdown).
pub async fn release(db: &UsersDb, runner: &str, ids: &[String], now: i64) -> StoreResult<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let ids = serde_json::to_string(ids).map_err(|e| StoreError::Conflict(e.to_string()))?;
    let (list, plus) = match backend(db) {
        Backend::Sqlite => ("SELECT value FROM json_each($1)", "+"),
        Backend::Postgres => ("SELECT jsonb_array_elements_text($1::jsonb)", ""),
    };
    let sql = format!(
        "UPDATE jobs SET status = 'pending', attempts = attempts - 1, locked_until = NULL, run_at = $3, updated_at = $3 \
         WHERE id IN ({list}) AND {plus}locked_by = $2 AND {plus}status = 'running'"
    );
    Ok(on_writer!(db, |p| sqlx::query(AssertSqlSafe(sql.clone()))
        .bind(&ids)
        .bind(runner)
        .bind(now)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?)
}

/// Rescues running jobs whose lock expired (their runner died): back to `pending` with the attempt
/// counted, or `failed` when attempts are spent. The expiry is re-checked in the same statement, so a
/// job whose runner just sent a heartbeat is never taken.
pub async fn rescue_expired(db: &UsersDb, now: i64) -> StoreResult<u64> {
    Ok(on_writer!(db, |p| sqlx::query(
        "UPDATE jobs SET \
           status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'pending' END, \
           finished_at = CASE WHEN attempts >= max_attempts THEN $1 ELSE NULL END, \
           last_error = 'lock expired: the runner stopped sending heartbeats', \
           locked_until = NULL, run_at = $1, updated_at = $1 \
         WHERE status = 'running' AND locked_until < $1"
    )
    .bind(now)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?)
}

pub async fn get(db: &UsersDb, id: &str) -> StoreResult<Job> {
    let sql = AssertSqlSafe(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"));
    Ok(on_reader!(db, |p| sqlx::query_as(sql)
        .bind(id)
        .fetch_one(p)
        .await)?)
}

/// A row of the jobs list (no payload or result: those can be large).
#[derive(Clone, Debug, FromRow, Serialize, utoipa::ToSchema)]
pub struct JobSummary {
    pub id: String,
    pub job_type: String,
    pub status: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub priority: i64,
    pub run_at: i64,
    pub cancel_requested: bool,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub status: Option<String>,
    pub job_type: Option<String>,
}

/// One page of jobs, newest first, and the number matching.
pub async fn list(
    db: &UsersDb,
    filter: &JobFilter,
    limit: i64,
    offset: i64,
) -> StoreResult<(Vec<JobSummary>, i64)> {
    let condition = "($1 IS NULL OR status = $1) AND ($2 IS NULL OR job_type = $2)";
    let items = AssertSqlSafe(format!(
        "SELECT id, job_type, status, attempts, max_attempts, priority, run_at, cancel_requested, last_error, \
         created_at, updated_at, finished_at FROM jobs WHERE {condition} ORDER BY id DESC LIMIT $3 OFFSET $4"
    ));
    let count = AssertSqlSafe(format!("SELECT COUNT(*) FROM jobs WHERE {condition}"));
    let rows = on_reader!(db, |p| sqlx::query_as(items)
        .bind(&filter.status)
        .bind(&filter.job_type)
        .bind(limit)
        .bind(offset)
        .fetch_all(p)
        .await)?;
    let total = on_reader!(db, |p| sqlx::query_scalar(count)
        .bind(&filter.status)
        .bind(&filter.job_type)
        .fetch_one(p)
        .await)?;
    Ok((rows, total))
}

/// Counts by (status, type).
pub async fn counts(db: &UsersDb) -> StoreResult<Vec<(String, String, i64)>> {
    Ok(on_reader!(db, |p| {
        sqlx::query_as(
        "SELECT status, job_type, COUNT(*) FROM jobs GROUP BY status, job_type ORDER BY status, job_type"
    )
    .fetch_all(p)
    .await
    })?)
}

/// Counts of pending and running jobs (the live queue), cheap enough to sample often: each count
/// reads only its partial index.
pub async fn live_counts(db: &UsersDb) -> StoreResult<(i64, i64)> {
    let pending = on_reader!(db, |p| sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE status = 'pending'"
    )
    .fetch_one(p)
    .await)?;
    let running = on_reader!(db, |p| sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE status = 'running' AND locked_by IS NOT NULL"
    )
    .fetch_one(p)
    .await)?;
    Ok((pending, running))
}

/// Makes a failed or cancelled job pending again with a fresh attempt budget. `NotFound` for an
/// unknown id; `Conflict` when the job is in another state (or a live job holds its dedup key).
pub async fn retry(db: &UsersDb, id: &str, now: i64) -> StoreResult<Job> {
    let sql = AssertSqlSafe(format!(
        "UPDATE jobs SET status = 'pending', attempts = 0, run_at = $2, cancel_requested = FALSE, locked_by = NULL, \
         locked_until = NULL, finished_at = NULL, updated_at = $2 WHERE id = $1 AND status IN ('failed', 'cancelled') \
         RETURNING {JOB_COLUMNS}"
    ));
    let updated: Option<Job> = on_writer!(db, |p| sqlx::query_as(sql)
        .bind(id)
        .bind(now)
        .fetch_optional(p)
        .await)?;
    match updated {
        Some(job) => Ok(job),
        None => {
            let job = get(db, id).await?;
            Err(StoreError::Conflict(format!(
                "job is {}; only failed or cancelled jobs can be retried",
                job.status
            )))
        }
    }
}

/// Cancels a job: a pending one at once, a running one by request (its handler sees it and the job
/// ends `cancelled`). `Conflict` for a finished job.
pub async fn cancel(db: &UsersDb, id: &str, now: i64) -> StoreResult<Job> {
    let sql = AssertSqlSafe(format!(
        "UPDATE jobs SET \
           status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END, \
           finished_at = CASE WHEN status = 'pending' THEN $2 ELSE finished_at END, \
           cancel_requested = TRUE, updated_at = $2 \
         WHERE id = $1 AND status IN ('pending', 'running') RETURNING {JOB_COLUMNS}"
    ));
    let updated: Option<Job> = on_writer!(db, |p| sqlx::query_as(sql)
        .bind(id)
        .bind(now)
        .fetch_optional(p)
        .await)?;
    match updated {
        Some(job) => Ok(job),
        None => {
            let job = get(db, id).await?;
            Err(StoreError::Conflict(format!(
                "job is already {}",
                job.status
            )))
        }
    }
}

/// Claim-to-finish latencies (ms) of succeeded jobs, for the benchmark.
pub async fn succeeded_latencies(db: &UsersDb) -> StoreResult<Vec<i64>> {
    Ok(on_reader!(db, |p| sqlx::query_scalar(
        "SELECT finished_at - started_at FROM jobs WHERE status = 'succeeded' ORDER BY 1"
    )
    .fetch_all(p)
    .await)?)
}

/// PostgreSQL: wakes runners listening on `poolkeeper_jobs` (after a retry made a job ready).
pub async fn notify_ready(db: &UsersDb) -> StoreResult<()> {
    if let crate::db::Conn::Postgres(pg) = &db.0.conn {
        sqlx::query("SELECT pg_notify('poolkeeper_jobs', '')")
            .execute(pg)
            .await?;
    }
    Ok(())
}

/// The latest `finished_at`, for the benchmark's drain time.
pub async fn last_finished_at(db: &UsersDb) -> StoreResult<Option<i64>> {
    Ok(on_reader!(db, |p| sqlx::query_scalar(
        "SELECT MAX(finished_at) FROM jobs"
    )
    .fetch_one(p)
    .await)?)
}

/// Deletes every job of one type (the benchmark's scratch jobs).
pub async fn delete_by_type(db: &UsersDb, job_type: &str) -> StoreResult<u64> {
    Ok(on_writer!(db, |p| sqlx::query(
        "DELETE FROM jobs WHERE job_type = $1"
    )
    .bind(job_type)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?)
}
