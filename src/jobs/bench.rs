//! `poolkeeper bench jobs`: how fast the queue drains no-op jobs. Bulk-enqueues N jobs (timed as
//! enqueue), runs them to completion with W workers (timed as drain, from the start of draining to
//! the last `finished_at` in the table) and reports claim-to-finish latency from the table.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::runner::{Runner, RunnerConfig};
use super::{Handlers, enqueue_many};
use crate::clock;
use crate::db::{OpenOptions, UsersDb, is_postgres_url};
use crate::store::jobs::{self as job_store, NewJob};

pub const BENCH_JOB_TYPE: &str = "bench.noop";

#[derive(Clone, Debug)]
pub struct BenchJobs {
    pub jobs: usize,
    pub workers: usize,
    pub batch_size: usize,
    /// A scratch users database; a fresh SQLite file in a temp dir when `None`.
    pub database_url: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct BenchJobsReport {
    pub bench: &'static str,
    pub backend: &'static str,
    /// PostgreSQL: whether the connections use TLS (the URL's `sslmode`); null on SQLite.
    pub tls: Option<bool>,
    pub jobs: usize,
    pub workers: usize,
    pub batch_size: usize,
    pub enqueue_seconds: f64,
    pub drain_seconds: f64,
    pub jobs_per_sec: f64,
    pub enqueue_per_sec: f64,
    pub latency_p50_ms: i64,
    pub latency_p99_ms: i64,
    pub build: &'static str,
}

pub async fn run(args: &BenchJobs) -> anyhow::Result<BenchJobsReport> {
    let temp;
    let url = match &args.database_url {
        Some(url) => url.clone(),
        None => {
            temp = tempfile_dir()?;
            format!("sqlite://{}", temp.join("users.db").display())
        }
    };
    let users = UsersDb::open(
        &url,
        &OpenOptions {
            create: true,
            max_connections: 8,
        },
    )
    .await?;
    users.database().migrate().await?;
    // Start from an empty table of bench jobs (a scratch database may hold an earlier run).
    job_store::delete_by_type(&users, BENCH_JOB_TYPE).await?;
    let live = job_store::live_counts(&users).await?;
    anyhow::ensure!(
        live == (0, 0),
        "the database has other pending or running jobs; use a scratch database"
    );

    let clock = clock::system();
    let batch: Vec<NewJob> = (0..args.jobs)
        .map(|_| NewJob::new(BENCH_JOB_TYPE, serde_json::Value::Null))
        .collect();
    let started = Instant::now();
    enqueue_many(&users, &batch, 1, clock.now_ms()).await?;
    let enqueue_seconds = started.elapsed().as_secs_f64();
    drop(batch);

    // Handlers count their runs so the drain can be watched without querying the table in a loop.
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut handlers = Handlers::default();
    let counter = ran.clone();
    handlers.register(BENCH_JOB_TYPE, move |_ctx| {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async { Ok(None) }
    });
    let config = RunnerConfig {
        concurrency: args.workers,
        batch_size: args.batch_size,
        visibility_timeout: Duration::from_secs(300),
        poll_interval: Duration::from_millis(5),
        maintenance_interval: Duration::from_secs(1),
        shutdown_grace: Duration::from_secs(10),
    };
    let drain_start = clock.now_ms();
    let runner = Runner::new(users.clone(), handlers, config, clock.clone()).start();
    while ran.load(std::sync::atomic::Ordering::Relaxed) < args.jobs {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The table is the judge: done when no job is pending or running.
    while job_store::live_counts(&users).await? != (0, 0) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    runner.shutdown().await;
    let mut latencies = job_store::succeeded_latencies(&users).await?;
    anyhow::ensure!(
        latencies.len() == args.jobs,
        "{} of {} jobs succeeded",
        latencies.len(),
        args.jobs
    );
    let last_finished = job_store::last_finished_at(&users)
        .await?
        .unwrap_or(drain_start);
    let drain_seconds = ((last_finished - drain_start) as f64 / 1000.0).max(0.001);
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    let report = BenchJobsReport {
        bench: "jobs",
        backend: if is_postgres_url(&url) {
            "postgres"
        } else {
            "sqlite"
        },
        tls: users.database().uses_tls().await?,
        jobs: args.jobs,
        workers: args.workers,
        batch_size: args.batch_size,
        enqueue_seconds,
        drain_seconds,
        jobs_per_sec: args.jobs as f64 / drain_seconds,
        enqueue_per_sec: args.jobs as f64 / enqueue_seconds.max(1e-9),
        latency_p50_ms: pct(0.50),
        latency_p99_ms: pct(0.99),
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    };
    job_store::delete_by_type(&users, BENCH_JOB_TYPE).await?;
    users.database().close().await;
    Ok(report)
}

/// A fresh directory under the system temp dir, removed when the process ends normally.
fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "poolkeeper-bench-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir)?;
    BENCH_DIRS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(dir.clone());
    Ok(dir)
}

static BENCH_DIRS: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Removes the temp directories benchmarks made.
pub fn cleanup() {
    for dir in BENCH_DIRS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
    {
        let _ = std::fs::remove_dir_all(dir);
    }
}
