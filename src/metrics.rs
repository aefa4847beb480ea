//! The process-wide Prometheus recorder. Metric names are part of poolkeeper's interface.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Seconds buckets for request durations.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Millisecond buckets for job and sync durations.
const DURATION_MS_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1_000.0, 5_000.0, 10_000.0, 60_000.0, 300_000.0,
];

/// Seconds buckets for lease durations: a lease lasts seconds to hours.
const LEASE_DURATION_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1_800.0, 3_600.0, 7_200.0, 14_400.0,
];

/// Installs the recorder on first use and returns its handle.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            // A full-name match wins over a suffix match.
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(POOL_LEASE_DURATION.into()),
                    LEASE_DURATION_BUCKETS,
                )
                .expect("bucket list is not empty")
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
                .expect("bucket list is not empty")
                .set_buckets_for_metric(Matcher::Suffix("_ms".into()), DURATION_MS_BUCKETS)
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding program); ours still renders.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

pub const ADMIN_API_REQUESTS: &str = "admin_api_requests_total";
pub const ADMIN_API_DURATION: &str = "admin_api_request_duration_seconds";
/// Gauge: when the last scheduled backup was written, seconds since the epoch.
pub const BACKUP_LAST_SUCCESS: &str = "backup_last_success_timestamp_seconds";
/// Gauge: the size of the last scheduled backup archive, in bytes.
pub const BACKUP_LAST_SIZE: &str = "backup_last_size_bytes";
pub const POOL_LEASES: &str = "pool_leases_total";
pub const POOL_ACCOUNTS: &str = "pool_accounts";
/// Gauge of invites by status (users database), sampled by housekeeping.
pub const INVITES: &str = "invites_total";
/// Histogram of how long leases lasted, observed when one ends (release, mission complete, expiry).
pub const POOL_LEASE_DURATION: &str = "pool_lease_duration_seconds";

/// Seconds the longest-waiting due job has waited (0 when none waits), sampled with
/// `jobs_queue_depth`.
pub const JOBS_OLDEST_PENDING_AGE: &str = "jobs_oldest_pending_age_seconds";
/// Mothers by status (`active`, `invalid`, `disabled`), from the tallies.
pub const POOL_MOTHERS: &str = "pool_mothers";
/// Seats of a group's active mothers by state (`free`, `used`, `held`).
pub const POOL_GROUP_SEATS: &str = "pool_group_seats";
/// The newest `last_synced_at` among a group's mothers, in Unix seconds.
pub const POOL_GROUP_LAST_SYNC: &str = "pool_group_last_sync_success_timestamp_seconds";
/// Credential accounts by pool and status.
pub const POOL_ACCOUNTS_BY_POOL: &str = "pool_accounts_by_pool";

/// Groups and pools beyond these counts get no labelled series, so a runaway number of groups
/// or pools cannot blow up the scrape; housekeeping logs a warning when it drops some.
pub const MAX_GROUP_SERIES: i64 = 200;
pub const MAX_POOL_SERIES: usize = 100;

const ACCOUNT_STATUSES: [&str; 5] = ["available", "in_use", "cooldown", "quarantined", "inactive"];

/// The groups and pools the last round exported, so a group or pool that disappears is set to NaN
/// (no alert compares true against NaN) instead of keeping its last value until a restart. The
/// housekeeping loop keeps one between rounds.
#[derive(Default)]
pub struct ExportedSeries {
    groups: std::collections::BTreeSet<String>,
    pools: std::collections::BTreeSet<String>,
}

/// Samples the pool's gauges the alert rules (`docs/alerts.yml`) read: mothers by status, seats
/// and last sync per active group, credential accounts by status overall and per pool. Each read
/// is a tally, an index probe per group, or the one pass over the accounts housekeeping always
/// made; none scans mothers or seats. Housekeeping calls it every minute; errors are logged and
/// the previous values stay.
pub async fn sample_pool_gauges(app: &crate::app::App, exported: &mut ExportedSeries) {
    use crate::store::{credential_accounts, mothers, pool_groups, tallies};

    let previous = exported;
    let mut current = ExportedSeries::default();

    match tallies::mothers(&app.pool).await {
        Ok(rows) => {
            for status in crate::domain::mothers::MotherStatus::ALL {
                let n: i64 = rows
                    .iter()
                    .filter(|r| r.status == status.as_str())
                    .map(|r| r.mothers)
                    .sum();
                metrics::gauge!(POOL_MOTHERS, "status" => status.as_str()).set(n as f64);
            }
            match pool_groups::active_names(&app.pool, MAX_GROUP_SERIES + 1).await {
                Ok(mut groups) => {
                    if groups.len() as i64 > MAX_GROUP_SERIES {
                        groups.truncate(MAX_GROUP_SERIES as usize);
                        tracing::warn!(
                            limit = MAX_GROUP_SERIES,
                            "more active groups than the metrics export; the rest have no series"
                        );
                    }
                    for (id, name) in groups {
                        let active = crate::domain::mothers::MotherStatus::Active.as_str();
                        let (mut total, mut used, mut held) = (0, 0, 0);
                        for r in rows
                            .iter()
                            .filter(|r| r.pool_group_id == Some(id) && r.status == active)
                        {
                            total += r.seats_total;
                            used += r.seats_used;
                            held += r.seats_held;
                        }
                        let free = (total - used - held).max(0);
                        for (state, n) in [("free", free), ("used", used), ("held", held)] {
                            metrics::gauge!(POOL_GROUP_SEATS, "group" => name.clone(), "state" => state)
                                .set(n as f64);
                        }
                        match mothers::last_synced_in_group(&app.pool, id).await {
                            Ok(Some(ms)) => {
                                metrics::gauge!(POOL_GROUP_LAST_SYNC, "group" => name.clone())
                                    .set(ms as f64 / 1000.0);
                            }
                            // Never synced: no series, rather than a 1970 time that would alert
                            // for a group created a minute ago.
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "reading a group's last sync failed")
                            }
                        }
                        current.groups.insert(name);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "listing groups for metrics failed");
                    current.groups = std::mem::take(&mut previous.groups);
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading the mother tallies for metrics failed");
            current.groups = std::mem::take(&mut previous.groups);
        }
    }
    for gone in previous.groups.difference(&current.groups) {
        for state in ["free", "used", "held"] {
            metrics::gauge!(POOL_GROUP_SEATS, "group" => gone.clone(), "state" => state)
                .set(f64::NAN);
        }
        metrics::gauge!(POOL_GROUP_LAST_SYNC, "group" => gone.clone()).set(f64::NAN);
    }

    let policy = app.config.leases.policy();
    match credential_accounts::count_by_pool_and_status(
        &app.pool,
        app.clock.now_ms(),
        policy.cooldown_ms,
    )
    .await
    {
        Ok(rows) => {
            let mut all = [0i64; ACCOUNT_STATUSES.len()];
            let mut pools: Vec<(String, [i64; ACCOUNT_STATUSES.len()])> = Vec::new();
            for (pool, status, n) in rows {
                // An unknown status counts as inactive, as `service::credential_accounts` does.
                let i = ACCOUNT_STATUSES
                    .iter()
                    .position(|s| *s == status)
                    .unwrap_or(ACCOUNT_STATUSES.len() - 1);
                all[i] += n;
                match pools.last_mut() {
                    Some((p, counts)) if *p == pool => counts[i] += n,
                    _ => {
                        let mut counts = [0; ACCOUNT_STATUSES.len()];
                        counts[i] = n;
                        pools.push((pool, counts));
                    }
                }
            }
            for (status, n) in ACCOUNT_STATUSES.iter().zip(all) {
                metrics::gauge!(POOL_ACCOUNTS, "status" => *status).set(n as f64);
            }
            if pools.len() > MAX_POOL_SERIES {
                tracing::warn!(
                    pools = pools.len(),
                    limit = MAX_POOL_SERIES,
                    "more credential pools than the metrics export; the rest have no series"
                );
                pools.truncate(MAX_POOL_SERIES);
            }
            for (pool, counts) in pools {
                for (status, n) in ACCOUNT_STATUSES.iter().zip(counts) {
                    metrics::gauge!(POOL_ACCOUNTS_BY_POOL, "pool" => pool.clone(), "status" => *status)
                        .set(n as f64);
                }
                current.pools.insert(pool);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "counting credential accounts for metrics failed");
            current.pools = std::mem::take(&mut previous.pools);
        }
    }
    for gone in previous.pools.difference(&current.pools) {
        for status in ACCOUNT_STATUSES {
            metrics::gauge!(POOL_ACCOUNTS_BY_POOL, "pool" => gone.clone(), "status" => status)
                .set(f64::NAN);
        }
    }
    *previous = current;
}
