//! All slow work runs as jobs: enqueue here, run in [`runner::Runner`], with handlers registered per
//! `job_type` in [`Handlers`]. The queue lives in the users database (`store::jobs`).

pub mod bench;
pub mod pool_sync;
pub mod runner;
pub mod scheduler;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;
use tokio::sync::Notify;

use crate::db::UsersDb;
use crate::domain::job_retry::FailureKind;
use crate::store::{self, StoreResult, jobs::NewJob};

/// Enqueues a job and counts it in `jobs_enqueued_total{type,deduplicated}`.
pub async fn enqueue(
    users: &UsersDb,
    job: &NewJob,
    default_max_attempts: u32,
    now: i64,
) -> StoreResult<(store::jobs::Job, bool)> {
    let (row, deduplicated) =
        store::jobs::enqueue(users, job, i64::from(default_max_attempts), now).await?;
    metrics::counter!("jobs_enqueued_total", "type" => job.job_type.clone(), "deduplicated" => deduplicated.to_string()).increment(1);
    Ok((row, deduplicated))
}

/// Enqueues many jobs in one transaction; returns (id, deduplicated) per job in input order.
pub async fn enqueue_many(
    users: &UsersDb,
    jobs: &[NewJob],
    default_max_attempts: u32,
    now: i64,
) -> StoreResult<Vec<(String, bool)>> {
    let out = store::jobs::enqueue_many(users, jobs, i64::from(default_max_attempts), now).await?;
    for (job, (_, deduplicated)) in jobs.iter().zip(&out) {
        metrics::counter!("jobs_enqueued_total", "type" => job.job_type.clone(), "deduplicated" => deduplicated.to_string()).increment(1);
    }
    Ok(out)
}

/// Why an attempt failed, and whether to try again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobError {
    pub kind: FailureKind,
    pub message: String,
    /// The handler stopped because cancellation was requested.
    pub cancelled: bool,
}

impl JobError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Transient,
            message: message.into(),
            cancelled: false,
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Permanent,
            message: message.into(),
            cancelled: false,
        }
    }
    pub fn retry_after(ms: i64, message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::RetryAfterMs(ms),
            message: message.into(),
            cancelled: false,
        }
    }
    /// The handler saw [`JobContext::is_cancelled`] and stopped; the job ends `cancelled`.
    pub fn cancelled() -> Self {
        Self {
            kind: FailureKind::Permanent,
            message: "cancelled on request".into(),
            cancelled: true,
        }
    }
}

/// Set when an admin asks to cancel a running job, or when the runner shuts down.
#[derive(Debug, Default)]
pub struct StopSignal {
    cancel_requested: AtomicBool,
    shutting_down: AtomicBool,
    notify: Notify,
}

impl StopSignal {
    pub(crate) fn request_cancel(&self) {
        self.cancel_requested.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
    pub(crate) fn request_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
}

/// What a handler gets: the job, and a way to notice cancellation.
#[derive(Clone, Debug)]
pub struct JobContext {
    pub id: String,
    pub job_type: String,
    /// 1 for the first attempt.
    pub attempt: i64,
    pub max_attempts: i64,
    pub payload: Value,
    stop: Arc<StopSignal>,
}

impl JobContext {
    pub fn new(
        id: String,
        job_type: String,
        attempt: i64,
        max_attempts: i64,
        payload: Value,
        stop: Arc<StopSignal>,
    ) -> Self {
        Self {
            id,
            job_type,
            attempt,
            max_attempts,
            payload,
            stop,
        }
    }

    /// An admin asked to cancel this job.
    pub fn is_cancelled(&self) -> bool {
        self.stop.cancel_requested.load(Ordering::SeqCst)
    }

    /// The runner is shutting down; the job will be handed back unless it finishes in the grace period.
    pub fn is_shutting_down(&self) -> bool {
        self.stop.shutting_down.load(Ordering::SeqCst)
    }

    /// Resolves when cancellation is requested or the runner shuts down.
    pub async fn stopped(&self) {
        loop {
            let notified = self.stop.notify.notified();
            if self.is_cancelled() || self.is_shutting_down() {
                return;
            }
            notified.await;
        }
    }
}

pub type JobResult = Result<Option<Value>, JobError>;
type BoxedHandler =
    Arc<dyn Fn(JobContext) -> Pin<Box<dyn Future<Output = JobResult> + Send>> + Send + Sync>;

/// Handlers by `job_type`.
#[derive(Clone, Default)]
pub struct Handlers(HashMap<String, BoxedHandler>);

impl Handlers {
    pub fn register<F, Fut>(&mut self, job_type: &str, handler: F)
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = JobResult> + Send + 'static,
    {
        self.0.insert(
            job_type.to_string(),
            Arc::new(move |ctx| Box::pin(handler(ctx))),
        );
    }

    pub fn get(&self, job_type: &str) -> Option<&BoxedHandler> {
        self.0.get(job_type)
    }

    pub fn job_types(&self) -> Vec<String> {
        let mut types: Vec<String> = self.0.keys().cloned().collect();
        types.sort();
        types
    }
}

/// Job types every poolkeeper process handles.
pub const NOOP: &str = "noop";
/// Sleeps `ms` milliseconds and appends start/done lines to `append_to`; for diagnosing the queue
/// (registered only with `jobs.diagnostic_handlers`).
pub const DIAGNOSTIC_SLEEP: &str = "diagnostic.sleep";

/// The built-in handlers.
pub fn builtin_handlers(diagnostic: bool) -> Handlers {
    let mut handlers = Handlers::default();
    handlers.register(NOOP, |_ctx| async { Ok(None) });
    if diagnostic {
        handlers.register(DIAGNOSTIC_SLEEP, diagnostic_sleep);
    }
    handlers
}

async fn diagnostic_sleep(ctx: JobContext) -> JobResult {
    use tokio::io::AsyncWriteExt;
    let ms = ctx.payload.get("ms").and_then(Value::as_u64).unwrap_or(0);
    let file = ctx
        .payload
        .get("append_to")
        .and_then(Value::as_str)
        .map(str::to_string);
    let append = |line: String| {
        let file = file.clone();
        async move {
            let Some(path) = file else { return Ok(()) };
            let mut f = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await?;
            f.write_all(line.as_bytes()).await?;
            f.sync_all().await
        }
    };
    append(format!("start {} attempt {}\n", ctx.id, ctx.attempt))
        .await
        .map_err(|e| JobError::transient(e.to_string()))?;
    tokio::select! {
        _ = tokio::time::sleep(std::time::Duration::from_millis(ms)) => {}
        _ = ctx.stopped() => {
            if ctx.is_cancelled() {
                return Err(JobError::cancelled());
            }
            return Err(JobError::transient("runner shutting down"));
        }
    }
    append(format!("done {} attempt {}\n", ctx.id, ctx.attempt))
        .await
        .map_err(|e| JobError::transient(e.to_string()))?;
    Ok(Some(
        serde_json::json!({"slept_ms": ms, "attempt": ctx.attempt}),
    ))
}
