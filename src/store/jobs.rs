//! The job queue (users database). Only this module writes job rows.
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
                let mut tx = write.begin_with("BEGIN IMMEDIATE").await?;
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

/// Claims up to `limit` ready jobs for `runner`: they become `running`, locked until `lock_until`,
/// with the attempt counted. Returned in run order: highest priority first, then oldest.
///
/// The ready index is ordered by (priority, run_at, id), and jobs that are not due yet (a retry's
/// backoff, a job scheduled for later) sit in it after the due ones of their priority. Asked for
/// `run_at <= now` over the whole index, the database can only stop at the end: a claim that finds
/// fewer due jobs than its limit, as every claim of an idle or nearly drained queue does, read every
/// not-due job (48 ms with a million of them on PostgreSQL). So the claim walks the priorities
/// present, highest first, one index probe each, and reads each priority's due jobs as a bounded
/// range of the index, `priority = p AND run_at <= now`, in order: it never reads or sorts the
/// jobs that are not due.
pub async fn claim(
    db: &UsersDb,
    runner: &str,
    limit: i64,
    now: i64,
    lock_until: i64,
) -> StoreResult<Vec<ClaimedJob>> {
    let mut claimed: Vec<ClaimedJob> = match &db.0.conn {
        Conn::Postgres(pg) => {
            sqlx::query_as(AssertSqlSafe(pg_claim_sql()))
                .bind(runner)
                .bind(lock_until)
                .bind(now)
                .bind(limit)
                .fetch_all(pg)
                .await?
        }
        // One write transaction on the single writer: nobody else can claim between the statements.
        // `INDEXED BY` and the unary `+` keep the planner on the ready index and on primary-key
        // lookups instead of scanning every pending row.
        Conn::Sqlite { write, .. } => {
            let priorities_sql = format!(
                "{} SELECT priority FROM p WHERE priority IS NOT NULL",
                pending_priorities("INDEXED BY job_queue_ready")
            );
            let claim_sql = format!(
                "UPDATE job_queue SET {CLAIM_SET} WHERE +status = 'pending' AND id IN (SELECT id FROM job_queue \
                 INDEXED BY job_queue_ready WHERE status = 'pending' AND priority = $5 AND run_at <= $3 \
                 ORDER BY run_at, id LIMIT $4) RETURNING {CLAIM_RETURNING}"
            );
            let mut tx = write.begin_with("BEGIN IMMEDIATE").await?;
            let mut priorities: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(priorities_sql))
                .fetch_all(&mut *tx)
                .await?;
            priorities.sort_unstable_by(|a, b| b.cmp(a));
            let mut claimed: Vec<ClaimedJob> = Vec::new();
            for priority in priorities {
                let left = limit - claimed.len() as i64;
                if left <= 0 {
                    break;
                }
                let rows: Vec<ClaimedJob> = sqlx::query_as(AssertSqlSafe(claim_sql.clone()))
                    .bind(runner)
                    .bind(lock_until)
                    .bind(now)
                    .bind(left)
                    .bind(priority)
                    .fetch_all(&mut *tx)
                    .await?;
                claimed.extend(rows);
            }
            tx.commit().await?;
            claimed
        }
    };
    // RETURNING has no order; UUID v7 ids sort by creation.
    claimed.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.id.cmp(&b.id)));
    Ok(claimed)
}

const CLAIM_SET: &str = "status = 'running', attempts = attempts + 1, locked_by = $1, locked_until = $2, \
    heartbeat_at = $3, started_at = $3, updated_at = $3";
const CLAIM_RETURNING: &str =
    "id, job_type, payload, attempts, max_attempts, priority, cancel_requested";

/// `WITH RECURSIVE p(priority)`: the distinct priorities of pending jobs, highest first, found by
/// one probe of the ready index each (a loose index scan); the last row is NULL. `index` is a hint
/// placed after each `job_queue`.
fn pending_priorities(index: &str) -> String {
    format!(
        "WITH RECURSIVE p(priority) AS (\
         SELECT (SELECT priority FROM job_queue {index} WHERE status = 'pending' ORDER BY priority DESC LIMIT 1) \
         UNION ALL SELECT (SELECT q.priority FROM job_queue AS q {index} WHERE q.status = 'pending' \
         AND q.priority < p.priority ORDER BY q.priority DESC LIMIT 1) FROM p WHERE p.priority IS NOT NULL)"
    )
}

/// The PostgreSQL claim: one statement. The candidates are an ARRAY sub-select, evaluated once (a
/// subquery the planner may re-run would lock and claim past the LIMIT), whose ids the UPDATE finds
/// through the primary key. Within it, the priorities come from a loose scan of the ready index
/// (running jobs included: the index covers every live job, so the probes need no heap), and each
/// priority's due jobs from a LATERAL range scan that locks them; the outer LIMIT stops the walk
/// once enough are found. The UPDATE re-checks `status = 'pending'`, so a row is claimed once even
/// when PostgreSQL re-evaluates it against a row another runner just took. No index covers the
/// lock columns (users migration 0004): the UPDATE changes no indexed column, so it is a HOT update
/// that adds no index entries.
fn pg_claim_sql() -> String {
    format!(
        "UPDATE job_queue SET {CLAIM_SET} WHERE id = ANY(ARRAY(\
         WITH RECURSIVE p AS ((SELECT priority FROM job_queue ORDER BY priority DESC LIMIT 1) \
         UNION ALL SELECT (SELECT q.priority FROM job_queue AS q WHERE q.priority < p.priority \
         ORDER BY q.priority DESC LIMIT 1) FROM p WHERE p.priority IS NOT NULL) \
         SELECT c.id FROM p CROSS JOIN LATERAL (SELECT id FROM job_queue WHERE priority = p.priority \
         AND run_at <= $3 AND status = 'pending' ORDER BY run_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) AS c \
         LIMIT $4)) AND status = 'pending' RETURNING {CLAIM_RETURNING}"
    )
}

/// PostgreSQL: the plan of one claim of up to `limit` jobs at `now`, as `EXPLAIN (ANALYZE, BUFFERS,
/// FORMAT JSON)` gives it; the claim runs in a transaction that is rolled back. `None` on SQLite.
/// For tests and for diagnosing a slow queue.
pub async fn explain_claim(
    db: &UsersDb,
    limit: i64,
    now: i64,
) -> StoreResult<Option<serde_json::Value>> {
    let Conn::Postgres(pg) = &db.0.conn else {
        return Ok(None);
    };
    let mut tx = pg.begin().await?;
    let row = sqlx::query(AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}",
        pg_claim_sql()
    )))
    .bind("explain")
    .bind(now)
    .bind(now)
    .bind(limit)
    .fetch_one(&mut *tx)
    .await?;
    tx.rollback().await?;
    // The column is `json`, which this build does not decode as such: read its text.
    let text: String = sqlx::Row::try_get_unchecked(&row, 0)?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| StoreError::Other(sqlx::Error::Decode(Box::new(e))))
}

/// When the next pending job is due (its `run_at`, ms), or `None` when nothing is pending; it may
/// lie in the past when a due job is pending. Read like the claim, one index probe per priority,
/// so a deep backlog of jobs that are not due costs nothing.
pub async fn next_run_at(db: &UsersDb) -> StoreResult<Option<i64>> {
    let index = match backend(db) {
        Backend::Sqlite => "INDEXED BY job_queue_ready",
        Backend::Postgres => "",
    };
    let sql = AssertSqlSafe(format!(
        "{} SELECT MIN((SELECT q.run_at FROM job_queue AS q {index} WHERE q.status = 'pending' \
         AND q.priority = p.priority ORDER BY q.run_at LIMIT 1)) FROM p WHERE p.priority IS NOT NULL",
        pending_priorities(index)
    ));
    Ok(on_reader!(db, |p| sqlx::query_scalar(sql)
        .fetch_one(p)
        .await)?)
}

/// Marks jobs this runner holds as succeeded, with their results (JSON text): each row moves to
/// `job_history` in one statement (PostgreSQL) or one transaction (SQLite) for the whole batch.
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
    // An id twice in one batch (never expected) must not make the history insert collide.
    let mut seen = std::collections::HashSet::with_capacity(results.len());
    let results: Vec<&(String, Option<String>)> =
        results.iter().filter(|(id, _)| seen.insert(id)).collect();
    let values = |result: &str| {
        history_values(
            "'succeeded'",
            "q.cancel_requested",
            "q.last_error",
            result,
            "$2",
        )
    };
    match &db.0.conn {
        Conn::Postgres(pg) => {
            // The ids bind as a native array and the rows are found through the primary key
            // (`= ANY`, which the planner never turns into a scan of the queue). Results, usually
            // none, come as one JSON object from id to result, read per row by key: a join with
            // the batch would compare every row with every id. The batch goes as statements of
            // a few KiB each, in one transaction when there are several: sqlx does not set
            // TCP_NODELAY, and a larger message leaves the socket in two writes whose second
            // Nagle's algorithm holds until PostgreSQL's delayed ACK, about 40 ms later
            // (measured: 50 ms per 1,000-job completion over TCP, 6 ms over a Unix socket).
            const CHUNK_BYTES: usize = 8 * 1024;
            let sql = format!(
                "WITH q AS (DELETE FROM job_queue WHERE id = ANY($1::text[]) AND locked_by = $3 \
                 AND status = 'running' RETURNING *) \
                 INSERT INTO job_history ({HISTORY_COLUMNS}) SELECT {} FROM q",
                values("$4::jsonb ->> q.id")
            );
            let mut chunks: Vec<&[&(String, Option<String>)]> = Vec::new();
            let (mut start, mut bytes) = (0, 0);
            for (i, (id, result)) in results.iter().enumerate() {
                let size = id.len() + result.as_ref().map_or(0, |r| r.len() + id.len() + 8) + 4;
                if i > start && bytes + size > CHUNK_BYTES {
                    chunks.push(&results[start..i]);
                    (start, bytes) = (i, 0);
                }
                bytes += size;
            }
            chunks.push(&results[start..]);
            let mut tx = match chunks.len() {
                1 => None,
                _ => Some(pg.begin().await?),
            };
            let mut done = 0;
            for chunk in chunks {
                let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
                let outputs: serde_json::Map<String, serde_json::Value> = chunk
                    .iter()
                    .filter_map(|(id, r)| Some((id.clone(), serde_json::Value::from(r.clone()?))))
                    .collect();
                let outputs =
                    (!outputs.is_empty()).then(|| serde_json::Value::Object(outputs).to_string());
                let query = sqlx::query(AssertSqlSafe(sql.clone()))
                    .bind(ids)
                    .bind(now)
                    .bind(runner)
                    .bind(outputs);
                done += match tx.as_mut() {
                    Some(tx) => query.execute(&mut **tx).await?,
                    None => query.execute(pg).await?,
                }
                .rows_affected();
            }
            if let Some(tx) = tx {
                tx.commit().await?;
            }
            Ok(done)
        }
        Conn::Sqlite { write, .. } => {
            // Ids travel as a JSON array of strings, read with json_each's `value`: extracting
            // fields from an array of objects parsed each object again for every field. Results
            // (often none) come as a second array only when there are some.
            let ids: Vec<&str> = results.iter().map(|(id, _)| id.as_str()).collect();
            let ids =
                serde_json::to_string(&ids).map_err(|e| StoreError::Conflict(e.to_string()))?;
            let outputs = results
                .iter()
                .any(|(_, r)| r.is_some())
                .then(|| {
                    let outputs: Vec<Option<&str>> =
                        results.iter().map(|(_, r)| r.as_deref()).collect();
                    serde_json::to_string(&outputs)
                })
                .transpose()
                .map_err(|e| StoreError::Conflict(e.to_string()))?;
            let batch = match outputs {
                Some(_) => {
                    "SELECT i.value AS id, json_extract($4, '$[' || i.key || ']') AS result FROM json_each($1) AS i"
                }
                None => "SELECT value AS id, $4 AS result FROM json_each($1)",
            };
            // CROSS JOIN and the `+` keep the planner driving from the batch by primary key.
            let copy = format!(
                "INSERT INTO job_history ({HISTORY_COLUMNS}) SELECT {} FROM ({batch}) AS r CROSS JOIN job_queue AS q \
                 WHERE q.id = r.id AND +q.locked_by = $3 AND +q.status = 'running'",
                values("r.result")
            );
            let delete = "DELETE FROM job_queue WHERE id IN (SELECT value FROM json_each($1)) \
                 AND +locked_by = $2 AND +status = 'running'";
            let mut tx = write.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query(AssertSqlSafe(copy))
                .bind(&ids)
                .bind(now)
                .bind(runner)
                .bind(&outputs)
                .execute(&mut *tx)
                .await?;
            let done = sqlx::query(delete)
                .bind(&ids)
                .bind(runner)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok(done)
        }
    }
}

/// After a failed attempt: back to `pending` at `retry_at`, or `failed` (moved to the history) when
/// `retry_at` is `None`. Returns false when the runner no longer held the job.
pub async fn fail_attempt(
    db: &UsersDb,
    runner: &str,
    id: &str,
    error: &str,
    retry_at: Option<i64>,
    now: i64,
) -> StoreResult<bool> {
    let held = "id = $1 AND locked_by = $2 AND status = 'running'";
    let done = match retry_at {
        Some(at) => on_writer!(db, |p| {
            sqlx::query(AssertSqlSafe(format!(
            "UPDATE job_queue SET status = 'pending', run_at = $4, last_error = $3, locked_until = NULL, \
             updated_at = $5 WHERE {held}"
        )))
        .bind(id)
        .bind(runner)
        .bind(error)
        .bind(at)
        .bind(now)
        .execute(p)
        .await
        .map(|r| r.rows_affected())
        })?,
        None => {
            let values = history_values(
                "'failed'",
                "q.cancel_requested",
                "$3",
                "CAST(NULL AS TEXT)",
                "$4",
            );
            let (pg, sqlite) = finish_statements(held, &values);
            let [copy, delete] = sqlite;
            write_statements!(db, pg, [copy, delete], |q| q
                .bind(id)
                .bind(runner)
                .bind(error)
                .bind(now))
        }
    };
    if done == 1 && retry_at.is_some() {
        // The runner may sleep until the earliest due job: this one may now be earlier.
        wake_runners(db);
    }
    Ok(done == 1)
}

/// A running job whose cancellation was requested ends `cancelled` (moved to the history).
pub async fn finish_cancelled(db: &UsersDb, runner: &str, id: &str, now: i64) -> StoreResult<bool> {
    let values = history_values(
        "'cancelled'",
        "q.cancel_requested",
        "'cancelled on request'",
        "CAST(NULL AS TEXT)",
        "$3",
    );
    let (pg, sqlite) =
        finish_statements("id = $1 AND locked_by = $2 AND status = 'running'", &values);
    let [copy, delete] = sqlite;
    let done = write_statements!(db, pg, [copy, delete], |q| q
        .bind(id)
        .bind(runner)
        .bind(now));
    Ok(done == 1)
}

/// `ids` as one parameter (a JSON array) and the sub-select that lists them when it is bound as `$1`.
fn id_list(db: &UsersDb, ids: &[String]) -> StoreResult<(String, &'static str)> {
    let json = serde_json::to_string(ids).map_err(|e| StoreError::Conflict(e.to_string()))?;
    let list = match backend(db) {
        Backend::Sqlite => "SELECT value FROM json_each($1)",
        Backend::Postgres => "SELECT jsonb_array_elements_text($1::jsonb)",
    };
    Ok((json, list))
}

/// Extends the locks of `ids`, jobs `runner` holds, to `lock_until`; returns those whose
/// cancellation was requested. A lock is extended once a third of its window (`lock_until - now`)
/// has passed: with heartbeats at least that often it never runs out, and short jobs are never
/// rewritten. The jobs are found by id: no index covers the lock columns (users migration 0004).
pub async fn heartbeat(
    db: &UsersDb,
    runner: &str,
    ids: &[String],
    now: i64,
    lock_until: i64,
) -> StoreResult<Vec<String>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let (ids, list) = id_list(db, ids)?;
    let extend = format!(
        "UPDATE job_queue SET locked_until = $3, heartbeat_at = $4 WHERE id IN ({list}) AND locked_by = $2 \
         AND status = 'running' AND locked_until < $3 - ($3 - $4) / 3"
    );
    let cancel = format!(
        "SELECT id FROM job_queue WHERE id IN ({list}) AND locked_by = $2 AND status = 'running' AND cancel_requested"
    );
    on_writer!(db, |p| sqlx::query(AssertSqlSafe(extend.clone()))
        .bind(&ids)
        .bind(runner)
        .bind(lock_until)
        .bind(now)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(on_reader!(db, |p| sqlx::query_scalar(AssertSqlSafe(
        cancel.clone()
    ))
    .bind(&ids)
    .bind(runner)
    .fetch_all(p)
    .await)?)
}

/// Puts jobs `runner` holds back to `pending` without spending the attempt (graceful shutdown).
pub async fn release(db: &UsersDb, runner: &str, ids: &[String], now: i64) -> StoreResult<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let (ids, list) = id_list(db, ids)?;
    // On SQLite the unary `+` keeps the planner on the primary key.
    let plus = match backend(db) {
        Backend::Sqlite => "+",
        Backend::Postgres => "",
    };
    let sql = format!(
        "UPDATE job_queue SET status = 'pending', attempts = attempts - 1, locked_until = NULL, run_at = $3, updated_at = $3 \
         WHERE id IN ({list}) AND {plus}locked_by = $2 AND {plus}status = 'running'"
    );
    let released = on_writer!(db, |p| sqlx::query(AssertSqlSafe(sql.clone()))
        .bind(&ids)
        .bind(runner)
        .bind(now)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
    if released > 0 {
        wake_runners(db);
    }
    Ok(released)
}

/// Rescues running jobs whose lock expired (their runner died): back to `pending` with the attempt
/// counted, or `failed` (moved to the history) when attempts are spent. The expiry is re-checked by
/// each statement on the row it changes, so a job whose runner just sent a heartbeat is never taken.
pub async fn rescue_expired(db: &UsersDb, now: i64) -> StoreResult<u64> {
    const EXPIRED: &str = "status = 'running' AND locked_until < $1";
    const ERROR: &str = "'lock expired: the runner stopped sending heartbeats'";
    let values = history_values(
        "'failed'",
        "q.cancel_requested",
        ERROR,
        "CAST(NULL AS TEXT)",
        "$1",
    );
    let spent = format!("{EXPIRED} AND attempts >= max_attempts");
    let requeue = format!(
        "UPDATE job_queue SET status = 'pending', last_error = {ERROR}, locked_until = NULL, run_at = $1, \
         updated_at = $1 WHERE {EXPIRED}"
    );
    let (pg_fail, [copy, delete]) = finish_statements(&spent, &values);
    match &db.0.conn {
        Conn::Postgres(pg) => {
            // The jobs with attempts left: those the failing statement did not take.
            let failed = sqlx::query(AssertSqlSafe(pg_fail))
                .bind(now)
                .execute(pg)
                .await?
                .rows_affected();
            let requeued = sqlx::query(AssertSqlSafe(format!(
                "{requeue} AND attempts < max_attempts"
            )))
            .bind(now)
            .execute(pg)
            .await?
            .rows_affected();
            if requeued > 0 {
                wake_runners(db);
            }
            Ok(failed + requeued)
        }
        Conn::Sqlite { write, .. } => {
            let mut tx = write.begin_with("BEGIN IMMEDIATE").await?;
            let failed = sqlx::query(AssertSqlSafe(copy))
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query(AssertSqlSafe(delete))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let requeued = sqlx::query(AssertSqlSafe(requeue))
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            if requeued > 0 {
                wake_runners(db);
            }
            Ok(failed + requeued)
        }
    }
}

pub async fn get(db: &UsersDb, id: &str) -> StoreResult<Job> {
    // One statement, one snapshot: a job moving between the tables is seen in exactly one.
    let sql = AssertSqlSafe(format!(
        "SELECT {QUEUE_JOB_COLUMNS} FROM job_queue WHERE id = $1 \
         UNION ALL SELECT {JOB_COLUMNS} FROM job_history WHERE id = $1"
    ));
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
    const COLUMNS: &str = "id, job_type, status, attempts, max_attempts, priority, run_at, cancel_requested, \
        last_error, created_at, updated_at";
    let condition = "($1 IS NULL OR status = $1) AND ($2 IS NULL OR job_type = $2)";
    // A status lives in one of the tables: read only that one. Otherwise each table gives its newest
    // `offset + limit` rows through its primary key and the page is cut from their merge.
    let (live, finished) = match filter.status.as_deref() {
        Some("pending" | "running") => (true, false),
        Some(_) => (false, true),
        None => (true, true),
    };
    let mut arms = Vec::new();
    let mut counts = Vec::new();
    if live {
        arms.push(format!(
            "SELECT * FROM (SELECT {COLUMNS}, CAST(NULL AS BIGINT) AS finished_at FROM job_queue \
             WHERE {condition} ORDER BY id DESC LIMIT $5) AS q"
        ));
        counts.push(format!(
            "(SELECT COUNT(*) FROM job_queue WHERE {condition})"
        ));
    }
    if finished {
        arms.push(format!(
            "SELECT * FROM (SELECT {COLUMNS}, finished_at FROM job_history \
             WHERE {condition} ORDER BY id DESC LIMIT $5) AS h"
        ));
        counts.push(format!(
            "(SELECT COUNT(*) FROM job_history WHERE {condition})"
        ));
    }
    let items = AssertSqlSafe(format!(
        "SELECT * FROM ({}) AS a ORDER BY id DESC LIMIT $3 OFFSET $4",
        arms.join(" UNION ALL ")
    ));
    let count = AssertSqlSafe(format!("SELECT {}", counts.join(" + ")));
    let rows = on_reader!(db, |p| sqlx::query_as(items)
        .bind(&filter.status)
        .bind(&filter.job_type)
        .bind(limit)
        .bind(offset)
        .bind(limit.saturating_add(offset))
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
            "SELECT status, job_type, COUNT(*) FROM jobs GROUP BY status, job_type ORDER BY status, job_type",
        )
        .fetch_all(p)
        .await
    })?)
}

/// Counts of pending and running jobs (the live queue), cheap enough to sample every few seconds.
pub async fn live_counts(db: &UsersDb) -> StoreResult<(i64, i64)> {
    let pending = on_reader!(db, |p| sqlx::query_scalar(
        "SELECT COUNT(*) FROM job_queue WHERE status = 'pending'"
    )
    .fetch_one(p)
    .await)?;
    let running = on_reader!(db, |p| sqlx::query_scalar(
        "SELECT COUNT(*) FROM job_queue WHERE status = 'running' AND locked_by IS NOT NULL"
    )
    .fetch_one(p)
    .await)?;
    Ok((pending, running))
}

/// Makes a failed or cancelled job pending again with a fresh attempt budget: its row moves back
/// from the history to the queue. `NotFound` for an unknown id; `Conflict` when the job is in
/// another state (or a live job holds its dedup key).
pub async fn retry(db: &UsersDb, id: &str, now: i64) -> StoreResult<Job> {
    const QUEUE_COLUMNS: &str = "id, job_type, payload, dedup_key, status, attempts, max_attempts, priority, run_at, \
        locked_by, locked_until, heartbeat_at, started_at, cancel_requested, last_error, created_at, updated_at";
    const VALUES: &str = "h.id, h.job_type, h.payload, h.dedup_key, 'pending', 0, h.max_attempts, h.priority, $2, \
        CAST(NULL AS TEXT), CAST(NULL AS BIGINT), h.heartbeat_at, h.started_at, FALSE, h.last_error, h.created_at, $2";
    const RETRYABLE: &str = "id = $1 AND status IN ('failed', 'cancelled')";
    let updated: Option<Job> = match &db.0.conn {
        // A live job holding the dedup key makes the insert fail, and the delete with it.
        Conn::Postgres(pg) => {
            sqlx::query_as(AssertSqlSafe(format!(
                "WITH h AS (DELETE FROM job_history WHERE {RETRYABLE} RETURNING *) \
                 INSERT INTO job_queue ({QUEUE_COLUMNS}) SELECT {VALUES} FROM h RETURNING {QUEUE_JOB_COLUMNS}"
            )))
            .bind(id)
            .bind(now)
            .fetch_optional(pg)
            .await?
        }
        Conn::Sqlite { write, .. } => {
            let mut tx = write.begin_with("BEGIN IMMEDIATE").await?;
            let moved: Option<Job> = sqlx::query_as(AssertSqlSafe(format!(
                "INSERT INTO job_queue ({QUEUE_COLUMNS}) SELECT {VALUES} FROM job_history AS h \
                 WHERE {RETRYABLE} RETURNING {QUEUE_JOB_COLUMNS}"
            )))
            .bind(id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if moved.is_some() {
                sqlx::query("DELETE FROM job_history WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            moved
        }
    };
    match updated {
        Some(job) => {
            wake_runners(db);
            Ok(job)
        }
        None => {
            let job = get(db, id).await?;
            Err(StoreError::Conflict(format!(
                "job is {}; only failed or cancelled jobs can be retried",
                job.status
            )))
        }
    }
}

/// Cancels a job: a pending one at once (moved to the history), a running one by request (its
/// handler sees it and the job ends `cancelled`). `Conflict` for a finished job.
pub async fn cancel(db: &UsersDb, id: &str, now: i64) -> StoreResult<Job> {
    let lock = match backend(db) {
        // SQLite: the write transaction already excludes every other writer.
        Backend::Sqlite => "SELECT status FROM job_queue WHERE id = $1",
        Backend::Postgres => "SELECT status FROM job_queue WHERE id = $1 FOR UPDATE",
    };
    let values = history_values(
        "'cancelled'",
        "TRUE",
        "q.last_error",
        "CAST(NULL AS TEXT)",
        "$2",
    );
    let (pg_move, [copy, delete]) = finish_statements("id = $1", &values);
    let (pg_move, copy) = (
        format!("{pg_move} RETURNING {JOB_COLUMNS}"),
        format!("{copy} RETURNING {JOB_COLUMNS}"),
    );
    let request = format!(
        "UPDATE job_queue SET cancel_requested = TRUE, updated_at = $2 WHERE id = $1 RETURNING {QUEUE_JOB_COLUMNS}"
    );
    let is_postgres = backend(db) == Backend::Postgres;
    let updated: Option<Job> = in_transaction!(db, |tx| {
        let status: Option<String> = sqlx::query_scalar(lock)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let job: Option<Job> = match status.as_deref() {
            Some("pending") if is_postgres => {
                sqlx::query_as(AssertSqlSafe(pg_move.clone()))
                    .bind(id)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            Some("pending") => {
                let job = sqlx::query_as(AssertSqlSafe(copy.clone()))
                    .bind(id)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                sqlx::query(AssertSqlSafe(delete.clone()))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                job
            }
            Some(_) => {
                sqlx::query_as(AssertSqlSafe(request.clone()))
                    .bind(id)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            None => None,
        };
        tx.commit().await?;
        job
    });
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
        "SELECT finished_at - started_at FROM job_history WHERE status = 'succeeded' ORDER BY 1"
    )
    .fetch_all(p)
    .await)?)
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
