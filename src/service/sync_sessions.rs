//! Sync sessions as people use them: list filters, one session, statistics, cancel. A cancel
//! touches both databases: the session's pending records (pool) and their jobs (users).

use serde::Serialize;

use super::{Error, Result, one_of};
use crate::app::App;
use crate::domain::sync_sessions::{CATEGORIES, STATUSES, SYNC_TYPES};
use crate::store::StoreError;
use crate::store::sync_sessions::{
    self as store, Session, SessionDetail, SessionFilter, Statistics,
};

/// Checks list filters.
pub fn filter(
    sync_type: Option<String>,
    status: Option<String>,
    category: Option<String>,
) -> Result<SessionFilter> {
    Ok(SessionFilter {
        sync_type: one_of("sync_type", sync_type, &SYNC_TYPES)?,
        status: one_of("status", status, &STATUSES)?,
        category: one_of("category", category, &CATEGORIES)?,
    })
}

/// A page of sessions, newest first, and the total that match.
pub async fn list(
    app: &App,
    filter: &SessionFilter,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Session>, i64)> {
    Ok(store::list(&app.pool, filter, limit, offset).await?)
}

pub async fn statistics(app: &App) -> Result<Statistics> {
    Ok(store::statistics(&app.pool).await?)
}

fn not_found(id: &str) -> impl FnOnce(StoreError) -> Error + '_ {
    move |e| match e {
        StoreError::NotFound => Error::not_found(format!("no sync session {id}")),
        other => other.into(),
    }
}

/// One session with its records.
pub async fn get(app: &App, id: &str) -> Result<SessionDetail> {
    store::get(&app.pool, id).await.map_err(not_found(id))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CancelledSession {
    #[serde(flatten)]
    pub session: SessionDetail,
    /// Jobs of pending records that were cancelled.
    pub cancelled_jobs: usize,
}

/// Cancels a running session: its pending records and their jobs are cancelled; records already
/// running finish on their own. A session that is not running is a conflict.
pub async fn cancel(app: &App, id: &str) -> Result<CancelledSession> {
    let now = app.clock.now_ms();
    let jobs = match store::cancel(&app.pool, id, now)
        .await
        .map_err(not_found(id))?
    {
        Ok(jobs) => jobs,
        Err(status) => {
            return Err(Error::conflict(format!(
                "sync session {id} is {status}; only a running session can be cancelled"
            )));
        }
    };
    let mut cancelled_jobs = 0;
    for job in &jobs {
        // A job that already finished or started is left to end on its own.
        match crate::store::jobs::cancel(&app.users, job, now).await {
            Ok(_) => cancelled_jobs += 1,
            Err(StoreError::Conflict(_) | StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(CancelledSession {
        session: get(app, id).await?,
        cancelled_jobs,
    })
}

/// A mother's sync record with its job as it is now (`None` when the job is gone or never
/// queued).
#[derive(Clone, Debug)]
pub struct MotherSync {
    pub record: store::Record,
    pub job: Option<crate::store::jobs::Job>,
}

/// A mother's newest sync records (at most `limit`, newest first), each with its job.
pub async fn recent_of_mother(
    app: &crate::app::App,
    mother_id: i64,
    limit: i64,
) -> Result<Vec<MotherSync>> {
    let records = store::records_of_mother(&app.pool, mother_id, limit).await?;
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        let job = match &record.job_id {
            Some(id) => match crate::store::jobs::get(&app.users, id).await {
                Ok(job) => Some(job),
                Err(StoreError::NotFound) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        out.push(MotherSync { record, job });
    }
    Ok(out)
}
