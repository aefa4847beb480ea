//! The job queue as people use it: list filters, one job, retry, cancel, statistics. The API, the
//! Jobs page and the CLI call these, so a retry wakes the runners from every door. The queue is in
//! the users database; retry and cancel also touch the pool database when the job is a pool sync
//! that runs under a sync-session record, so the record and its session's counters follow the job.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Error, Result};
use crate::db::{PoolDb, UsersDb};
use crate::jobs::JobArgs;
use crate::jobs::pool_sync::SyncMother;
use crate::store::StoreError;
use crate::store::jobs::{self as store, Job, JobFilter, JobSummary, STATUSES};
use crate::store::sync_sessions::{self, RecordOutcome};

/// Checks list filters; an empty value means "any".
pub fn filter(status: Option<String>, job_type: Option<String>) -> Result<JobFilter> {
    let status = status.filter(|s| !s.is_empty());
    if let Some(s) = &status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(Error::invalid(
            "invalid_query",
            format!("status must be one of {}", STATUSES.join(", ")),
        ));
    }
    let job_type = job_type.filter(|t| !t.is_empty());
    if let Some(t) = &job_type
        && (t.len() > 100
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
    {
        return Err(Error::invalid(
            "invalid_query",
            "type must be up to 100 letters, digits, '.', '_' or '-'",
        ));
    }
    Ok(JobFilter { status, job_type })
}

/// A page of jobs, newest first, and the total that match.
pub async fn list(
    users: &UsersDb,
    filter: &JobFilter,
    limit: i64,
    offset: i64,
) -> Result<(Vec<JobSummary>, i64)> {
    Ok(store::list(users, filter, limit, offset).await?)
}

fn check_id(id: &str) -> Result<()> {
    uuid::Uuid::parse_str(id)
        .map(drop)
        .map_err(|_| Error::invalid("invalid_path", "job id must be a UUID"))
}

fn job_error(id: &str) -> impl FnOnce(StoreError) -> Error + '_ {
    move |e| match e {
        StoreError::NotFound => Error::not_found(format!("no job {id}")),
        StoreError::Conflict(why) => Error::conflict(why),
        other => other.into(),
    }
}

pub async fn get(users: &UsersDb, id: &str) -> Result<Job> {
    check_id(id)?;
    store::get(users, id).await.map_err(job_error(id))
}

/// The sync-session record a pool sync job runs under, if it has one.
fn sync_record(job: &Job) -> Option<i64> {
    if job.job_type != SyncMother::KIND {
        return None;
    }
    serde_json::from_str::<SyncMother>(&job.payload)
        .ok()?
        .record_id
}

/// Makes a failed or cancelled job pending again with a fresh attempt budget and wakes the runners;
/// any other job is a conflict.
///
/// A pool sync job keeps running under its own sync-session record: the record is *reopened*
/// (pending again, its old outcome taken out of the session's counters, the session running
/// again) before the job is queued, so the runner never finds the job ready while its record is
/// still finished. Of two retries at once, the database lets one reopen the record and one move
/// the job back to the queue; the other answers a conflict. When the job cannot be queued (it is
/// not failed or cancelled, or a live sync of the same mother holds its dedup key), the record
/// gets its old outcome back.
pub async fn retry(pool: &PoolDb, users: &UsersDb, id: &str, now: i64) -> Result<Job> {
    check_id(id)?;
    let job = store::get(users, id).await.map_err(job_error(id))?;
    let reopened = match sync_record(&job) {
        Some(record) if matches!(job.status.as_str(), "failed" | "cancelled") => {
            match sync_sessions::reopen_record(pool, record).await {
                Ok(reopened) => reopened,
                // The session is gone (retention): the sync runs without a record.
                Err(StoreError::NotFound) => None,
                Err(e) => return Err(e.into()),
            }
        }
        _ => None,
    };
    let retried = match store::retry(users, id, now).await {
        Ok(job) => job,
        Err(e) => {
            if let Some(reopened) = &reopened {
                // Put the record back unless another retry made the job live meanwhile (it found
                // the record reopened by this one and queued the job first).
                let live = store::get(users, id)
                    .await
                    .is_ok_and(|j| matches!(j.status.as_str(), "pending" | "running"));
                if !live {
                    sync_sessions::restore_record(pool, reopened, now).await?;
                }
            }
            return Err(job_error(id)(e));
        }
    };
    store::notify_ready(users).await?;
    Ok(retried)
}

/// Cancels a pending job at once and asks a running one to stop; a finished job is a conflict. A
/// pool sync cancelled before it started ends its session record here (a running one ends it
/// itself).
pub async fn cancel(pool: &PoolDb, users: &UsersDb, id: &str, now: i64) -> Result<Job> {
    check_id(id)?;
    let job = store::cancel(users, id, now).await.map_err(job_error(id))?;
    if job.status == "cancelled"
        && let Some(record) = sync_record(&job)
    {
        let outcome = RecordOutcome {
            status: "cancelled",
            error_message: Some(crate::jobs::JobError::cancelled().message),
            details: serde_json::json!({"job_id": job.id}),
            ..RecordOutcome::default()
        };
        match sync_sessions::finish_record(pool, record, &outcome, now).await {
            Ok(()) | Err(StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(job)
}

#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct JobStats {
    /// Jobs per status (every status is present).
    pub by_status: BTreeMap<String, i64>,
    /// Jobs per type, with counts per status.
    pub by_type: BTreeMap<String, BTreeMap<String, i64>>,
    pub total: i64,
}

impl JobStats {
    /// Pending and running jobs.
    pub fn live(&self) -> i64 {
        ["pending", "running"]
            .iter()
            .filter_map(|s| self.by_status.get(*s))
            .sum()
    }
}

/// Counts of jobs by status and by type.
pub async fn stats(users: &UsersDb) -> Result<JobStats> {
    let mut stats = JobStats {
        by_status: STATUSES.iter().map(|s| (s.to_string(), 0)).collect(),
        ..JobStats::default()
    };
    for (status, job_type, n) in store::counts(users).await? {
        *stats.by_status.entry(status.clone()).or_default() += n;
        *stats
            .by_type
            .entry(job_type)
            .or_default()
            .entry(status)
            .or_default() += n;
        stats.total += n;
    }
    Ok(stats)
}
