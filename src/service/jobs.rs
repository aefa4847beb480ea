//! The job queue as people use it: list filters, one job, retry, cancel, statistics. The API, the
//! Jobs page and the CLI call these, so a retry wakes the runners from every door. They need only
//! the users database, which is all the CLI opens for them.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Error, Result};
use crate::db::UsersDb;
use crate::store::StoreError;
use crate::store::jobs::{self as store, Job, JobFilter, JobSummary, STATUSES};

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

/// Makes a failed or cancelled job pending again with a fresh attempt budget and wakes the runners;
/// any other job is a conflict.
pub async fn retry(users: &UsersDb, id: &str, now: i64) -> Result<Job> {
    check_id(id)?;
    let job = store::retry(users, id, now).await.map_err(job_error(id))?;
    store::notify_ready(users).await?;
    Ok(job)
}

/// Cancels a pending job at once and asks a running one to stop; a finished job is a conflict.
pub async fn cancel(users: &UsersDb, id: &str, now: i64) -> Result<Job> {
    check_id(id)?;
    store::cancel(users, id, now).await.map_err(job_error(id))
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
