//! The job runner: claims ready jobs in batches, runs them on `concurrency` workers, finishes them in
//! batches, keeps their locks alive with heartbeats, rescues jobs whose runner died, and on shutdown
//! hands unfinished jobs back without spending an attempt.
//!
//! Correctness rests on the store's conditional statements (claim, finish only while holding the
//! lock, rescue only past the expiry), not on anything this process remembers: several runners, in
//! one process or many, can share a database.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use super::{Handlers, JobContext, JobError, StopSignal};
use crate::clock::SharedClock;
use crate::db::UsersDb;
use crate::domain::job_retry::{self, AfterFailure};
use crate::store::jobs::{self as job_store, ClaimedJob};

#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Jobs run at the same time by this runner.
    pub concurrency: usize,
    /// Most jobs claimed in one statement; claimed jobs wait in a local queue of this size.
    pub batch_size: usize,
    /// How long a claimed job stays locked without a heartbeat.
    pub visibility_timeout: Duration,
    /// How often an idle runner looks for work (PostgreSQL also wakes it by NOTIFY).
    pub poll_interval: Duration,
    /// How often to look for cancellation requests and expired locks.
    pub maintenance_interval: Duration,
    /// How long shutdown waits for running jobs before handing them back.
    pub shutdown_grace: Duration,
}

impl RunnerConfig {
    pub fn from_config(jobs: &crate::config::JobsConfig) -> Self {
        let visibility_timeout = Duration::from_secs(jobs.visibility_timeout_seconds);
        Self {
            concurrency: jobs.concurrency.max(1),
            batch_size: jobs.batch_size.max(1),
            visibility_timeout,
            poll_interval: Duration::from_millis(jobs.poll_interval_ms.max(10)),
            maintenance_interval: (visibility_timeout / 3)
                .clamp(Duration::from_millis(100), Duration::from_secs(1)),
            shutdown_grace: Duration::from_secs(jobs.shutdown_grace_seconds),
        }
    }
}

/// What a worker reports about one attempt.
struct Finished {
    id: String,
    job_type: String,
    attempts: i64,
    max_attempts: i64,
    outcome: Result<Option<Value>, JobError>,
    /// Cancellation was requested while the attempt ran: a failure then ends the job, whatever
    /// the handler said.
    cancel_requested: bool,
}

/// Jobs this runner holds: claimed and not yet finished.
#[derive(Default)]
struct Held {
    jobs: Mutex<HashMap<String, Arc<StopSignal>>>,
    count: AtomicUsize,
    changed: Notify,
    /// Attempts whose outcome was recorded, counted up (see [`RunningRunner::recorded`]).
    recorded: watch::Sender<u64>,
}

impl Held {
    fn insert(&self, id: &str, stop: Arc<StopSignal>) {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), stop);
        self.count.fetch_add(1, Ordering::SeqCst);
    }
    /// Forgets finished jobs; wakes waiters once for the lot.
    fn remove_all<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let removed = {
            let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            ids.into_iter()
                .filter(|id| jobs.remove(*id).is_some())
                .count()
        };
        if removed > 0 {
            self.count.fetch_sub(removed, Ordering::SeqCst);
            self.changed.notify_waiters();
            self.recorded
                .send_modify(|n| *n = n.wrapping_add(removed as u64));
        }
    }
    fn len(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
    fn signal(&self, id: &str) -> Option<Arc<StopSignal>> {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }
    fn ids(&self) -> Vec<String> {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }
    fn drain(&self) -> Vec<(String, Arc<StopSignal>)> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        self.count.store(0, Ordering::SeqCst);
        jobs.drain().collect()
    }
}

pub struct Runner {
    id: String,
    users: UsersDb,
    handlers: Arc<Handlers>,
    config: RunnerConfig,
    clock: SharedClock,
    /// Where `job_failed` goes when a job fails for good.
    webhooks: Option<Arc<super::webhooks::Webhooks>>,
}

/// A runner at work; [`RunningRunner::shutdown`] stops it gracefully.
pub struct RunningRunner {
    pub id: String,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    workers: Arc<tokio::sync::Mutex<JoinSet<()>>>,
    held: Arc<Held>,
    users: UsersDb,
    clock: SharedClock,
    grace: Duration,
}

impl Runner {
    pub fn new(
        users: UsersDb,
        handlers: Handlers,
        config: RunnerConfig,
        clock: SharedClock,
    ) -> Self {
        let id = format!(
            "runner-{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Self {
            id,
            users,
            handlers: Arc::new(handlers),
            config,
            clock,
            webhooks: None,
        }
    }

    /// Raises `job_failed` through these webhooks when a job fails for good.
    pub fn with_webhooks(mut self, webhooks: Arc<super::webhooks::Webhooks>) -> Self {
        self.webhooks = Some(webhooks);
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn start(self) -> RunningRunner {
        let (stop, stop_rx) = watch::channel(false);
        let held = Arc::new(Held::default());
        let (queue_tx, queue_rx) =
            mpsc::channel::<Claimed>(self.config.batch_size.max(self.config.concurrency) * 2);
        let queue_rx = Arc::new(tokio::sync::Mutex::new(queue_rx));
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Finished>();
        let shared = Arc::new(self);

        let mut workers = JoinSet::new();
        for _ in 0..shared.config.concurrency {
            workers.spawn(work(
                shared.clone(),
                queue_rx.clone(),
                done_tx.clone(),
                stop_rx.clone(),
            ));
        }
        let workers = Arc::new(tokio::sync::Mutex::new(workers));
        drop(done_tx);

        let mut tasks = JoinSet::new();
        for _ in 0..fetchers(&shared.users) {
            tasks.spawn(fetch(
                shared.clone(),
                queue_tx.clone(),
                held.clone(),
                stop_rx.clone(),
            ));
        }
        drop(queue_tx);
        tasks.spawn(finish(shared.clone(), done_rx, held.clone()));
        tasks.spawn(hear_cancels(shared.clone(), held.clone(), stop_rx.clone()));
        tasks.spawn(maintain(shared.clone(), held.clone(), stop_rx));
        RunningRunner {
            id: shared.id.clone(),
            stop,
            tasks,
            workers,
            held,
            users: shared.users.clone(),
            clock: shared.clock.clone(),
            grace: shared.config.shutdown_grace,
        }
    }
}

impl RunningRunner {
    /// How many job attempts this runner has finished and recorded in the database (succeeded,
    /// failed or cancelled, or failed for a retry), as a count that only grows: what the latency
    /// benchmark waits on.
    pub fn recorded(&self) -> watch::Receiver<u64> {
        self.held.recorded.subscribe()
    }

    /// Stops claiming, lets running jobs finish within the grace period, then hands the rest back
    /// to `pending` without spending their attempt.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let deadline = Instant::now() + self.grace;
        while self.held.len() > 0 && Instant::now() < deadline {
            let changed = self.held.changed.notified();
            if self.held.len() == 0 {
                break;
            }
            let _ =
                tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), changed)
                    .await;
        }
        let unfinished = self.held.drain();
        if !unfinished.is_empty() {
            for (_, signal) in &unfinished {
                signal.request_shutdown();
            }
            self.workers.lock().await.abort_all();
            let ids: Vec<String> = unfinished.into_iter().map(|(id, _)| id).collect();
            match job_store::release(&self.users, &self.id, &ids, self.clock.now_ms()).await {
                Ok(n) => {
                    tracing::info!(runner = %self.id, released = n, "handed unfinished jobs back")
                }
                Err(e) => {
                    tracing::error!(runner = %self.id, error = %e, "handing jobs back failed; they will be rescued")
                }
            }
        }
        // Workers have ended (or were aborted): the finisher drains what they reported, then stops.
        while self.workers.lock().await.join_next().await.is_some() {}
        while self.tasks.join_next().await.is_some() {}
    }
}

/// A claimed job on its way to a worker, with the signal that tells its handler to stop.
type Claimed = (ClaimedJob, Arc<StopSignal>);

/// How many claim loops a runner has: on PostgreSQL two, so that one claim statement runs while the
/// other's rows are sent and the server's cores share the work; SQLite has one writer, so one.
fn fetchers(users: &UsersDb) -> usize {
    match users.database().backend() {
        crate::db::Backend::Postgres => 2,
        crate::db::Backend::Sqlite => 1,
    }
}

/// Claims jobs while there is room in the local queue.
async fn fetch(
    runner: Arc<Runner>,
    queue: mpsc::Sender<Claimed>,
    held: Arc<Held>,
    mut stop: watch::Receiver<bool>,
) {
    let mut listener = pg_listener(&runner.users).await;
    let mut wakeup = runner.users.job_wakeup().subscribe();
    // Claimed jobs wait in a local queue of one batch more than there are claim loops, and a new
    // claim is made only when a whole batch fits: few, large claim statements instead of one per
    // finished job.
    let batch = runner.config.batch_size.max(runner.config.concurrency);
    let capacity = (fetchers(&runner.users) + 1) * batch;
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            return;
        }
        let room = capacity.saturating_sub(held.len());
        if room < batch {
            let changed = held.changed.notified();
            if capacity.saturating_sub(held.len()) < batch {
                tokio::select! {
                    _ = changed => {}
                    _ = stop.changed() => {}
                }
            }
            continue;
        }
        // Signals from here on wake the wait below: a job enqueued while this claim runs, after its
        // snapshot, is not lost.
        wakeup.mark_unchanged();
        let now = runner.clock.now_ms();
        let lock_until = now + runner.config.visibility_timeout.as_millis() as i64;
        let claimed =
            match job_store::claim(&runner.users, &runner.id, room as i64, now, lock_until).await {
                Ok(claimed) => {
                    failures = 0;
                    claimed
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(runner = %runner.id, error = %e, "claiming jobs failed");
                    let backoff = runner.config.poll_interval * failures.min(10);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
            };
        if claimed.is_empty() {
            let idle = idle_wait(&runner).await;
            wait_for_work(&runner.users, idle, &mut listener, &mut wakeup, &mut stop).await;
            continue;
        }
        for job in claimed {
            let signal = Arc::new(StopSignal::default());
            if job.cancel_requested {
                signal.request_cancel();
            }
            held.insert(&job.id, signal.clone());
            if queue.send((job, signal)).await.is_err() {
                return;
            }
        }
    }
}

/// How long an idle claim loop may sleep: until the next pending job is due, at most the poll
/// interval (which still finds jobs that another process enqueued on SQLite, or whose notification
/// was lost).
async fn idle_wait(runner: &Runner) -> Duration {
    // A due job that this claim did not get (another runner was taking it) is tried again soon.
    const RECHECK: Duration = Duration::from_millis(5);
    let poll = runner.config.poll_interval;
    match job_store::next_run_at(&runner.users).await {
        Ok(Some(at)) => {
            let until_due = at - runner.clock.now_ms();
            if until_due <= 0 {
                RECHECK.min(poll)
            } else {
                Duration::from_millis(until_due as u64).min(poll)
            }
        }
        Ok(None) => poll,
        Err(e) => {
            tracing::warn!(runner = %runner.id, error = %e, "reading the next due job failed");
            poll
        }
    }
}

/// Sleeps for `idle`, or until a job of this process, a notification from another (PostgreSQL), or
/// shutdown wakes it. A notification sent by this process's own connections is passed over: the
/// [`crate::db::JobWakeup`] woke the loop for that job already, and waking again only sent another
/// claim to the server just as the first one's job started.
async fn wait_for_work(
    users: &UsersDb,
    idle: Duration,
    listener: &mut Option<sqlx::postgres::PgListener>,
    wakeup: &mut watch::Receiver<u64>,
    stop: &mut watch::Receiver<bool>,
) {
    let poll = tokio::time::sleep(idle);
    tokio::pin!(poll);
    // The sender lives in the database handle this runner holds, so it never closes; if it did,
    // the poll would still end the wait.
    let woken = async {
        if wakeup.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(woken);
    match listener {
        Some(l) => loop {
            tokio::select! {
                _ = &mut poll => return,
                _ = &mut woken => return,
                _ = stop.changed() => return,
                notified = l.recv() => match notified {
                    Ok(n) if users.database().is_own_backend(n.process_id() as i32) => {}
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "job notifications lost; polling");
                        return;
                    }
                },
            }
        },
        None => {
            tokio::select! {
                _ = poll => {}
                _ = woken => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// PostgreSQL only: a listener for `poolkeeper_jobs` notifications. Polling remains the fallback.
async fn pg_listener(users: &UsersDb) -> Option<sqlx::postgres::PgListener> {
    let crate::db::Conn::Postgres(pool) = &users.0.conn else {
        return None;
    };
    let mut listener = match sqlx::postgres::PgListener::connect_with(pool).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot LISTEN for jobs; polling only");
            return None;
        }
    };
    match listener.listen("poolkeeper_jobs").await {
        Ok(()) => Some(listener),
        Err(e) => {
            tracing::warn!(error = %e, "cannot LISTEN for jobs; polling only");
            None
        }
    }
}

/// Runs claimed jobs, one at a time per worker.
async fn work(
    runner: Arc<Runner>,
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Claimed>>>,
    done: mpsc::UnboundedSender<Finished>,
    stop: watch::Receiver<bool>,
) {
    // Histogram handles by job type: looking one up by name and labels costs more than a no-op job.
    let mut durations: HashMap<String, metrics::Histogram> = HashMap::new();
    loop {
        let job = {
            let mut queue = queue.lock().await;
            tokio::select! {
                biased;
                job = queue.recv() => job,
                _ = wait_true(stop.clone()) => None,
            }
        };
        let Some((job, signal)) = job else { return };
        if *stop.borrow() {
            // Claimed but not started: shutdown hands it back.
            return;
        }
        let outcome = run_one(&runner, &job, signal.clone(), &mut durations).await;
        let finished = Finished {
            id: job.id,
            job_type: job.job_type,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            outcome,
            cancel_requested: signal.is_cancel_requested(),
        };
        if done.send(finished).is_err() {
            return;
        }
    }
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn run_one(
    runner: &Runner,
    job: &ClaimedJob,
    signal: Arc<StopSignal>,
    durations: &mut HashMap<String, metrics::Histogram>,
) -> Result<Option<Value>, JobError> {
    let Some(handler) = runner.handlers.get(&job.job_type) else {
        return Err(JobError::permanent(format!(
            "no handler is registered for job type {:?}",
            job.job_type
        )));
    };
    let payload: Value = serde_json::from_str(&job.payload)
        .map_err(|e| JobError::permanent(format!("payload is not valid JSON: {e}")))?;
    let ctx = JobContext::new(
        job.id.clone(),
        job.job_type.clone(),
        job.attempts,
        job.max_attempts,
        payload,
        signal,
    );
    let started = Instant::now();
    let outcome = handler(ctx).await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match durations.get(&job.job_type) {
        Some(histogram) => histogram.record(elapsed_ms),
        None => {
            let histogram = metrics::histogram!("job_duration_ms", "type" => job.job_type.clone());
            histogram.record(elapsed_ms);
            durations.insert(job.job_type.clone(), histogram);
        }
    }
    outcome
}

/// Records what workers report: successes in one statement per batch, failures one by one.
async fn finish(runner: Arc<Runner>, mut done: mpsc::UnboundedReceiver<Finished>, held: Arc<Held>) {
    const MAX_BATCH: usize = 1_000;
    // Waiting this long for more finished jobs turns many small writes into one.
    const LINGER: Duration = Duration::from_millis(2);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = done.recv().await {
        batch.push(first);
        let deadline = tokio::time::Instant::now() + LINGER;
        // Lingering helps only while other held jobs may still finish; a lone job (an idle queue)
        // is recorded at once.
        while batch.len() < MAX_BATCH && held.len() > batch.len() {
            match done.try_recv() {
                Ok(more) => batch.push(more),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, done.recv()).await {
                        Ok(Some(more)) => batch.push(more),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        let now = runner.clock.now_ms();
        let mut succeeded = Vec::with_capacity(batch.len());
        // Successes per job type: one counter update per type and batch, not per job.
        let mut succeeded_types: HashMap<String, u64> = HashMap::new();
        for f in batch.drain(..) {
            match f.outcome {
                Ok(result) => {
                    match succeeded_types.get_mut(&f.job_type) {
                        Some(n) => *n += 1,
                        None => {
                            succeeded_types.insert(f.job_type, 1);
                        }
                    }
                    succeeded.push((f.id, result.map(|v| v.to_string())));
                }
                Err(mut error) => {
                    if f.cancel_requested && !error.cancelled {
                        // No further attempt once a cancel was asked for.
                        error = JobError {
                            cancelled: true,
                            ..error
                        };
                    }
                    let status =
                        record_failure(&runner, &f.id, f.attempts, f.max_attempts, &error, now)
                            .await;
                    if status == "failed"
                        && let Some(webhooks) = &runner.webhooks
                    {
                        webhooks
                            .job_failed(&f.id, &f.job_type, f.attempts, &error.message)
                            .await;
                    }
                    metrics::counter!("jobs_finished_total", "type" => f.job_type, "status" => status).increment(1);
                    held.remove_all([f.id.as_str()]);
                }
            }
        }
        if !succeeded.is_empty() {
            record_success(&runner, &succeeded, now).await;
            for (job_type, n) in succeeded_types {
                metrics::counter!("jobs_finished_total", "type" => job_type, "status" => "succeeded").increment(n);
            }
            held.remove_all(succeeded.iter().map(|(id, _)| id.as_str()));
        }
    }
}

/// Records finished jobs, retrying a failed write while the jobs are still held (their heartbeats go
/// on meanwhile): a job whose work is done must not be rescued and run again because one write
/// failed. Only when the database stays unreachable do the locks expire, and then the jobs run again:
/// at least once, never lost.
async fn record_success(runner: &Runner, succeeded: &[(String, Option<String>)], now: i64) {
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=10 {
        match job_store::complete(&runner.users, &runner.id, succeeded, now).await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(runner = %runner.id, error = %e, attempt, jobs = succeeded.len(), "recording finished jobs failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    tracing::error!(runner = %runner.id, jobs = succeeded.len(), "gave up recording finished jobs; they will be rescued and run again");
}

/// Applies the retry rule to a failed attempt; returns the status the job ends in for now.
async fn record_failure(
    runner: &Runner,
    id: &str,
    attempts: i64,
    max_attempts: i64,
    error: &JobError,
    now: i64,
) -> &'static str {
    let result = if error.cancelled {
        job_store::finish_cancelled(&runner.users, &runner.id, id, now)
            .await
            .map(|_| "cancelled")
    } else {
        let jitter = random_unit();
        match job_retry::after_failure(error.kind, attempts, max_attempts, now, jitter) {
            AfterFailure::RetryAt(at) => job_store::fail_attempt(
                &runner.users,
                &runner.id,
                id,
                &error.message,
                Some(at),
                now,
            )
            .await
            .map(|_| "retrying"),
            AfterFailure::Fail => {
                job_store::fail_attempt(&runner.users, &runner.id, id, &error.message, None, now)
                    .await
                    .map(|_| "failed")
            }
        }
    };
    match result {
        Ok(status) => {
            tracing::warn!(job = %id, attempt = attempts, error = %error.message, status, "job attempt failed");
            status
        }
        Err(e) => {
            tracing::error!(job = %id, error = %e, "recording a failed attempt failed");
            "unknown"
        }
    }
}

fn random_unit() -> f64 {
    let mut bytes = [0u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

/// Passes cancel requests made in this process (`CancelRequests`) to the held job's handler at
/// once; requests from other processes arrive with the heartbeat in [`maintain`].
async fn hear_cancels(runner: Arc<Runner>, held: Arc<Held>, mut stop: watch::Receiver<bool>) {
    use tokio::sync::broadcast::error::RecvError;
    let mut cancels = runner.users.cancel_requests().subscribe();
    loop {
        let id = tokio::select! {
            id = cancels.recv() => id,
            _ = stop.changed() => return,
        };
        match id {
            Ok(id) => {
                if let Some(signal) = held.signal(&id) {
                    signal.request_cancel();
                }
            }
            // Missed ids are in the job rows: the next heartbeat reads them.
            Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

/// Heartbeats (lock extension and cancellation requests), rescue of expired jobs, queue-depth gauges.
async fn maintain(runner: Arc<Runner>, held: Arc<Held>, mut stop: watch::Receiver<bool>) {
    let vt_ms = runner.config.visibility_timeout.as_millis() as i64;
    // Looking for expired locks reads the whole live queue (no index covers the lock columns: users
    // migration 0004), so it runs at a tenth of the visibility timeout: a dead runner's jobs come
    // back at most that long after their locks run out. The first look, too, waits that long:
    // made at once, it read a deep queue (a million jobs not yet due: a few hundred milliseconds on
    // SQLite's single writer) just as the runner started working through it.
    let rescue_every =
        (runner.config.visibility_timeout / 10).max(runner.config.maintenance_interval);
    let mut last_rescue = Instant::now();
    let mut last_depth = Instant::now() - Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(runner.config.maintenance_interval) => {}
            _ = stop.changed() => {}
        }
        let now = runner.clock.now_ms();
        if held.len() > 0 {
            let ids = held.ids();
            match job_store::heartbeat(&runner.users, &runner.id, &ids, now, now + vt_ms).await {
                Ok(cancel) => {
                    for id in cancel {
                        if let Some(signal) = held.signal(&id) {
                            signal.request_cancel();
                        }
                    }
                }
                Err(e) => tracing::warn!(runner = %runner.id, error = %e, "heartbeat failed"),
            }
        }
        if *stop.borrow() {
            return;
        }
        if last_rescue.elapsed() >= rescue_every {
            last_rescue = Instant::now();
            match job_store::rescue_expired(&runner.users, now).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    rescued = n,
                    "rescued jobs whose runner stopped sending heartbeats"
                ),
                Err(e) => tracing::warn!(error = %e, "rescuing expired jobs failed"),
            }
        }
        if last_depth.elapsed() >= Duration::from_secs(5) {
            last_depth = Instant::now();
            if let Ok((pending, running)) = job_store::live_counts(&runner.users).await {
                metrics::gauge!("jobs_queue_depth", "status" => "pending").set(pending as f64);
                metrics::gauge!("jobs_queue_depth", "status" => "running").set(running as f64);
            }
            if let Ok(oldest) = job_store::oldest_due_run_at(&runner.users, now).await {
                let waited_ms = oldest.map_or(0, |run_at| (now - run_at).max(0));
                metrics::gauge!(crate::metrics::JOBS_OLDEST_PENDING_AGE)
                    .set(waited_ms as f64 / 1000.0);
            }
        }
    }
}
