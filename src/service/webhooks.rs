//! Events that no single request raises: a pool group's free seats crossing below
//! `webhooks_free_seats_threshold`, checked by housekeeping every minute (and by tests directly).
//! The other events are raised where their state changes (`jobs::webhooks`).

use serde_json::json;

use super::Result;
use crate::app::App;
use crate::domain::mothers::MotherStatus;
use crate::domain::webhooks::{WebhookEvent, seats_below};
use crate::store::{pool_groups, tallies};

/// Most active groups one check looks at (the metrics export has the same bound).
const MAX_GROUPS: i64 = 10_000;

/// Looks at every active group's free seats (of its active mothers, as the
/// `pool_group_seats{state="free"}` gauge counts them; a group with no mothers at all is not set
/// up yet and is left out): a group that is below the threshold and
/// was not raises `pool_below_threshold` once; one that is back at or above it is cleared, so a
/// later fall raises it again. Returns how many groups crossed below. Does nothing when no
/// endpoint wants the event or the threshold is 0.
pub async fn check_free_seats(app: &App) -> Result<usize> {
    let webhooks = &app.webhooks;
    let threshold = webhooks.free_seats_threshold;
    if threshold <= 0 || !webhooks.wants(WebhookEvent::PoolBelowThreshold) {
        return Ok(0);
    }
    // Which groups are marked low is read before the seats: a group marked by a check running
    // beside this one after its seats were read would otherwise look low and above at once to
    // this check, which would clear the mark, and the next check would report the crossing again.
    let low = pool_groups::seats_low_ids(&app.pool).await?;
    let rows = tallies::mothers(&app.pool).await?;
    let groups = pool_groups::active_names(&app.pool, MAX_GROUPS).await?;
    let now = app.clock.now_ms();
    let active = MotherStatus::Active.as_str();
    let mut crossed = 0;
    for (id, name) in groups {
        let (mut mothers, mut total, mut taken) = (0, 0, 0);
        for r in rows.iter().filter(|r| r.pool_group_id == Some(id)) {
            mothers += r.mothers;
            if r.status == active {
                total += r.seats_total;
                taken += r.seats_used + r.seats_held;
            }
        }
        if mothers == 0 {
            // A group without mothers is not set up yet rather than running low.
            continue;
        }
        let free = (total - taken).max(0);
        let was_low = low.contains(&id);
        if !seats_below(free, threshold) {
            if was_low {
                pool_groups::clear_seats_low(&app.pool, id).await?;
            }
            continue;
        }
        if was_low || !pool_groups::mark_seats_low(&app.pool, id, now).await? {
            continue;
        }
        crossed += 1;
        webhooks
            .emit(
                WebhookEvent::PoolBelowThreshold,
                &format!("group:{id}:{now}"),
                json!({
                    "pool_group_id": id,
                    "pool_group_name": name,
                    "free_seats": free,
                    "seats_total": total,
                    "threshold": threshold,
                }),
            )
            .await;
    }
    Ok(crossed)
}
