//! Queueing pool syncs: one mother, or every active mother of a group, each run recorded in a sync
//! session. The work itself is the `pool_sync_mother` job (`jobs::pool_sync`); this module owns the
//! request side: checks, the session and its records, and the enqueue with its dedup key.

use super::{Error, Result};
use crate::app::App;
use crate::jobs::{self, JobArgs, pool_sync::SyncMother};
use crate::store::sync_sessions::{self, NewSession, RecordOutcome};
use crate::store::{StoreError, mothers, pool_groups};

/// A queued single-mother sync.
#[derive(Clone, Debug)]
pub struct QueuedSync {
    pub job_id: String,
    pub deduplicated: bool,
    /// The session of the live job (this request's own unless deduplicated).
    pub session_id: Option<String>,
}

/// A queued sync of a whole group.
#[derive(Clone, Debug)]
pub struct QueuedGroupSync {
    pub session_id: String,
    /// One job per active mother, in mother order; a mother whose sync was already live keeps it.
    pub job_ids: Vec<String>,
}

fn new_session_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

async fn check_group(app: &App, group_id: i64) -> Result<()> {
    if pool_groups::exists(&app.pool, group_id).await? {
        Ok(())
    } else {
        Err(Error::not_found(format!("no pool group {group_id}")))
    }
}

/// Puts the mother in the group and enqueues her sync in a `manual_single` session. Concurrent
/// calls for one mother share one live job (the dedup key); a call that finds the job already
/// live drops its own session and reports the live job's.
pub async fn sync_mother(
    app: &App,
    group_id: i64,
    mother_id: i64,
    created_by: &str,
) -> Result<QueuedSync> {
    let now = app.clock.now_ms();
    check_group(app, group_id).await?;
    match mothers::set_pool_group(&app.pool, mother_id, group_id, now).await {
        Err(StoreError::NotFound) => {
            return Err(Error::not_found(format!("no mother {mother_id}")));
        }
        other => other?,
    }
    let session_id = new_session_id();
    let session = NewSession {
        sync_type: "manual_single",
        category: "pool",
        pool_group_id: Some(group_id),
        created_by: Some(created_by),
    };
    let records =
        sync_sessions::create(&app.pool, &session_id, &session, &[mother_id], now).await?;
    let record_id = records.first().map_or(0, |r| r.id);
    let job = SyncMother::in_session(mother_id, group_id, &session_id, record_id).to_job();
    let (row, deduplicated) =
        jobs::enqueue(&app.users, &job, app.config.jobs.max_attempts, now).await?;
    let session_id = if deduplicated {
        sync_sessions::delete(&app.pool, &session_id).await?;
        serde_json::from_str::<SyncMother>(&row.payload)
            .ok()
            .and_then(|p| p.session_id)
    } else {
        sync_sessions::set_record_job(&app.pool, record_id, &row.id).await?;
        Some(session_id)
    };
    Ok(QueuedSync {
        job_id: row.id,
        deduplicated,
        session_id,
    })
}

/// Enqueues a sync of every active mother of the group in one session of `sync_type`
/// (`manual_batch`, `scheduled`). A mother whose sync was already live keeps that job; her record
/// here is cancelled with a note naming it.
pub async fn sync_group(
    app: &App,
    group_id: i64,
    sync_type: &str,
    created_by: &str,
) -> Result<QueuedGroupSync> {
    let now = app.clock.now_ms();
    check_group(app, group_id).await?;
    let ids = mothers::ids_in_group(&app.pool, group_id, "active").await?;
    let session_id = new_session_id();
    let session = NewSession {
        sync_type,
        category: "pool",
        pool_group_id: Some(group_id),
        created_by: Some(created_by),
    };
    let records = sync_sessions::create(&app.pool, &session_id, &session, &ids, now).await?;
    let jobs: Vec<_> = records
        .iter()
        .map(|r| SyncMother::in_session(r.mother_id, group_id, &session_id, r.id).to_job())
        .collect();
    let out = jobs::enqueue_many(&app.users, &jobs, app.config.jobs.max_attempts, now).await?;
    for (record, (job_id, deduplicated)) in records.iter().zip(&out) {
        if *deduplicated {
            let note = RecordOutcome {
                status: "cancelled",
                error_message: Some(format!(
                    "a sync of mother {} was already queued as job {job_id}",
                    record.mother_id
                )),
                details: serde_json::json!({"job_id": job_id}),
                ..RecordOutcome::default()
            };
            sync_sessions::finish_record(&app.pool, record.id, &note, now).await?;
        } else {
            sync_sessions::set_record_job(&app.pool, record.id, job_id).await?;
        }
    }
    Ok(QueuedGroupSync {
        session_id,
        job_ids: out.into_iter().map(|(id, _)| id).collect(),
    })
}

/// The scheduler's round: a `scheduled` session for every active group with mothers; returns the
/// sessions started.
pub async fn schedule_group_syncs(app: &App) -> Result<Vec<String>> {
    let mut sessions = Vec::new();
    for group in pool_groups::list_all(&app.pool).await? {
        if !group.settings.is_active || group.mother_count == 0 {
            continue;
        }
        let queued = sync_group(app, group.id, "scheduled", "scheduler")
            .await
            .map_err(|e| {
                Error::new(
                    e.kind,
                    e.code,
                    format!("scheduling group {}: {}", group.name, e.message),
                )
            })?;
        tracing::info!(group = %group.name, jobs = queued.job_ids.len(), session_id = %queued.session_id, "scheduled sync");
        sessions.push(queued.session_id);
    }
    Ok(sessions)
}
