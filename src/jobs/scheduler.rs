//! The sync scheduler: every `pool_sync_interval_seconds` (off when 0), the leading process runs the
//! round it is handed (`service::pool_sync::schedule_group_syncs`: a sync of every active mother
//! of every active pool group, one `scheduled` session per group).
//! Only the holder of the scheduler lock (`store::leader`) schedules, so several processes on one
//! PostgreSQL database do not each start sessions; the jobs' dedup keys keep a mother from being
//! queued twice in any case.

use std::time::Duration;

use std::future::Future;

use tokio::sync::watch;

use crate::app::AppState;
use crate::store::leader;

/// Runs `round` every interval while this process holds the scheduler lock, until `stop`; does
/// nothing when the interval is 0.
pub fn spawn<F, Fut, E>(app: AppState, mut stop: watch::Receiver<bool>, round: F)
where
    F: Fn(AppState) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Vec<String>, E>> + Send,
    E: std::fmt::Display,
{
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
            if let Err(e) = round(app.clone()).await {
                tracing::warn!(error = %e, "scheduled sync failed");
            }
        }
    });
}
