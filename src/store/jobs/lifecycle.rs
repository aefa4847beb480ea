//! The runner's side of the queue: claim due jobs, finish them (succeeded, failed, cancelled),
//! keep their locks alive, hand them back on shutdown, and rescue those whose runner died.

use sqlx::AssertSqlSafe;

use super::*;

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
        // lookups instead of scanning every pending row. `LIMIT CAST($4 AS INTEGER)`: SQLite
        // compiles a statement again whenever a bare `LIMIT` parameter is bound anew.
        Conn::Sqlite { write, .. } => {
            let priorities_sql = format!(
                "{} SELECT priority FROM p WHERE priority IS NOT NULL",
                pending_priorities("INDEXED BY job_queue_ready")
            );
            let claim_sql = format!(
                "UPDATE job_queue SET {CLAIM_SET} WHERE +status = 'pending' AND id IN (SELECT id FROM job_queue \
                 INDEXED BY job_queue_ready WHERE status = 'pending' AND priority = $5 AND run_at <= $3 \
                 ORDER BY run_at, id LIMIT CAST($4 AS INTEGER)) RETURNING {CLAIM_RETURNING}"
            );
            let mut conn = write.lock().await?;
            let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
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
            let mut conn = write.lock().await?;
            let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
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
            let mut conn = write.lock().await?;
            let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
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

/// When the longest-waiting due job became due (its `run_at`), or `None` when no pending job is
/// due at `now`; a job scheduled for later is not waiting yet. The earliest pending `run_at` is
/// that job's when it is due, so this is [`next_run_at`]: one index probe per priority, however
/// deep a backlog of jobs not yet due.
pub async fn oldest_due_run_at(db: &UsersDb, now: i64) -> StoreResult<Option<i64>> {
    Ok(next_run_at(db).await?.filter(|run_at| *run_at <= now))
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
