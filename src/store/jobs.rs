//! The job queue (users database). Only this module and its submodules write job rows, split by
//! who calls them: producers enqueue here, the runner's lifecycle (claim, complete, fail,
//! heartbeat, release, rescue) is in `lifecycle`, people's reads and actions (list, get, retry,
//! cancel) in `admin`, and the benchmark's helpers in `bench`. All are re-exported here.
//!
//! Live jobs (`pending`, `running`) are rows of `job_queue`; finished ones (`succeeded`, `failed`,
//! `cancelled`) are rows of `job_history`. A statement (PostgreSQL) or transaction (SQLite) that
//! finishes a job moves its row, and a retry moves it back, so claims, completions, heartbeats and
//! rescues only ever touch the hot table and its indexes, which stay the size of the live queue. The
//! view `jobs` reads both.
//!
//! De-duplication is the database's job: a unique index over `job_queue.dedup_key` (every row there
//! is live) and one `INSERT ... ON CONFLICT DO NOTHING RETURNING`. Claims, completions and rescues
//! are single statements (or one write transaction) that re-check the row's state, so two runners
//! never both own a job attempt, and a runner that lost its lock cannot finish a job someone else now
//! holds.

use serde::Serialize;
use sqlx::{AssertSqlSafe, FromRow};

use super::{StoreError, StoreResult};
use crate::db::{Backend, Conn, UsersDb, in_transaction, on_reader, on_writer};

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

/// [`JOB_COLUMNS`] of a `job_queue` row, which has no result and is not finished.
const QUEUE_JOB_COLUMNS: &str = "id, job_type, payload, dedup_key, status, attempts, max_attempts, priority, run_at, \
    locked_by, locked_until, heartbeat_at, started_at, cancel_requested, last_error, CAST(NULL AS TEXT) AS result, \
    created_at, updated_at, CAST(NULL AS BIGINT) AS finished_at";

/// The columns of a `job_history` row, in the order [`history_values`] gives them.
const HISTORY_COLUMNS: &str = "id, job_type, payload, dedup_key, status, attempts, max_attempts, priority, run_at, \
    locked_by, locked_until, heartbeat_at, started_at, cancel_requested, last_error, result, created_at, updated_at, finished_at";

/// The `job_history` values for the `job_queue` row `q` finishing with `status` at `now`; each
/// argument is an SQL expression.
fn history_values(
    status: &str,
    cancel_requested: &str,
    last_error: &str,
    result: &str,
    now: &str,
) -> String {
    format!(
        "q.id, q.job_type, q.payload, q.dedup_key, {status}, q.attempts, q.max_attempts, q.priority, q.run_at, \
         q.locked_by, CAST(NULL AS BIGINT), q.heartbeat_at, q.started_at, {cancel_requested}, {last_error}, {result}, q.created_at, \
         {now}, {now}"
    )
}

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

/// Wakes this process's runners; called once the write that made a job ready has committed (on
/// PostgreSQL, triggers `NOTIFY` other processes from the same transaction).
fn wake_runners(db: &UsersDb) {
    db.job_wakeup().signal();
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Runs `$pg` on PostgreSQL; on SQLite runs each of `$sqlite` in order in one write transaction. Each
/// statement gets the parameters `$bind` adds to the query `$q`. Evaluates to the rows the first
/// statement affected.
macro_rules! write_statements {
    ($db:expr, $pg:expr, [$($sqlite:expr),+ $(,)?], |$q:ident| $bind:expr) => {
        match &$db.0.conn {
            Conn::Postgres(pg) => {
                let $q = sqlx::query(AssertSqlSafe($pg));
                $bind.execute(pg).await?.rows_affected()
            }
            Conn::Sqlite { write, .. } => {
                let mut conn = write.lock().await?;
                let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
                let mut first: Option<u64> = None;
                $(
                    let $q = sqlx::query(AssertSqlSafe($sqlite));
                    let n = $bind.execute(&mut *tx).await?.rows_affected();
                    first.get_or_insert(n);
                )+
                tx.commit().await?;
                first.unwrap_or(0)
            }
        }
    };
}

/// Finishing statements: PostgreSQL moves the `job_queue` rows matching `condition` to `job_history`
/// in one statement; SQLite copies them, then deletes them (run both in one write transaction).
/// `values` come from [`history_values`]; `condition` names columns without a table alias.
fn finish_statements(condition: &str, values: &str) -> (String, [String; 2]) {
    (
        format!(
            "WITH q AS (DELETE FROM job_queue WHERE {condition} RETURNING *) \
             INSERT INTO job_history ({HISTORY_COLUMNS}) SELECT {values} FROM q"
        ),
        [
            format!(
                "INSERT INTO job_history ({HISTORY_COLUMNS}) SELECT {values} FROM job_queue AS q WHERE {condition}"
            ),
            format!("DELETE FROM job_queue WHERE {condition}"),
        ],
    )
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
        "INSERT INTO job_queue (id, job_type, payload, dedup_key, status, max_attempts, priority, run_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $8) \
         ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING \
         RETURNING {QUEUE_JOB_COLUMNS}"
    );
    let existing = format!("SELECT {QUEUE_JOB_COLUMNS} FROM job_queue WHERE dedup_key = $1");
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
            wake_runners(db);
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
    const ANALYZE_AFTER_ROWS: usize = 10_000;
    const COLUMNS: &str = "id, job_type, payload, dedup_key, status, max_attempts, priority, run_at, created_at, updated_at";
    const ON_CONFLICT: &str =
        "ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING RETURNING id";
    let insert = match backend(db) {
        // `WHERE true` keeps SQLite from reading ON CONFLICT as part of the SELECT.
        Backend::Sqlite => format!(
            "INSERT INTO job_queue ({COLUMNS}) SELECT json_extract(value, '$.id'), json_extract(value, '$.t'), \
             json_extract(value, '$.p'), json_extract(value, '$.k'), 'pending', json_extract(value, '$.m'), \
             json_extract(value, '$.pr'), json_extract(value, '$.r'), $2, $2 FROM json_each($1) WHERE true {ON_CONFLICT}"
        ),
        Backend::Postgres => format!(
            "INSERT INTO job_queue ({COLUMNS}) SELECT r.id, r.t, r.p, r.k, 'pending', r.m, r.pr, r.r, $2, $2 \
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
                let existing: String =
                    sqlx::query_scalar("SELECT id FROM job_queue WHERE dedup_key = $1")
                        .bind(key)
                        .fetch_one(&mut *tx)
                        .await?;
                out.push((existing, true));
            }
        }
        // PostgreSQL plans the claim from the table's statistics. Without fresh ones after a large
        // load (autovacuum may be off, or not yet round) it guesses a few pending rows and sorts
        // every pending job on each claim instead of reading the ready index in order.
        if backend(db) == Backend::Postgres && jobs.len() >= ANALYZE_AFTER_ROWS {
            sqlx::query("ANALYZE job_queue").execute(&mut *tx).await?;
        }
        tx.commit().await?;
    });
    if out.iter().any(|(_, deduplicated)| !deduplicated) {
        wake_runners(db);
    }
    Ok(out)
}

/// Wakes the runners of this process (at once) and, on PostgreSQL, those of every process
/// listening on `poolkeeper_jobs` (after a retry made a job ready).
pub async fn notify_ready(db: &UsersDb) -> StoreResult<()> {
    wake_runners(db);
    if let Conn::Postgres(pg) = &db.0.conn {
        sqlx::query("SELECT pg_notify('poolkeeper_jobs', '')")
            .execute(pg)
            .await?;
    }
    Ok(())
}

mod admin;
mod bench;
mod lifecycle;

pub use admin::*;
pub use bench::*;
pub use lifecycle::*;
