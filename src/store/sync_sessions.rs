//! Sync sessions and their records (pool database). Only this module writes `sync_sessions` and
//! `sync_records`. A session row carries its record counters (`total_instances`, `successful`,
//! `failed`, `cancelled`); every record transition that changes them adds to them in the same
//! transaction, with the session row locked first, so concurrent record finishes serialise per
//! session, the last one sees every record finished, and no transition reads the other records
//! (a session of N records costs O(N), not O(N^2)). Unfinished (pending or running) records are
//! the total minus the finished ones: the pending -> running step changes no counter.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::FromRow;

use super::{StoreError, StoreResult};
use crate::db::{PoolDb, in_snapshot, in_transaction, on_reader, on_writer};
use crate::domain::sync_sessions::{self as rules, RecordCounts};

#[derive(Clone, Debug, FromRow, Serialize, utoipa::ToSchema)]
pub struct Session {
    pub session_id: String,
    /// `scheduled`, `manual_single` or `manual_batch`.
    pub sync_type: String,
    /// `pool`, `account`, `capacity`, `config` or `other`.
    pub category: String,
    /// `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    pub pool_group_id: Option<i64>,
    pub total_instances: i64,
    pub successful: i64,
    pub failed: i64,
    pub created_by: Option<String>,
    pub started_at: i64,
    pub completed_at: Option<i64>,
    /// Records that have finished (completed, failed or cancelled).
    pub finished: i64,
    /// Share of finished records, 0.0-1.0.
    #[sqlx(skip)]
    pub progress: f64,
}

impl Session {
    fn with_progress(mut self) -> Self {
        self.progress = if self.total_instances == 0 {
            1.0
        } else {
            self.finished as f64 / self.total_instances as f64
        };
        self
    }
}

const SESSION_COLUMNS: &str = "s.session_id, s.sync_type, s.category, s.status, s.pool_group_id, \
    s.total_instances, s.successful, s.failed, s.created_by, s.started_at, s.completed_at, \
    s.successful + s.failed + s.cancelled AS finished";

#[derive(Clone, Debug, FromRow, Serialize, utoipa::ToSchema)]
pub struct Record {
    pub id: i64,
    pub session_id: String,
    pub mother_id: i64,
    pub job_id: Option<String>,
    /// `pending`, `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub items_synced: i64,
    pub items_created: i64,
    pub items_updated: i64,
    pub items_deleted: i64,
    pub error_message: Option<String>,
    /// JSON text: the sync's report.
    pub details: String,
    pub created_at: i64,
}

const RECORD_COLUMNS: &str = "id, session_id, mother_id, job_id, status, started_at, completed_at, \
    items_synced, items_created, items_updated, items_deleted, error_message, details, created_at";

/// A session with its records.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SessionDetail {
    #[serde(flatten)]
    pub session: Session,
    pub records: Vec<Record>,
}

/// A session to open.
#[derive(Clone, Debug)]
pub struct NewSession<'a> {
    pub sync_type: &'a str,
    pub category: &'a str,
    pub pool_group_id: Option<i64>,
    pub created_by: Option<&'a str>,
}

/// How a record ended.
#[derive(Clone, Debug, Default)]
pub struct RecordOutcome {
    /// `completed`, `failed` or `cancelled`.
    pub status: &'static str,
    pub items_synced: i64,
    pub items_created: i64,
    pub items_updated: i64,
    pub items_deleted: i64,
    pub error_message: Option<String>,
    pub details: serde_json::Value,
}

/// Adds finished records to a session's counters and sets its status from them (inside a
/// transaction `$tx` that already locked the session row). `$finished` counts the records that
/// just finished, by outcome.
macro_rules! add_finished {
    ($tx:ident, $session_id:expr, $finished:expr, $now:expr) => {{
        let finished: RecordCounts = $finished;
        let (current, total, successful, failed, cancelled): (String, i64, i64, i64, i64) =
            sqlx::query_as(
                "UPDATE sync_sessions SET successful = successful + $2, failed = failed + $3, \
                 cancelled = cancelled + $4 WHERE session_id = $1 \
                 RETURNING status, total_instances, successful, failed, cancelled",
            )
            .bind($session_id)
            .bind(finished.completed)
            .bind(finished.failed)
            .bind(finished.cancelled)
            .fetch_one(&mut *$tx)
            .await?;
        let counts = RecordCounts::from_session(total, successful, failed, cancelled);
        let status = rules::session_status(&current, &counts);
        if status != current {
            sqlx::query(
                "UPDATE sync_sessions SET status = $2, completed_at = CASE WHEN $2 = 'running' \
                 THEN NULL ELSE COALESCE(completed_at, $3) END WHERE session_id = $1",
            )
            .bind($session_id)
            .bind(status)
            .bind($now)
            .execute(&mut *$tx)
            .await?;
        }
    }};
}

/// Opens a running session with one pending record per mother; returns the records in mother
/// order.
pub async fn create(
    db: &PoolDb,
    session_id: &str,
    s: &NewSession<'_>,
    mother_ids: &[i64],
    now: i64,
) -> StoreResult<Vec<Record>> {
    let record_sql = format!(
        "INSERT INTO sync_records (session_id, mother_id, status, created_at) \
         VALUES ($1, $2, 'pending', $3) RETURNING {RECORD_COLUMNS}"
    );
    in_transaction!(db, |tx| {
        sqlx::query(
            "INSERT INTO sync_sessions (session_id, sync_type, category, status, pool_group_id, \
             total_instances, created_by, started_at) VALUES ($1, $2, $3, 'running', $4, $5, $6, $7)",
        )
        .bind(session_id)
        .bind(s.sync_type)
        .bind(s.category)
        .bind(s.pool_group_id)
        .bind(i64::try_from(mother_ids.len()).unwrap_or(i64::MAX))
        .bind(s.created_by)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let mut records = Vec::with_capacity(mother_ids.len());
        for mother_id in mother_ids {
            let r: Record = sqlx::query_as(sqlx::AssertSqlSafe(record_sql.clone()))
                .bind(session_id)
                .bind(mother_id)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
            records.push(r);
        }
        // A session without records is done at once.
        add_finished!(tx, session_id, RecordCounts::default(), now);
        tx.commit().await?;
        Ok(records)
    })
}

/// Removes a session that never ran (its sync was already queued under another session).
pub async fn delete(db: &PoolDb, session_id: &str) -> StoreResult<()> {
    on_writer!(db, |p| sqlx::query(
        "DELETE FROM sync_sessions WHERE session_id = $1"
    )
    .bind(session_id)
    .execute(p)
    .await
    .map(drop))?;
    Ok(())
}

/// Notes which job runs a record.
pub async fn set_record_job(db: &PoolDb, record_id: i64, job_id: &str) -> StoreResult<()> {
    on_writer!(db, |p| sqlx::query(
        "UPDATE sync_records SET job_id = $2 WHERE id = $1"
    )
    .bind(record_id)
    .bind(job_id)
    .execute(p)
    .await
    .map(drop))?;
    Ok(())
}

/// A record's sync starts (again, after a retry or rescue). False when the record is no longer
/// pending or running (cancelled with its session): the sync must not run.
pub async fn start_record(db: &PoolDb, record_id: i64, now: i64) -> StoreResult<bool> {
    let n = on_writer!(db, |p| sqlx::query(
        "UPDATE sync_records SET status = 'running', started_at = COALESCE(started_at, $2) \
         WHERE id = $1 AND status IN ('pending', 'running')"
    )
    .bind(record_id)
    .bind(now)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

/// Ends a record and recomputes its session. A record already finished is left as it is.
pub async fn finish_record(
    db: &PoolDb,
    record_id: i64,
    outcome: &RecordOutcome,
    now: i64,
) -> StoreResult<()> {
    in_transaction!(db, |tx| {
        let session_id: Option<String> =
            sqlx::query_scalar("SELECT session_id FROM sync_records WHERE id = $1")
                .bind(record_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(session_id) = session_id else {
            return Err(StoreError::NotFound);
        };
        // Lock the session row first (see the module notes).
        sqlx::query("UPDATE sync_sessions SET status = status WHERE session_id = $1")
            .bind(&session_id)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query(
            "UPDATE sync_records SET status = $2, completed_at = $3, items_synced = $4, \
             items_created = $5, items_updated = $6, items_deleted = $7, error_message = $8, \
             details = $9 WHERE id = $1 AND status IN ('pending', 'running')",
        )
        .bind(record_id)
        .bind(outcome.status)
        .bind(now)
        .bind(outcome.items_synced)
        .bind(outcome.items_created)
        .bind(outcome.items_updated)
        .bind(outcome.items_deleted)
        .bind(&outcome.error_message)
        .bind(outcome.details.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Only a record that was still unfinished counts: a second finish changes nothing.
        if n > 0 {
            let mut finished = RecordCounts::default();
            finished.add(outcome.status, 1);
            add_finished!(tx, &session_id, finished, now);
        }
        tx.commit().await?;
        Ok(())
    })
}

/// A finished record that [`reopen_record`] made pending again, as it was before, with its
/// session's status then: what [`restore_record`] puts back when the retry cannot go ahead.
#[derive(Clone, Debug)]
pub struct Reopened {
    pub before: Record,
    pub session_status: String,
}

/// Makes a finished record pending again for a retried job (the record is reopened, not copied:
/// the job's payload names it). In one transaction, with the session row locked first: the
/// record's old outcome is taken back out of the session's counters, and the session, whatever it
/// had ended as, is running again. `Ok(None)` when the record was not finished (already reopened,
/// or its run never recorded an end); `NotFound` when it is gone.
pub async fn reopen_record(db: &PoolDb, record_id: i64) -> StoreResult<Option<Reopened>> {
    let select = format!("SELECT {RECORD_COLUMNS} FROM sync_records WHERE id = $1");
    in_transaction!(db, |tx| {
        let session_id: Option<String> =
            sqlx::query_scalar("SELECT session_id FROM sync_records WHERE id = $1")
                .bind(record_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(session_id) = session_id else {
            return Err(StoreError::NotFound);
        };
        let session_status: String = sqlx::query_scalar(
            "UPDATE sync_sessions SET status = status WHERE session_id = $1 RETURNING status",
        )
        .bind(&session_id)
        .fetch_one(&mut *tx)
        .await?;
        let before: Record = sqlx::query_as(sqlx::AssertSqlSafe(select.clone()))
            .bind(record_id)
            .fetch_one(&mut *tx)
            .await?;
        let n = sqlx::query(
            "UPDATE sync_records SET status = 'pending', started_at = NULL, completed_at = NULL, \
             items_synced = 0, items_created = 0, items_updated = 0, items_deleted = 0, \
             error_message = NULL, details = '{}' \
             WHERE id = $1 AND status IN ('completed', 'failed', 'cancelled')",
        )
        .bind(record_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(None);
        }
        let mut old = RecordCounts::default();
        old.add(&before.status, 1);
        sqlx::query(
            "UPDATE sync_sessions SET successful = successful - $2, failed = failed - $3, \
             cancelled = cancelled - $4, status = 'running', completed_at = NULL \
             WHERE session_id = $1",
        )
        .bind(&session_id)
        .bind(old.completed)
        .bind(old.failed)
        .bind(old.cancelled)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(Reopened {
            before,
            session_status,
        }))
    })
}

/// Undoes [`reopen_record`] while the record is still pending (its retry did not go ahead): the
/// record gets its old outcome back, the counters count it again, and a session that had been
/// cancelled is cancelled again. Does nothing once the record has started.
pub async fn restore_record(db: &PoolDb, reopened: &Reopened, now: i64) -> StoreResult<()> {
    let r = &reopened.before;
    in_transaction!(db, |tx| {
        sqlx::query("UPDATE sync_sessions SET status = status WHERE session_id = $1")
            .bind(&r.session_id)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query(
            "UPDATE sync_records SET status = $2, started_at = $3, completed_at = $4, \
             items_synced = $5, items_created = $6, items_updated = $7, items_deleted = $8, \
             error_message = $9, details = $10 WHERE id = $1 AND status = 'pending'",
        )
        .bind(r.id)
        .bind(&r.status)
        .bind(r.started_at)
        .bind(r.completed_at)
        .bind(r.items_synced)
        .bind(r.items_created)
        .bind(r.items_updated)
        .bind(r.items_deleted)
        .bind(&r.error_message)
        .bind(&r.details)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n > 0 {
            let mut back = RecordCounts::default();
            back.add(&r.status, 1);
            add_finished!(tx, &r.session_id, back, now);
            if reopened.session_status == "cancelled" {
                sqlx::query(
                    "UPDATE sync_sessions SET status = 'cancelled', \
                     completed_at = COALESCE(completed_at, $2) WHERE session_id = $1",
                )
                .bind(&r.session_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    })
}

/// Cancels a running session: its pending records are cancelled and their job ids returned (the
/// caller cancels the jobs). `Ok(Err(status))` when the session is not running.
pub async fn cancel(
    db: &PoolDb,
    session_id: &str,
    now: i64,
) -> StoreResult<Result<Vec<String>, String>> {
    in_transaction!(db, |tx| {
        sqlx::query("UPDATE sync_sessions SET status = status WHERE session_id = $1")
            .bind(session_id)
            .execute(&mut *tx)
            .await?;
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM sync_sessions WHERE session_id = $1")
                .bind(session_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(status) = status else {
            return Err(StoreError::NotFound);
        };
        if !rules::can_cancel(&status) {
            return Ok(Err(status));
        }
        let jobs: Vec<Option<String>> = sqlx::query_scalar(
            "UPDATE sync_records SET status = 'cancelled', completed_at = $2, \
             error_message = 'cancelled with the session' \
             WHERE session_id = $1 AND status = 'pending' RETURNING job_id",
        )
        .bind(session_id)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE sync_sessions SET status = 'cancelled', cancelled = cancelled + $2, \
             completed_at = COALESCE(completed_at, $3) WHERE session_id = $1",
        )
        .bind(session_id)
        .bind(i64::try_from(jobs.len()).unwrap_or(i64::MAX))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(jobs.into_iter().flatten().collect()))
    })
}

/// A session with its records, read in one snapshot so the counters on the session row agree
/// with the records listed under it.
pub async fn get(db: &PoolDb, session_id: &str) -> StoreResult<SessionDetail> {
    let sql = format!("SELECT {SESSION_COLUMNS} FROM sync_sessions s WHERE s.session_id = $1");
    let rsql =
        format!("SELECT {RECORD_COLUMNS} FROM sync_records WHERE session_id = $1 ORDER BY id");
    let (session, records): (Session, Vec<Record>) = in_snapshot!(db, |tx| {
        let session: Session = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(session_id)
            .fetch_one(&mut *tx)
            .await?;
        let records: Vec<Record> = sqlx::query_as(sqlx::AssertSqlSafe(rsql))
            .bind(session_id)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        (session, records)
    });
    Ok(SessionDetail {
        session: session.with_progress(),
        records,
    })
}

/// A session's status alone (`running`, `completed`, `failed` or `cancelled`): one row by its key,
/// for callers that wait for a session to end.
pub async fn status(db: &PoolDb, session_id: &str) -> StoreResult<String> {
    Ok(on_reader!(db, |p| sqlx::query_scalar(
        "SELECT status FROM sync_sessions WHERE session_id = $1"
    )
    .bind(session_id)
    .fetch_one(p)
    .await)?)
}

/// Which sessions a page lists.
#[derive(Clone, Debug, Default)]
pub struct SessionFilter {
    pub sync_type: Option<String>,
    pub status: Option<String>,
    pub category: Option<String>,
}

/// A page of sessions, newest first, and how many match.
pub async fn list(
    db: &PoolDb,
    f: &SessionFilter,
    limit: i64,
    offset: i64,
) -> StoreResult<(Vec<Session>, i64)> {
    const WHERE: &str = "WHERE ($1 IS NULL OR s.sync_type = $1) AND ($2 IS NULL OR s.status = $2) \
        AND ($3 IS NULL OR s.category = $3)";
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {SESSION_COLUMNS} FROM sync_sessions s {WHERE} \
         ORDER BY s.started_at DESC, s.session_id DESC LIMIT $4 OFFSET $5"
    ));
    let count_sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM sync_sessions s {WHERE}"));
    let items: Vec<Session> = on_reader!(db, |p| sqlx::query_as(sql)
        .bind(&f.sync_type)
        .bind(&f.status)
        .bind(&f.category)
        .bind(limit)
        .bind(offset)
        .fetch_all(p)
        .await)?;
    let total: i64 = on_reader!(db, |p| sqlx::query_scalar(count_sql)
        .bind(&f.sync_type)
        .bind(&f.status)
        .bind(&f.category)
        .fetch_one(p)
        .await)?;
    Ok((
        items.into_iter().map(Session::with_progress).collect(),
        total,
    ))
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Statistics {
    pub total_sessions: i64,
    pub running: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// Sessions started by the scheduler.
    pub scheduled: i64,
    /// Sessions started by an admin (`manual_single` and `manual_batch`).
    pub manual: i64,
    pub by_category: BTreeMap<String, i64>,
}

pub async fn statistics(db: &PoolDb) -> StoreResult<Statistics> {
    let rows: Vec<(String, String, String, i64)> = on_reader!(db, |p| sqlx::query_as(
        "SELECT status, sync_type, category, COUNT(*) FROM sync_sessions \
         GROUP BY status, sync_type, category"
    )
    .fetch_all(p)
    .await)?;
    let mut s = Statistics::default();
    for (status, sync_type, category, n) in rows {
        s.total_sessions += n;
        match status.as_str() {
            "running" => s.running += n,
            "completed" => s.completed += n,
            "failed" => s.failed += n,
            "cancelled" => s.cancelled += n,
            _ => {}
        }
        if sync_type == "scheduled" {
            s.scheduled += n;
        } else {
            s.manual += n;
        }
        *s.by_category.entry(category).or_default() += n;
    }
    Ok(s)
}

/// Removes sessions (and their records) started before `cutoff`; returns how many.
pub async fn delete_started_before(db: &PoolDb, cutoff: i64) -> StoreResult<u64> {
    Ok(on_writer!(db, |p| sqlx::query(
        "DELETE FROM sync_sessions WHERE started_at < $1 AND status <> 'running'"
    )
    .bind(cutoff)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?)
}

/// A mother's newest sync records (each names its session and job), newest first.
pub async fn records_of_mother(
    db: &PoolDb,
    mother_id: i64,
    limit: i64,
) -> StoreResult<Vec<Record>> {
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM sync_records WHERE mother_id = $1 ORDER BY id DESC LIMIT $2"
    );
    Ok(on_reader!(db, |p| sqlx::query_as(sqlx::AssertSqlSafe(
        sql
    ))
    .bind(mother_id)
    .bind(limit)
    .fetch_all(p)
    .await)?)
}
