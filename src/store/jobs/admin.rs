//! The queue as people see it: one job, pages of jobs, counts, and the retry and cancel actions.

use sqlx::AssertSqlSafe;

use super::*;

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
    /// When the current (or last) attempt was claimed.
    pub started_at: Option<i64>,
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
        last_error, started_at, created_at, updated_at";
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

/// The payloads of the jobs among `ids` (at most a page's worth): (id, payload JSON text).
pub async fn payloads(db: &UsersDb, ids: &[String]) -> StoreResult<Vec<(String, String)>> {
    let ids: Vec<&String> = ids.iter().take(500).collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let list = placeholders.join(", ");
    let sql = format!(
        "SELECT id, payload FROM job_queue WHERE id IN ({list}) \
         UNION ALL SELECT id, payload FROM job_history WHERE id IN ({list})"
    );
    Ok(on_reader!(db, |p| {
        let mut q = sqlx::query_as(AssertSqlSafe(sql.clone()));
        for id in &ids {
            q = q.bind(*id);
        }
        q.fetch_all(p).await
    })?)
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
            let mut conn = write.lock().await?;
            let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
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
/// handler sees it and the job ends `cancelled`; this process's runners hear of it at once through
/// [`crate::db::CancelRequests`], other processes' at their next heartbeat). `Conflict` for a
/// finished job.
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
        Some(job) => {
            if job.status == "running" {
                // This process's runner stops the handler now; others see the row.
                db.cancel_requests().announce(&job.id);
            }
            Ok(job)
        }
        None => {
            let job = get(db, id).await?;
            Err(StoreError::Conflict(format!(
                "job is already {}",
                job.status
            )))
        }
    }
}
