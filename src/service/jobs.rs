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

/// Jobs one bulk action may name (a page of the list, with room to spare).
pub const MAX_BULK: usize = 100;
/// Jobs one "retry all failed of this type" retries at most; a larger backlog takes more clicks.
pub const MAX_RETRY_ALL: usize = 1000;

/// What a bulk action did: the jobs it changed, and those it left, with why.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BulkOutcome {
    pub done: Vec<String>,
    pub refused: Vec<(String, String)>,
}

impl BulkOutcome {
    fn add(&mut self, id: &str, outcome: Result<Job>) -> Result<()> {
        match outcome {
            Ok(_) => self.done.push(id.to_string()),
            // A job in another state, or an id naming none: that job is left, the rest go on.
            Err(e)
                if e.is_conflict() || e.is_not_found() || e.kind == super::ErrorKind::Invalid =>
            {
                self.refused.push((id.to_string(), e.message))
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BulkAction {
    Retry,
    Cancel,
}

/// Retries or cancels each of `ids` the way [`retry`] and [`cancel`] do one job (a sync job's
/// record is reopened or ended with it). Refusals of single jobs (wrong state, unknown id) are
/// reported, not errors; an empty or too long selection is invalid.
pub async fn bulk(
    pool: &PoolDb,
    users: &UsersDb,
    action: BulkAction,
    ids: &[String],
    now: i64,
) -> Result<BulkOutcome> {
    if ids.is_empty() {
        return Err(Error::invalid("no_jobs", "select at least one job"));
    }
    if ids.len() > MAX_BULK {
        return Err(Error::invalid(
            "too_many_jobs",
            format!("select at most {MAX_BULK} jobs at a time"),
        ));
    }
    let mut out = BulkOutcome::default();
    for id in ids {
        let outcome = match action {
            BulkAction::Retry => retry(pool, users, id, now).await,
            BulkAction::Cancel => cancel(pool, users, id, now).await,
        };
        out.add(id, outcome)?;
    }
    Ok(out)
}

/// Failed jobs of one type (for the confirmation of [`retry_failed_of_type`]).
pub async fn failed_of_type(users: &UsersDb, job_type: &str) -> Result<i64> {
    let f = filter(Some("failed".into()), Some(job_type.to_string()))?;
    if f.job_type.is_none() {
        return Err(Error::invalid("invalid_query", "type is required"));
    }
    Ok(store::list(users, &f, 1, 0).await?.1)
}

/// Retries the jobs of `job_type` that are failed when it starts, up to [`MAX_RETRY_ALL`]. It
/// lists them first and then retries each, so a retried job that fails again meanwhile is not
/// retried twice. Jobs that cannot be retried (a live job holds their dedup key) are reported.
pub async fn retry_failed_of_type(
    pool: &PoolDb,
    users: &UsersDb,
    job_type: &str,
    now: i64,
) -> Result<BulkOutcome> {
    const PAGE: i64 = 200;
    let f = filter(Some("failed".into()), Some(job_type.to_string()))?;
    if f.job_type.is_none() {
        return Err(Error::invalid("invalid_query", "type is required"));
    }
    let mut ids: Vec<String> = Vec::new();
    while ids.len() < MAX_RETRY_ALL {
        let offset = i64::try_from(ids.len()).unwrap_or(i64::MAX);
        let (page, _) = store::list(users, &f, PAGE, offset).await?;
        let last = page.len() < PAGE as usize;
        ids.extend(page.into_iter().map(|j| j.id));
        if last {
            break;
        }
    }
    ids.truncate(MAX_RETRY_ALL);
    ids.dedup();
    let mut out = BulkOutcome::default();
    for id in ids {
        let outcome = retry(pool, users, &id, now).await;
        out.add(&id, outcome)?;
    }
    Ok(out)
}

/// An object a job names in its payload, as a page links it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Subject {
    /// `mother`, `pool group` or `sync session`.
    pub kind: &'static str,
    /// The name (a sync session's id, cut short; `#id` when the object is gone).
    pub name: String,
    pub href: String,
}

/// What a payload names: mother ids, pool group ids, sync session ids.
type NamedIds = (Vec<i64>, Vec<i64>, Vec<String>);

/// The ids a payload names at its top level: mothers, pool groups, sync sessions.
fn named_ids(payload: &serde_json::Value) -> NamedIds {
    let (mut mothers, mut groups, mut sessions) = (Vec::new(), Vec::new(), Vec::new());
    if let Some(fields) = payload.as_object() {
        for (key, value) in fields {
            match (key.as_str(), value) {
                ("mother_id", v) => mothers.extend(v.as_i64()),
                ("mother_ids", serde_json::Value::Array(vs)) => {
                    mothers.extend(vs.iter().filter_map(|v| v.as_i64()))
                }
                ("group_id" | "pool_group_id", v) => groups.extend(v.as_i64()),
                ("session_id", serde_json::Value::String(s)) => sessions.push(s.clone()),
                _ => {}
            }
        }
    }
    (mothers, groups, sessions)
}

/// For each of `ids` (a page of jobs), the mothers, groups and sessions its payload names, by name.
/// Two reads of the users database's payloads and one name look-up per kind in the pool database.
pub async fn subjects(
    pool: &PoolDb,
    users: &UsersDb,
    ids: &[String],
) -> Result<BTreeMap<String, Vec<Subject>>> {
    let payloads = store::payloads(users, ids).await?;
    let named: Vec<(String, NamedIds)> = payloads
        .into_iter()
        .map(|(id, text)| {
            let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
            (id, named_ids(&value))
        })
        .collect();
    let all_mothers: Vec<i64> = named.iter().flat_map(|(_, n)| n.0.clone()).collect();
    let all_groups: Vec<i64> = named.iter().flat_map(|(_, n)| n.1.clone()).collect();
    let (mother_names, group_names) = tokio::try_join!(
        crate::store::names::mothers(pool, &all_mothers),
        crate::store::names::pool_groups(pool, &all_groups),
    )?;
    let label = |names: &std::collections::HashMap<i64, String>, id: i64| {
        names.get(&id).cloned().unwrap_or_else(|| format!("#{id}"))
    };
    Ok(named
        .into_iter()
        .map(|(job, (mothers, groups, sessions))| {
            let mut out: Vec<Subject> = Vec::new();
            out.extend(mothers.into_iter().map(|id| Subject {
                kind: "mother",
                name: label(&mother_names, id),
                href: format!("/mothers/{id}"),
            }));
            out.extend(groups.into_iter().map(|id| Subject {
                kind: "pool group",
                name: label(&group_names, id),
                href: format!("/pool-groups/{id}"),
            }));
            out.extend(sessions.into_iter().map(|s| Subject {
                kind: "sync session",
                href: format!("/sync-sessions/{s}"),
                // A session has no name; its UUID is cut to fit a table cell.
                name: match s.get(..8) {
                    Some(head) if s.len() > 13 => format!("{head}…"),
                    _ => s,
                },
            }));
            (job, out)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_mothers_groups_and_sessions() {
        let (m, g, s) = named_ids(&serde_json::json!({
            "mother_id": 7, "group_id": 2, "session_id": "abc", "record_id": 9, "other": 1
        }));
        assert_eq!((m, g, s), (vec![7], vec![2], vec!["abc".to_string()]));
        let (m, g, s) = named_ids(&serde_json::json!({"mother_ids": [1, 2], "pool_group_id": 3}));
        assert_eq!((m, g, s.len()), (vec![1, 2], vec![3], 0));
        let (m, g, s) = named_ids(&serde_json::json!([1, 2]));
        assert!(m.is_empty() && g.is_empty() && s.is_empty());
    }
}
