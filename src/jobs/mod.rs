//! All slow work runs as jobs: enqueue here, run in [`runner::Runner`], with handlers registered per
//! `job_type` in [`Handlers`]. The queue lives in the users database (`store::jobs`).
//!
//! This layer is the engine and the handlers. A handler calls `domain`, `store` and providers,
//! never `service`: the request side of a job (checks, sessions, enqueue) lives in `service`.

pub mod bench;
pub mod codes;
pub mod invites;
pub mod pool_sync;
pub mod runner;
pub mod scheduler;
pub mod webhooks;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;
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

/// A job kind's typed payload: its type name, its JSON shape and its dedup key. A handler
/// registered with [`Handlers::register_job`] receives the decoded struct.
pub trait JobArgs: Serialize + DeserializeOwned + Send + 'static {
    /// The `job_type` stored with the job.
    const KIND: &'static str;

    /// Jobs with the same key share one live job; `None` never deduplicates.
    fn dedup_key(&self) -> Option<String> {
        None
    }

    /// The row to enqueue.
    fn to_job(&self) -> NewJob {
        // A derived `Serialize` of plain fields cannot fail.
        let payload = serde_json::to_value(self).unwrap_or(Value::Null);
        let job = NewJob::new(Self::KIND, payload);
        match self.dedup_key() {
            Some(key) => job.dedup_key(key),
            None => job,
        }
    }
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
    pub(crate) fn is_cancel_requested(&self) -> bool {
        self.cancel_requested.load(Ordering::SeqCst)
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

    /// Resolves when cancellation is requested (not on shutdown): race slow calls against it.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.stop.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
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

    /// Registers the handler of a typed job kind: the payload is decoded once, here; a payload that
    /// does not decode fails the job for good.
    pub fn register_job<A, F, Fut>(&mut self, handler: F)
    where
        A: JobArgs,
        F: Fn(JobContext, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = JobResult> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.register(A::KIND, move |ctx| {
            let handler = handler.clone();
            async move {
                let args = serde_json::from_value::<A>(ctx.payload.clone()).map_err(|e| {
                    JobError::permanent(format!("the payload of a {} job: {e}", A::KIND))
                })?;
                handler(ctx, args).await
            }
        });
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
/// The job type of [`DiagnosticSleep`].
pub const DIAGNOSTIC_SLEEP: &str = "diagnostic.sleep";

/// Sleeps `ms` milliseconds and appends start/done lines to `append_to`; for diagnosing the queue
/// (registered only with `jobs.diagnostic_handlers`).
#[derive(Clone, Debug, Default, serde::Deserialize, Serialize)]
pub struct DiagnosticSleep {
    #[serde(default)]
    pub ms: u64,
    #[serde(default)]
    pub append_to: Option<String>,
}

impl JobArgs for DiagnosticSleep {
    const KIND: &'static str = DIAGNOSTIC_SLEEP;
}

/// The built-in handlers.
pub fn builtin_handlers(diagnostic: bool) -> Handlers {
    let mut handlers = Handlers::default();
    handlers.register(NOOP, |_ctx| async { Ok(None) });
    if diagnostic {
        handlers.register_job(diagnostic_sleep);
    }
    handlers
}

async fn diagnostic_sleep(ctx: JobContext, args: DiagnosticSleep) -> JobResult {
    use tokio::io::AsyncWriteExt;
    let DiagnosticSleep {
        ms,
        append_to: file,
    } = args;
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
