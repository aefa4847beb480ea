//! `poolkeeper bench jobs`: how fast the queue drains no-op jobs. Bulk-enqueues N jobs (timed as
//! enqueue), runs them to completion with W workers (timed as drain, from the start of draining to
//! the last `finished_at` in the table) and reports claim-to-finish latency from the table.
//!
//! With `--latency`, how soon a job starts in an idle queue: N jobs enqueued one at a time, each
//! after the previous one finished, timed from the enqueue to the handler's start and to the
//! recorded finish. With `--backlog N`, either runs beside N pending jobs that are not due.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::runner::{Runner, RunnerConfig};
use super::{Handlers, enqueue_many};
use crate::clock;
use crate::db::{OpenOptions, UsersDb, is_postgres_url};
use crate::store::jobs::{self as job_store, NewJob};

pub const BENCH_JOB_TYPE: &str = "bench.noop";
/// The type of the not-due jobs `--backlog` loads (they never run).
pub const BENCH_BACKLOG_TYPE: &str = "bench.backlog";
/// How far ahead the backlog's jobs are due.
const BACKLOG_AHEAD_MS: i64 = 3_600_000;
/// Jobs not counted at the start of a latency run (connections and statement caches warm up).
const LATENCY_WARMUP: usize = 20;

#[derive(Clone, Debug)]
pub struct BenchJobs {
    pub jobs: usize,
    pub workers: usize,
    pub batch_size: usize,
    /// A scratch users database; a fresh SQLite file in a temp dir when `None`.
    pub database_url: Option<String>,
    /// Measure single-job latency in an idle queue instead of the drain rate.
    pub latency: bool,
    /// Pending jobs, due an hour later, loaded before the run.
    pub backlog: usize,
}

/// What a run reports: the drain or the latency figures.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum BenchReport {
    Drain(BenchJobsReport),
    Latency(BenchLatencyReport),
}

#[derive(Debug, Serialize)]
pub struct BenchLatencyReport {
    pub bench: &'static str,
    pub backend: &'static str,
    pub tls: Option<bool>,
    /// Jobs timed (after a few untimed ones).
    pub jobs: usize,
    pub workers: usize,
    pub batch_size: usize,
    pub backlog: usize,
    /// The runner's poll interval: the wait a job would have without a wake-up.
    pub poll_interval_ms: u64,
    /// From the enqueue call to the handler's start.
    pub start_p50_ms: f64,
    pub start_p99_ms: f64,
    pub start_max_ms: f64,
    /// From the enqueue call to the finished job recorded in the database.
    pub end_to_end_p50_ms: f64,
    pub end_to_end_p99_ms: f64,
    pub end_to_end_max_ms: f64,
    pub build: &'static str,
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
    /// Pending jobs that were not due, beside the drained ones.
    pub backlog: usize,
    pub backlog_load_seconds: f64,
    pub enqueue_seconds: f64,
    pub drain_seconds: f64,
    pub jobs_per_sec: f64,
    pub enqueue_per_sec: f64,
    pub latency_p50_ms: i64,
    pub latency_p99_ms: i64,
    pub build: &'static str,
}

pub async fn run(args: &BenchJobs) -> anyhow::Result<BenchReport> {
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
    let started = Instant::now();
    load_backlog(&users, args.backlog, clock.now_ms()).await?;
    let backlog_load_seconds = started.elapsed().as_secs_f64();
    let result = if args.latency {
        latency(&users, &url, args).await.map(BenchReport::Latency)
    } else {
        drain(&users, &url, args, backlog_load_seconds)
            .await
            .map(BenchReport::Drain)
    };
    job_store::delete_by_type(&users, BENCH_JOB_TYPE).await?;
    job_store::delete_by_type(&users, BENCH_BACKLOG_TYPE).await?;
    users.database().close().await;
    result
}

/// Loads `count` pending jobs due an hour from `now`, in transactions of 100,000.
async fn load_backlog(users: &UsersDb, count: usize, now: i64) -> anyhow::Result<()> {
    const CHUNK: usize = 100_000;
    let mut left = count;
    while left > 0 {
        let n = left.min(CHUNK);
        let chunk: Vec<NewJob> = (0..n)
            .map(|_| NewJob {
                run_at: Some(now + BACKLOG_AHEAD_MS),
                ..NewJob::new(BENCH_BACKLOG_TYPE, serde_json::Value::Null)
            })
            .collect();
        enqueue_many(users, &chunk, 1, now).await?;
        left -= n;
    }
    Ok(())
}

fn build() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

fn backend_name(url: &str) -> &'static str {
    if is_postgres_url(url) {
        "postgres"
    } else {
        "sqlite"
    }
}

/// The value at share `p` of an ascending slice (0 when empty).
fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    sorted
        .get(((sorted.len().saturating_sub(1)) as f64 * p).round() as usize)
        .copied()
        .unwrap_or_default()
}

/// Enqueues jobs one at a time into an idle runner with the default poll interval, each after the
/// previous one finished.
async fn latency(
    users: &UsersDb,
    url: &str,
    args: &BenchJobs,
) -> anyhow::Result<BenchLatencyReport> {
    let clock = clock::system();
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let mut handlers = Handlers::default();
    handlers.register(BENCH_JOB_TYPE, move |_ctx| {
        let _ = started_tx.send(Instant::now());
        async { Ok(None) }
    });
    let defaults = crate::config::JobsConfig::default();
    let config = RunnerConfig {
        concurrency: args.workers,
        batch_size: args.batch_size,
        ..RunnerConfig::from_config(&defaults)
    };
    let poll_interval_ms = config.poll_interval.as_millis() as u64;
    let runner = Runner::new(users.clone(), handlers, config, clock.clone()).start();
    let mut recorded = runner.recorded();
    let mut start_ms = Vec::with_capacity(args.jobs);
    let mut end_ms = Vec::with_capacity(args.jobs);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let result = async {
        for i in 0..LATENCY_WARMUP + args.jobs {
            let enqueued = Instant::now();
            super::enqueue(
                users,
                &NewJob::new(BENCH_JOB_TYPE, serde_json::Value::Null),
                1,
                clock.now_ms(),
            )
            .await?;
            let started = tokio::time::timeout(Duration::from_secs(30), started_rx.recv())
                .await
                .map_err(|_| anyhow::anyhow!("job {i} did not start within 30 s"))?
                .ok_or_else(|| anyhow::anyhow!("the handler is gone"))?;
            let target = (i + 1) as u64;
            tokio::time::timeout(Duration::from_secs(30), recorded.wait_for(|n| *n >= target))
                .await
                .map_err(|_| anyhow::anyhow!("job {i} was not recorded within 30 s"))??;
            let finished = Instant::now();
            if i >= LATENCY_WARMUP {
                start_ms.push(ms(started - enqueued));
                end_ms.push(ms(finished - enqueued));
            }
        }
        anyhow::Ok(())
    }
    .await;
    runner.shutdown().await;
    result?;
    start_ms.sort_by(f64::total_cmp);
    end_ms.sort_by(f64::total_cmp);
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    Ok(BenchLatencyReport {
        bench: "jobs_latency",
        backend: backend_name(url),
        tls: users.database().uses_tls().await?,
        jobs: args.jobs,
        workers: args.workers,
        batch_size: args.batch_size,
        backlog: args.backlog,
        poll_interval_ms,
        start_p50_ms: round(percentile(&start_ms, 0.50)),
        start_p99_ms: round(percentile(&start_ms, 0.99)),
        start_max_ms: round(percentile(&start_ms, 1.0)),
        end_to_end_p50_ms: round(percentile(&end_ms, 0.50)),
        end_to_end_p99_ms: round(percentile(&end_ms, 0.99)),
        end_to_end_max_ms: round(percentile(&end_ms, 1.0)),
        build: build(),
    })
}

/// Bulk-enqueues the jobs, then drains them.
async fn drain(
    users: &UsersDb,
    url: &str,
    args: &BenchJobs,
    backlog_load_seconds: f64,
) -> anyhow::Result<BenchJobsReport> {
    let clock = clock::system();
    let users = users.clone();
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
    // Done when every job's outcome is in the table (the backlog stays pending); the count of
    // succeeded jobs below checks it.
    let target = args.jobs as u64;
    runner.recorded().wait_for(|n| *n >= target).await?;
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
    Ok(BenchJobsReport {
        bench: "jobs",
        backend: backend_name(url),
        tls: users.database().uses_tls().await?,
        jobs: args.jobs,
        workers: args.workers,
        batch_size: args.batch_size,
        backlog: args.backlog,
        backlog_load_seconds,
        enqueue_seconds,
        drain_seconds,
        jobs_per_sec: args.jobs as f64 / drain_seconds,
        enqueue_per_sec: args.jobs as f64 / enqueue_seconds.max(1e-9),
        latency_p50_ms: pct(0.50),
        latency_p99_ms: pct(0.99),
        build: build(),
    })
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
