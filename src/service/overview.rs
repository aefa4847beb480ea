//! The dashboard's answer to "is my pool healthy?": per pool group its mothers by status, seats
//! free / held / used, codes left against free seats and the last sync; the job queue; redeems;
//! mothers needing attention; the hourly job chart and the daily seat snapshots. Every figure is
//! read here through `store` aggregates (pool and users databases apart, never joined), so the
//! page only lays them out.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::Result;
use crate::db::{PoolDb, UsersDb};
use crate::store::overview::{self as store, AttentionMother, LastSync, QueueHealth};
use crate::store::seat_snapshots;

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// Groups the dashboard shows (the rest are counted in the totals).
const MAX_GROUPS: i64 = 100;
/// Mothers listed as needing attention, per reason.
const MAX_ATTENTION: i64 = 20;

/// Seats of active mothers: what can still be handed out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Seats {
    pub total: i64,
    pub used: i64,
    pub held: i64,
}

impl Seats {
    /// Seats neither used nor held (never below 0, even when counters run over a lowered limit).
    pub fn free(&self) -> i64 {
        (self.total - self.used - self.held).max(0)
    }
}

/// One pool group on the dashboard (`id` is `None` for mothers in no group).
#[derive(Clone, Debug, Serialize)]
pub struct GroupHealth {
    pub id: Option<i64>,
    pub name: String,
    /// Mothers per status (`active`, `invalid`, `disabled`; every one present).
    pub mothers: BTreeMap<String, i64>,
    /// Seats of the group's active mothers.
    pub seats: Seats,
    /// Unused, unexpired codes bound to this group.
    pub codes_left: i64,
    pub last_sync: Option<LastSync>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Overview {
    pub groups: Vec<GroupHealth>,
    /// Seats of every active mother.
    pub seats: Seats,
    /// Unused, unexpired codes of every group, and those valid for any group.
    pub codes_left: i64,
    /// Of those, codes valid for any group.
    pub codes_any_group: i64,
    pub redeemed_24h: i64,
    pub queue: QueueHealth,
    /// Mothers marked invalid, then mothers whose latest syncs failed in the last 24 h.
    pub invalid: Vec<AttentionMother>,
    pub failing: Vec<AttentionMother>,
}

const MOTHER_STATUSES: [&str; 3] = ["active", "invalid", "disabled"];

/// The dashboard's figures at `now`.
pub async fn overview(pool: &PoolDb, users: &UsersDb, now: i64) -> Result<Overview> {
    let since = now - DAY_MS;
    let (rows, names, last_syncs, invalid, failing) = tokio::try_join!(
        store::mothers_by_group_and_status(pool),
        store::groups(pool, MAX_GROUPS),
        store::last_sync_per_group(pool),
        store::invalid_mothers(pool, MAX_ATTENTION),
        store::failing_mothers(pool, since, MAX_ATTENTION),
    )?;
    let (queue, codes, redeemed_24h) = tokio::try_join!(
        store::queue_health(users, now, since),
        store::unused_codes_by_group(users, now),
        store::redeemed_since(users, since),
    )?;
    let blank = |id: Option<i64>, name: String| GroupHealth {
        id,
        name,
        mothers: MOTHER_STATUSES.iter().map(|s| (s.to_string(), 0)).collect(),
        seats: Seats::default(),
        codes_left: 0,
        last_sync: None,
    };
    let mut groups: Vec<GroupHealth> = names
        .into_iter()
        .map(|(id, name)| blank(Some(id), name))
        .collect();
    let mut index: HashMap<Option<i64>, usize> =
        groups.iter().enumerate().map(|(i, g)| (g.id, i)).collect();
    let mut seats = Seats::default();
    for row in rows {
        let active = row.status == "active";
        if active {
            seats.total += row.seats_total;
            seats.used += row.seats_used;
            seats.held += row.seats_held;
        }
        let i = match (index.get(&row.pool_group_id), row.pool_group_id) {
            (Some(i), _) => *i,
            // Mothers in no group get a row of their own; groups past MAX_GROUPS only the totals.
            (None, None) => {
                groups.push(blank(None, "(no group)".into()));
                index.insert(None, groups.len() - 1);
                groups.len() - 1
            }
            (None, Some(_)) => continue,
        };
        let g = &mut groups[i];
        *g.mothers.entry(row.status.clone()).or_default() += row.mothers;
        if active {
            g.seats.total += row.seats_total;
            g.seats.used += row.seats_used;
            g.seats.held += row.seats_held;
        }
    }
    let mut codes_left = 0;
    let mut codes_any_group = 0;
    for (group, n) in codes {
        codes_left += n;
        match group {
            None => codes_any_group += n,
            Some(_) => {
                if let Some(i) = index.get(&group) {
                    groups[*i].codes_left += n;
                }
            }
        }
    }
    for sync in last_syncs {
        if let Some(i) = index.get(&Some(sync.pool_group_id)) {
            groups[*i].last_sync = Some(sync);
        }
    }
    Ok(Overview {
        groups,
        seats,
        codes_left,
        codes_any_group,
        redeemed_24h,
        queue,
        invalid,
        failing,
    })
}

/// Jobs that finished per hour over the 24 whole hours up to and including the current one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HourlyJobs {
    /// Start of the first hour (ms).
    pub from: i64,
    pub succeeded: Vec<i64>,
    pub failed: Vec<i64>,
}

pub async fn jobs_per_hour(users: &UsersDb, now: i64) -> Result<HourlyJobs> {
    let to = (now.div_euclid(HOUR_MS) + 1) * HOUR_MS;
    let from = to - DAY_MS;
    let mut out = HourlyJobs {
        from,
        succeeded: vec![0; 24],
        failed: vec![0; 24],
    };
    for (hour, status, n) in store::finished_per_hour(users, from, to).await? {
        let Some(slot) = usize::try_from(hour).ok().filter(|h| *h < 24) else {
            continue;
        };
        match status.as_str() {
            "succeeded" => out.succeeded[slot] += n,
            "failed" => out.failed[slot] += n,
            _ => {}
        }
    }
    Ok(out)
}

/// Codes redeemed per hour over the 24 whole hours up to and including the current one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HourlyRedeems {
    /// Start of the first hour (ms).
    pub from: i64,
    pub redeemed: Vec<i64>,
}

pub async fn redeems_per_hour(users: &UsersDb, now: i64) -> Result<HourlyRedeems> {
    let to = (now.div_euclid(HOUR_MS) + 1) * HOUR_MS;
    let from = to - DAY_MS;
    let mut out = HourlyRedeems {
        from,
        redeemed: vec![0; 24],
    };
    for (hour, n) in store::redeemed_per_hour(users, from, to).await? {
        if let Some(slot) = usize::try_from(hour).ok().filter(|h| *h < 24) {
            out.redeemed[slot] += n;
        }
    }
    Ok(out)
}

/// The UTC day (`YYYY-MM-DD`) of a millisecond timestamp.
pub fn utc_day(ms: i64) -> String {
    let date = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .map(|t| t.date())
        .unwrap_or(time::Date::MIN);
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// Takes today's seat snapshot of every group that has none yet (housekeeping calls it; a second
/// call the same day writes nothing). Returns the rows written.
pub async fn take_seat_snapshots(pool: &PoolDb, now: i64) -> Result<u64> {
    Ok(seat_snapshots::take(pool, &utc_day(now), now).await?)
}

/// Seats used over time of one group: one point per day that has a snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct SeatHistory {
    pub pool_group_id: i64,
    pub name: String,
    /// (day, total, used, held), oldest first.
    pub days: Vec<(String, i64, i64, i64)>,
}

/// The last `days` days of snapshots, per group (groups by name).
pub async fn seat_history(pool: &PoolDb, now: i64, days: i64) -> Result<Vec<SeatHistory>> {
    let first = utc_day(now - (days - 1).max(0) * DAY_MS);
    let (rows, names) = tokio::try_join!(
        seat_snapshots::since(pool, &first, days * MAX_GROUPS),
        store::groups(pool, MAX_GROUPS),
    )?;
    let mut out: Vec<SeatHistory> = names
        .into_iter()
        .map(|(id, name)| SeatHistory {
            pool_group_id: id,
            name,
            days: Vec::new(),
        })
        .collect();
    let index: HashMap<i64, usize> = out
        .iter()
        .enumerate()
        .map(|(i, h)| (h.pool_group_id, i))
        .collect();
    for r in rows {
        if let Some(i) = index.get(&r.pool_group_id) {
            out[*i]
                .days
                .push((r.day, r.seats_total, r.seats_used, r.seats_held));
        }
    }
    out.retain(|h| !h.days.is_empty());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_day_of_timestamps() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(DAY_MS - 1), "1970-01-01");
        assert_eq!(utc_day(DAY_MS), "1970-01-02");
        // 2026-11-30T06:00:00Z
        assert_eq!(utc_day(1_796_018_400_000), "2026-11-30");
    }

    #[test]
    fn free_seats_never_go_below_zero() {
        let s = Seats {
            total: 5,
            used: 4,
            held: 3,
        };
        assert_eq!(s.free(), 0);
        let s = Seats {
            total: 10,
            used: 4,
            held: 3,
        };
        assert_eq!(s.free(), 3);
    }
}
