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
/// Histogram of how long leases lasted, observed when one ends (release, mission complete, expiry).
pub const POOL_LEASE_DURATION: &str = "pool_lease_duration_seconds";
