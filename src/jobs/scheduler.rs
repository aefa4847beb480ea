//! The sync scheduler: every `pool_sync_interval_seconds` (off when 0), the leading process queues
//! a sync of every active mother of every active pool group, one `scheduled` session per group.
//! Only the holder of the scheduler lock (`store::leader`) schedules, so several processes on one
//! PostgreSQL database do not each start sessions; the jobs' dedup keys keep a mother from being
//! queued twice in any case.

use std::time::Duration;

use tokio::sync::watch;

use crate::app::{App, AppState};
use crate::store::{self, leader};

/// Queues the scheduled syncs once; returns the sessions started.
pub async fn schedule_group_syncs(app: &App) -> anyhow::Result<Vec<String>> {
    let mut sessions = Vec::new();
    for group in store::pool_groups::list_all(&app.pool).await? {
        if !group.settings.is_active || group.mother_count == 0 {
            continue;
        }
        let (session_id, jobs) =
            super::pool_sync::enqueue_group_sync(app, group.id, "scheduled", "scheduler")
                .await
                .map_err(|e| anyhow::anyhow!("scheduling group {}: {}", group.name, e.message))?;
        tracing::info!(group = %group.name, jobs = jobs.len(), session_id, "scheduled sync");
        sessions.push(session_id);
    }
    Ok(sessions)
}

/// Runs the scheduler until `stop`; does nothing when the interval is 0.
pub fn spawn(app: AppState, mut stop: watch::Receiver<bool>) {
    let seconds = app.config.pool_sync_interval_seconds;
    if seconds == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(seconds));
        let mut guard: Option<leader::LeaderGuard> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if let Some(g) = guard.as_mut()
                && !g.still_leads().await
            {
                guard = None;
            }
            if guard.is_none() {
                match leader::try_lead(&app.pool, leader::SCHEDULER_LOCK).await {
                    Ok(g) => guard = g,
                    Err(e) => tracing::warn!(error = %e, "taking the scheduler lock failed"),
                }
            }
            if guard.is_none() {
                continue;
            }
            if let Err(e) = schedule_group_syncs(&app).await {
                tracing::warn!(error = %e, "scheduled sync failed");
            }
        }
    });
}
