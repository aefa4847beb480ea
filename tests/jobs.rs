//! The durable job queue: de-duplication in the database, runners, retries, cancel, rescue, shutdown.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestDbs, each_backend, wait_until};
use poolkeeper::clock::{Clock, ManualClock, SharedClock};
use poolkeeper::db::{OpenOptions, UsersDb};
use poolkeeper::jobs::runner::{Runner, RunnerConfig};
use poolkeeper::jobs::{self, Handlers, JobError};
use poolkeeper::server;
use poolkeeper::store::jobs::{self as job_store, NewJob};
use serde_json::json;

const T0: i64 = 1_800_000_000_000;

async fn users_db(dbs: &TestDbs) -> UsersDb {
    server::open_and_migrate(&dbs.config).await.unwrap().1
}

fn fast_config() -> RunnerConfig {
    RunnerConfig {
        concurrency: 4,
        batch_size: 50,
        visibility_timeout: Duration::from_secs(30),
        poll_interval: Duration::from_millis(20),
        maintenance_interval: Duration::from_millis(20),
        shutdown_grace: Duration::from_millis(300),
    }
}

/// How long a test waits for the runner to do something.
const WAIT: Duration = Duration::from_secs(60);

async fn status_of(users: &UsersDb, id: &str) -> (String, i64) {
    let job = job_store::get(users, id).await.unwrap();
    (job.status, job.attempts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_concurrent_enqueues_with_one_dedup_key_yield_one_job() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let users = users_db(&dbs).await;
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let users = users.clone();
            tasks.push(tokio::spawn(async move {
                let job = NewJob::new("noop", json!({"n": 1})).dedup_key("sync:mother-7");
                jobs::enqueue(&users, &job, 3, T0).await.unwrap()
            }));
        }
        let mut ids = std::collections::HashSet::new();
        let mut fresh = 0;
        for t in tasks {
            let (job, deduplicated) = t.await.unwrap();
            ids.insert(job.id);
            fresh += usize::from(!deduplicated);
        }
        assert_eq!(ids.len(), 1, "every caller gets the same job id");
        assert_eq!(fresh, 1, "exactly one caller created it");
        let (_, total) = job_store::list(&users, &Default::default(), 10, 0)
            .await
            .unwrap();
        assert_eq!(total, 1);

        // A finished job does not block a new one with the same key.
        let id = ids.into_iter().next().unwrap();
        let claimed = job_store::claim(&users, "r1", 10, T0, T0 + 1000)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            job_store::complete(&users, "r1", &[(id.clone(), None)], T0)
                .await
                .unwrap(),
            1
        );
        let (again, deduplicated) = jobs::enqueue(
            &users,
            &NewJob::new("noop", json!({})).dedup_key("sync:mother-7"),
            3,
            T0,
        )
        .await
        .unwrap();
        assert!(!deduplicated);
        assert_ne!(again.id, id);
    })
    .await;
}

#[tokio::test]
async fn bulk_enqueue_writes_many_jobs_in_one_transaction_and_dedups() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let users = users_db(&dbs).await;
        let existing = jobs::enqueue(
            &users,
            &NewJob::new("noop", json!({})).dedup_key("k-0"),
            3,
            T0,
        )
        .await
        .unwrap()
        .0;
        let mut batch: Vec<NewJob> = (0..2_500)
            .map(|i| NewJob::new("noop", json!({"i": i})))
            .collect();
        batch.push(NewJob::new("noop", json!({})).dedup_key("k-0"));
        batch.push(NewJob::new("noop", json!({})).dedup_key("k-1"));
        batch.push(NewJob::new("noop", json!({})).dedup_key("k-1"));
        let out = jobs::enqueue_many(&users, &batch, 3, T0).await.unwrap();
        assert_eq!(out.len(), 2_503);
        assert_eq!(out[2_500], (existing.id.clone(), true));
        assert!(!out[2_501].1);
        assert_eq!(out[2_502], (out[2_501].0.clone(), true));
        let (_, total) = job_store::list(&users, &Default::default(), 1, 0)
            .await
            .unwrap();
        assert_eq!(total, 2_502);
    })
    .await;
}

#[tokio::test]
async fn runner_runs_jobs_records_results_and_fails_unknown_types() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let users = users_db(&dbs).await;
        let mut handlers = Handlers::default();
        handlers.register("double", |ctx| async move {
            let n = ctx.payload["n"]
                .as_i64()
                .ok_or_else(|| JobError::permanent("n is required"))?;
            Ok(Some(json!({"doubled": n * 2})))
        });
        let clock: SharedClock = poolkeeper::clock::system();
        let now = clock.now_ms();
        let ok = jobs::enqueue(&users, &NewJob::new("double", json!({"n": 21})), 3, now)
            .await
            .unwrap()
            .0;
        let bad = jobs::enqueue(&users, &NewJob::new("double", json!({})), 3, now)
            .await
            .unwrap()
            .0;
        let unknown = jobs::enqueue(&users, &NewJob::new("no.such.type", json!({})), 3, now)
            .await
            .unwrap()
            .0;
        let runner = Runner::new(users.clone(), handlers, fast_config(), clock).start();
        for id in [&ok.id, &bad.id, &unknown.id] {
            wait_until("job finished", WAIT, || async {
                job_store::get(&users, id)
                    .await
                    .unwrap()
                    .finished_at
                    .is_some()
            })
            .await;
        }
        let ok = job_store::get(&users, &ok.id).await.unwrap();
        assert_eq!((ok.status.as_str(), ok.attempts), ("succeeded", 1));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(ok.result.as_deref().unwrap()).unwrap(),
            json!({"doubled": 42})
        );
        let bad = job_store::get(&users, &bad.id).await.unwrap();
        assert_eq!(
            (bad.status.as_str(), bad.attempts),
            ("failed", 1),
            "a permanent error is not retried"
        );
        assert_eq!(bad.last_error.as_deref(), Some("n is required"));
        let unknown = job_store::get(&users, &unknown.id).await.unwrap();
        assert_eq!(unknown.status, "failed");
        assert!(
            unknown
                .last_error
                .unwrap()
                .contains("no handler is registered for job type \"no.such.type\"")
        );
        runner.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn transient_failures_back_off_until_failed_and_retry_revives_the_job() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let users = users_db(&dbs).await;
        let clock = ManualClock::new(T0);
        let healthy = Arc::new(AtomicBool::new(false));
        let mut handlers = Handlers::default();
        let h = healthy.clone();
        handlers.register("flaky", move |_ctx| {
            let healthy = h.load(Ordering::SeqCst);
            async move {
                if healthy {
                    Ok(None)
                } else {
                    Err(JobError::transient("provider timed out"))
                }
            }
        });
        let job = jobs::enqueue(&users, &NewJob::new("flaky", json!({})), 3, T0)
            .await
            .unwrap()
            .0;
        let runner = Runner::new(users.clone(), handlers, fast_config(), clock.clone()).start();

        let mut last_run_at = T0;
        for attempt in 1..=2 {
            wait_until("attempt recorded", WAIT, || async {
                status_of(&users, &job.id).await == ("pending".into(), attempt)
            })
            .await;
            let row = job_store::get(&users, &job.id).await.unwrap();
            let delay = row.run_at - clock.now_ms();
            let base = 1000 * (1 << (attempt - 1));
            assert!(
                delay >= base * 3 / 4 && delay <= base * 5 / 4,
                "attempt {attempt}: backoff {delay} ms around {base}"
            );
            assert!(row.run_at > last_run_at);
            last_run_at = row.run_at;
            assert_eq!(row.last_error.as_deref(), Some("provider timed out"));
            // Nothing runs before the backoff has passed.
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(
                status_of(&users, &job.id).await,
                ("pending".into(), attempt)
            );
            clock.advance_ms(delay);
        }
        wait_until("failed after max attempts", WAIT, || async {
            status_of(&users, &job.id).await == ("failed".into(), 3)
        })
        .await;

        healthy.store(true, Ordering::SeqCst);
        let revived = job_store::retry(&users, &job.id, clock.now_ms())
            .await
            .unwrap();
        assert_eq!(
            (revived.status.as_str(), revived.attempts),
            ("pending", 0),
            "a fresh attempt budget"
        );
        wait_until("succeeded after retry", WAIT, || async {
            status_of(&users, &job.id).await == ("succeeded".into(), 1)
        })
        .await;
        assert!(matches!(
            job_store::retry(&users, &job.id, T0).await,
            Err(poolkeeper::store::StoreError::Conflict(_))
        ));
        runner.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn retry_after_from_the_handler_sets_the_next_run() {
    let dbs = TestDbs::new(&common::Backend::Sqlite).await;
    let users = users_db(&dbs).await;
    let clock = ManualClock::new(T0);
    let mut handlers = Handlers::default();
    handlers.register("limited", |_ctx| async {
        Err(JobError::retry_after(45_000, "rate limited"))
    });
    let job = jobs::enqueue(&users, &NewJob::new("limited", json!({})), 3, T0)
        .await
        .unwrap()
        .0;
    let runner = Runner::new(users.clone(), handlers, fast_config(), clock.clone()).start();
    wait_until("attempt recorded", WAIT, || async {
        status_of(&users, &job.id).await == ("pending".into(), 1)
    })
    .await;
    assert_eq!(
        job_store::get(&users, &job.id).await.unwrap().run_at,
        T0 + 45_000
    );
    runner.shutdown().await;
}

#[tokio::test]
async fn cancel_stops_a_pending_job_at_once_and_a_running_one_by_request() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let users = users_db(&dbs).await;
        let clock = poolkeeper::clock::system();
        let now = clock.now_ms();
        let pending = jobs::enqueue(
            &users,
            &NewJob {
                run_at: Some(now + 3_600_000),
                ..NewJob::new("slow", json!({}))
            },
            3,
            now,
        )
        .await
        .unwrap()
        .0;
        let cancelled = job_store::cancel(&users, &pending.id, now).await.unwrap();
        assert_eq!(cancelled.status, "cancelled");
        assert!(cancelled.finished_at.is_some());
        assert!(matches!(
            job_store::cancel(&users, &pending.id, now).await,
            Err(poolkeeper::store::StoreError::Conflict(_))
        ));

        let started = Arc::new(AtomicBool::new(false));
        let mut handlers = Handlers::default();
        let s = started.clone();
        handlers.register("slow", move |ctx| {
            s.store(true, Ordering::SeqCst);
            async move {
                ctx.stopped().await;
                if ctx.is_cancelled() {
                    Err(JobError::cancelled())
                } else {
                    Err(JobError::transient("shutdown"))
                }
            }
        });
        let running = jobs::enqueue(&users, &NewJob::new("slow", json!({})), 3, now)
            .await
            .unwrap()
            .0;
        let runner = Runner::new(users.clone(), handlers, fast_config(), clock.clone()).start();
        wait_until("handler started", WAIT, || async {
            started.load(Ordering::SeqCst)
        })
        .await;
        let requested = job_store::cancel(&users, &running.id, clock.now_ms())
            .await
            .unwrap();
        assert_eq!(
            (requested.status.as_str(), requested.cancel_requested),
            ("running", true)
        );
        wait_until("running job cancelled", WAIT, || async {
            status_of(&users, &running.id).await.0 == "cancelled"
        })
        .await;
        runner.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn graceful_shutdown_hands_unfinished_jobs_back_without_spending_attempts() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let users = users_db(&dbs).await;
        let clock = poolkeeper::clock::system();
        let started = Arc::new(AtomicUsize::new(0));
        let mut handlers = Handlers::default();
        let s = started.clone();
        // Ignores shutdown on purpose: only the grace period can end it.
        handlers.register("stubborn", move |_ctx| {
            s.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(None)
            }
        });
        handlers.register("quick", |_ctx| async { Ok(None) });
        let ids: Vec<String> = jobs::enqueue_many(
            &users,
            &(0..6)
                .map(|_| NewJob::new("stubborn", json!({})))
                .collect::<Vec<_>>(),
            3,
            clock.now_ms(),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
        let quick = jobs::enqueue(
            &users,
            &NewJob {
                priority: 10,
                ..NewJob::new("quick", json!({}))
            },
            3,
            clock.now_ms(),
        )
        .await
        .unwrap()
        .0;
        let runner = Runner::new(users.clone(), handlers, fast_config(), clock.clone()).start();
        wait_until("4 workers busy", WAIT, || async {
            started.load(Ordering::SeqCst) == 4
        })
        .await;
        wait_until("quick job done", WAIT, || async {
            status_of(&users, &quick.id).await.0 == "succeeded"
        })
        .await;
        runner.shutdown().await;
        for id in &ids {
            let job = job_store::get(&users, id).await.unwrap();
            assert_eq!(
                (job.status.as_str(), job.attempts),
                ("pending", 0),
                "{id} handed back with its attempt unspent"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn rescue_takes_expired_jobs_only_and_counts_the_attempt() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let users = users_db(&dbs).await;
        let first = jobs::enqueue(
            &users,
            &NewJob {
                max_attempts: Some(1),
                ..NewJob::new("noop", json!({}))
            },
            3,
            T0,
        )
        .await
        .unwrap()
        .0;
        let second = jobs::enqueue(&users, &NewJob::new("noop", json!({})), 3, T0)
            .await
            .unwrap()
            .0;
        let third = jobs::enqueue(&users, &NewJob::new("noop", json!({})), 3, T0)
            .await
            .unwrap()
            .0;
        // A dead runner holds `first` and `second`; a live one holds `third` and keeps beating.
        let claimed = job_store::claim(&users, "dead", 2, T0, T0 + 1_000)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 2);
        assert_eq!(
            job_store::claim(&users, "alive", 1, T0, T0 + 1_000)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(
            // `first` is not its job: naming it extends nothing.
            job_store::heartbeat(
                &users,
                "alive",
                &[third.id.clone(), first.id.clone()],
                T0 + 900,
                T0 + 2_000
            )
            .await
            .unwrap()
            .is_empty()
        );

        assert_eq!(
            job_store::rescue_expired(&users, T0 + 999).await.unwrap(),
            0,
            "nothing expired yet"
        );
        assert_eq!(
            job_store::rescue_expired(&users, T0 + 1_001).await.unwrap(),
            2
        );
        assert_eq!(
            status_of(&users, &first.id).await,
            ("failed".into(), 1),
            "no attempts left"
        );
        assert_eq!(
            status_of(&users, &second.id).await,
            ("pending".into(), 1),
            "the attempt is counted"
        );
        assert_eq!(
            status_of(&users, &third.id).await,
            ("running".into(), 1),
            "a live job is never taken"
        );
        // The dead runner cannot finish a job it lost.
        assert_eq!(
            job_store::complete(&users, "dead", &[(second.id.clone(), None)], T0 + 1_100)
                .await
                .unwrap(),
            0
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_runners_with_separate_pools_run_each_of_10000_jobs_exactly_once() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let users = users_db(&dbs).await;
        let batch: Vec<NewJob> = (0..10_000)
            .map(|i| NewJob::new("count", json!({"i": i})))
            .collect();
        jobs::enqueue_many(&users, &batch, 3, poolkeeper::clock::system().now_ms())
            .await
            .unwrap();
        let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let mut runners = Vec::new();
        for _ in 0..3 {
            // Each runner has its own connection pool, as a separate process would.
            let own = UsersDb::open(
                &dbs.config.users_database_url(),
                &OpenOptions {
                    create: false,
                    max_connections: 4,
                },
            )
            .await
            .unwrap();
            let mut handlers = Handlers::default();
            let seen = seen.clone();
            handlers.register("count", move |ctx| {
                *seen.lock().unwrap().entry(ctx.id.clone()).or_default() += 1;
                async { Ok(None) }
            });
            let config = RunnerConfig {
                concurrency: 8,
                batch_size: 200,
                ..fast_config()
            };
            runners.push(Runner::new(own, handlers, config, poolkeeper::clock::system()).start());
        }
        wait_until("all jobs succeeded", WAIT, || async {
            let (_, total) = job_store::list(
                &users,
                &job_store::JobFilter {
                    status: Some("succeeded".into()),
                    job_type: None,
                },
                1,
                0,
            )
            .await
            .unwrap();
            total == 10_000
        })
        .await;
        for r in runners {
            r.shutdown().await;
        }
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 10_000);
        assert!(seen.values().all(|n| *n == 1), "a job ran twice");
    })
    .await;
}

/// Applies the users migrations up to `version` to the database at `url`, as an older binary would.
async fn migrate_users_to(url: &str, version: i64) {
    use sqlx::migrate::Migrator;
    let folder = if url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    let path = format!("{}/migrations/{folder}/users", env!("CARGO_MANIFEST_DIR"));
    let mut migrator = Migrator::new(std::path::Path::new(&path)).await.unwrap();
    let older: Vec<_> = migrator
        .iter()
        .filter(|m| m.version <= version)
        .cloned()
        .collect();
    migrator.migrations = older.into();
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        migrator.run(&pool).await.unwrap();
        pool.close().await;
    } else {
        use std::str::FromStr;
        let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)
            .unwrap()
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        migrator.run(&pool).await.unwrap();
        pool.close().await;
    }
}

#[tokio::test]
async fn migration_to_queue_and_history_tables_carries_every_job_over() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        std::fs::create_dir_all(&dbs.config.data_dir).unwrap();
        let url = dbs.config.users_database_url();
        migrate_users_to(&url, 2).await;
        let (_, users) = server::open_databases(&dbs.config, true).await.unwrap();
        // Jobs as version 2 kept them: one table, every status.
        let rows = [
            ("j1", "pending", Some("k1"), None),
            ("j2", "running", Some("k2"), None),
            ("j3", "succeeded", Some("k1"), Some(r#"{"n":1}"#)),
            ("j4", "failed", None, None),
            ("j5", "cancelled", None, None),
        ];
        let values: Vec<String> = rows
            .iter()
            .map(|(id, status, key, result)| {
                let text = |v: Option<&str>| v.map_or("NULL".to_string(), |v| format!("'{v}'"));
                let live = matches!(*status, "pending" | "running");
                format!(
                    "('{id}', 'noop', '{{}}', {}, '{status}', 1, 3, {T0}, 'r', {}, 'earlier error', {}, {T0}, {T0}, {})",
                    text(*key),
                    if *status == "running" { (T0 + 1_000).to_string() } else { "NULL".into() },
                    text(*result),
                    if live { "NULL".to_string() } else { (T0 + 5).to_string() },
                )
            })
            .collect();
        let insert = sqlx::AssertSqlSafe(format!(
            "INSERT INTO jobs (id, job_type, payload, dedup_key, status, attempts, max_attempts, run_at, \
             locked_by, locked_until, last_error, result, created_at, updated_at, finished_at) VALUES {}",
            values.join(", ")
        ));
        if url.starts_with("postgres") {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::query(insert).execute(&pool).await.unwrap();
            pool.close().await;
        } else {
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            sqlx::query(insert).execute(&pool).await.unwrap();
            pool.close().await;
        }
        users.database().migrate().await.unwrap();

        for (id, status, key, result) in rows {
            let job = job_store::get(&users, id).await.unwrap();
            assert_eq!(job.status, status, "{id}");
            assert_eq!(job.dedup_key.as_deref(), key, "{id}");
            assert_eq!(job.result.as_deref(), result, "{id}");
            assert_eq!(job.last_error.as_deref(), Some("earlier error"), "{id}");
            assert_eq!(job.attempts, 1, "{id}");
        }
        let (_, total) = job_store::list(&users, &Default::default(), 10, 0)
            .await
            .unwrap();
        assert_eq!(total, 5);
        assert_eq!(job_store::live_counts(&users).await.unwrap(), (1, 1));
        // The live job still holds its key; the finished one with the same key does not.
        let (same, deduplicated) =
            jobs::enqueue(&users, &NewJob::new("noop", json!({})).dedup_key("k1"), 3, T0)
                .await
                .unwrap();
        assert!(deduplicated);
        assert_eq!(same.id, "j1");
        // Finished jobs can be retried, running ones are rescued from the queue table.
        assert_eq!(
            job_store::retry(&users, "j4", T0).await.unwrap().status,
            "pending"
        );
        assert_eq!(job_store::rescue_expired(&users, T0 + 2_000).await.unwrap(), 1);
        assert_eq!(status_of(&users, "j2").await.0, "pending");
    })
    .await;
}

#[tokio::test]
async fn a_batch_completion_records_each_jobs_own_result() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let users = users_db(&dbs).await;
        let batch: Vec<NewJob> = (0..300)
            .map(|i| NewJob::new("noop", json!({ "i": i })))
            .collect();
        poolkeeper::jobs::enqueue_many(&users, &batch, 3, T0)
            .await
            .unwrap();
        let claimed = job_store::claim(&users, "r", 300, T0, T0 + 1_000)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 300);
        // Every third job has a result, the others none: more ids than one statement carries.
        let results: Vec<(String, Option<String>)> = claimed
            .iter()
            .enumerate()
            .map(|(i, job)| {
                let result = json!({ "n": i, "text": "a \"quoted\" value" }).to_string();
                (job.id.clone(), (i % 3 == 0).then_some(result))
            })
            .collect();
        assert_eq!(
            job_store::complete(&users, "other", &results[..10], T0 + 5)
                .await
                .unwrap(),
            0,
            "another runner's jobs are left alone"
        );
        assert_eq!(
            job_store::complete(&users, "r", &results, T0 + 5)
                .await
                .unwrap(),
            300
        );
        for (id, result) in &results {
            let job = job_store::get(&users, id).await.unwrap();
            assert_eq!(job.status, "succeeded", "{id}");
            assert_eq!(job.result, *result, "{id}");
            assert_eq!(job.finished_at, Some(T0 + 5), "{id}");
        }
    })
    .await;
}

/// A runner whose poll interval (10 s) no test below waits for: only a wake-up can start its jobs.
fn long_poll_config() -> RunnerConfig {
    RunnerConfig {
        poll_interval: Duration::from_secs(10),
        maintenance_interval: Duration::from_secs(1),
        ..fast_config()
    }
}

/// Handlers with one type, `timed`, that reports the moment each of its runs starts.
fn timed_handlers() -> (
    Handlers,
    tokio::sync::mpsc::UnboundedReceiver<(std::time::Instant, i64)>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut handlers = Handlers::default();
    handlers.register("timed", move |_ctx| {
        let _ = tx.send((
            std::time::Instant::now(),
            poolkeeper::clock::system().now_ms(),
        ));
        async { Ok(None) }
    });
    (handlers, rx)
}

/// Lets a freshly started runner make its first (empty) claim and go idle.
async fn let_runner_go_idle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn an_enqueue_wakes_an_idle_runner_long_before_its_poll() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let users = users_db(&dbs).await;
        let clock = poolkeeper::clock::system();
        let (handlers, mut started) = timed_handlers();
        let runner =
            Runner::new(users.clone(), handlers, long_poll_config(), clock.clone()).start();
        for round in 0..3 {
            let_runner_go_idle().await;
            let enqueued = std::time::Instant::now();
            jobs::enqueue(&users, &NewJob::new("timed", json!({})), 3, clock.now_ms())
                .await
                .unwrap();
            let (at, _) = tokio::time::timeout(Duration::from_secs(5), started.recv())
                .await
                .expect("the job started before the poll interval")
                .unwrap();
            let waited = at - enqueued;
            assert!(
                waited < Duration::from_millis(500),
                "round {round}: started {waited:?} after the enqueue"
            );
        }
        runner.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_retry_wakes_an_idle_runner_long_before_its_poll() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let users = users_db(&dbs).await;
        let clock = poolkeeper::clock::system();
        let now = clock.now_ms();
        let job = jobs::enqueue(&users, &NewJob::new("timed", json!({})), 3, now)
            .await
            .unwrap()
            .0;
        job_store::cancel(&users, &job.id, now).await.unwrap();
        let (handlers, mut started) = timed_handlers();
        let runner =
            Runner::new(users.clone(), handlers, long_poll_config(), clock.clone()).start();
        let_runner_go_idle().await;
        let retried = std::time::Instant::now();
        job_store::retry(&users, &job.id, clock.now_ms())
            .await
            .unwrap();
        let (at, _) = tokio::time::timeout(Duration::from_secs(5), started.recv())
            .await
            .expect("the retried job started before the poll interval")
            .unwrap();
        assert!(
            at - retried < Duration::from_millis(500),
            "{:?}",
            at - retried
        );
        runner.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_job_due_in_300_ms_starts_within_100_ms_of_its_due_time() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let users = users_db(&dbs).await;
        let clock = poolkeeper::clock::system();
        let (handlers, mut started) = timed_handlers();
        let runner =
            Runner::new(users.clone(), handlers, long_poll_config(), clock.clone()).start();
        let_runner_go_idle().await;
        let now = clock.now_ms();
        let due = now + 300;
        jobs::enqueue(
            &users,
            &NewJob {
                run_at: Some(due),
                ..NewJob::new("timed", json!({}))
            },
            3,
            now,
        )
        .await
        .unwrap();
        let (_, started_ms) = tokio::time::timeout(Duration::from_secs(5), started.recv())
            .await
            .expect("the job started before the poll interval")
            .unwrap();
        assert!(
            (due..=due + 100).contains(&started_ms),
            "due at {due}, started at {started_ms} ({} ms late)",
            started_ms - due
        );
        runner.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn on_postgres_an_enqueue_in_another_process_wakes_an_idle_runner_by_notify() {
    let Some(backend) = common::backends()
        .into_iter()
        .find(|b| matches!(b, common::Backend::Postgres { .. }))
    else {
        eprintln!("POOLKEEPER_TEST_PG is not set: nothing to test");
        return;
    };
    let dbs = TestDbs::new(&backend).await;
    let users = users_db(&dbs).await;
    // The enqueuing "process": a handle of its own, so no in-process wake-up reaches the runner.
    let other = UsersDb::open(&dbs.config.users_database_url(), &OpenOptions::default())
        .await
        .unwrap();
    let clock = poolkeeper::clock::system();
    let (handlers, mut started) = timed_handlers();
    let runner = Runner::new(users.clone(), handlers, long_poll_config(), clock.clone()).start();
    let_runner_go_idle().await;
    let enqueued = std::time::Instant::now();
    jobs::enqueue(&other, &NewJob::new("timed", json!({})), 3, clock.now_ms())
        .await
        .unwrap();
    let (at, _) = tokio::time::timeout(Duration::from_secs(5), started.recv())
        .await
        .expect("the job started before the poll interval")
        .unwrap();
    assert!(
        at - enqueued < Duration::from_millis(500),
        "{:?}",
        at - enqueued
    );
    runner.shutdown().await;
}

#[tokio::test]
async fn oldest_due_job_ignores_jobs_not_due_and_claimed_ones() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let users = users_db(&dbs).await;
        assert_eq!(
            job_store::oldest_due_run_at(&users, T0).await.unwrap(),
            None
        );
        let job = |priority: i64, run_at: i64| NewJob {
            priority,
            run_at: Some(run_at),
            ..NewJob::new("noop", json!({}))
        };
        jobs::enqueue_many(
            &users,
            &[job(0, T0 + 60_000), job(5, T0 - 1_000), job(0, T0 - 9_000)],
            3,
            T0 - 10_000,
        )
        .await
        .unwrap();
        // The job not due yet is not waiting; the lower priority one has waited longest.
        assert_eq!(
            job_store::oldest_due_run_at(&users, T0).await.unwrap(),
            Some(T0 - 9_000)
        );
        let claimed = job_store::claim(&users, "r1", 3, T0, T0 + 1_000)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 2);
        assert_eq!(
            job_store::oldest_due_run_at(&users, T0).await.unwrap(),
            None
        );
        assert_eq!(
            job_store::oldest_due_run_at(&users, T0 + 60_000)
                .await
                .unwrap(),
            Some(T0 + 60_000)
        );
    })
    .await;
}

#[tokio::test]
async fn claims_take_due_jobs_by_priority_and_leave_jobs_not_due() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let users = users_db(&dbs).await;
        let job = |priority: i64, run_at: i64| NewJob {
            priority,
            run_at: Some(run_at),
            ..NewJob::new("noop", json!({}))
        };
        let later = T0 + 3_600_000;
        let out = jobs::enqueue_many(
            &users,
            &[
                job(0, T0 - 10),
                job(5, later),
                job(3, T0 - 5),
                job(0, later),
                job(3, later),
                job(-2, T0 - 20),
                job(3, T0 - 7),
            ],
            3,
            T0,
        )
        .await
        .unwrap();
        let ids: Vec<String> = out.into_iter().map(|(id, _)| id).collect();
        assert_eq!(job_store::next_run_at(&users).await.unwrap(), Some(T0 - 20));
        let first = job_store::claim(&users, "r1", 3, T0, T0 + 1_000)
            .await
            .unwrap();
        let first: Vec<&str> = first.iter().map(|j| j.id.as_str()).collect();
        // Both due jobs of priority 3, then the oldest due one of priority 0, not that of -2
        // (returned in run order: priority, then id, which sorts by creation).
        assert_eq!(first, [ids[2].as_str(), ids[6].as_str(), ids[0].as_str()]);
        let rest = job_store::claim(&users, "r1", 10, T0, T0 + 1_000)
            .await
            .unwrap();
        let rest: Vec<&str> = rest.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(rest, [ids[5].as_str()], "only due jobs are claimed");
        assert_eq!(job_store::next_run_at(&users).await.unwrap(), Some(later));
        assert!(
            job_store::claim(&users, "r1", 10, later - 1, later)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            job_store::claim(&users, "r1", 10, later, later + 1_000)
                .await
                .unwrap()
                .len(),
            3
        );
        assert_eq!(job_store::next_run_at(&users).await.unwrap(), None);
    })
    .await;
}

/// Every node of a PostgreSQL JSON plan, depth first.
fn plan_nodes(node: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
    out.push(node.clone());
    if let Some(children) = node["Plans"].as_array() {
        for child in children {
            plan_nodes(child, out);
        }
    }
}

#[tokio::test]
async fn on_postgres_the_claim_plan_reads_due_jobs_in_index_order_and_never_the_backlog() {
    let Some(backend) = common::backends()
        .into_iter()
        .find(|b| matches!(b, common::Backend::Postgres { .. }))
    else {
        eprintln!("POOLKEEPER_TEST_PG is not set: nothing to test");
        return;
    };
    let dbs = TestDbs::new(&backend).await;
    let users = users_db(&dbs).await;
    // 100,000 jobs an hour ahead (the bulk enqueue analyzes the table), then 10 due ones.
    let backlog: Vec<NewJob> = (0..100_000)
        .map(|_| NewJob {
            run_at: Some(T0 + 3_600_000),
            ..NewJob::new("noop", json!({}))
        })
        .collect();
    jobs::enqueue_many(&users, &backlog, 3, T0).await.unwrap();
    let due: Vec<NewJob> = (0..10).map(|_| NewJob::new("noop", json!({}))).collect();
    jobs::enqueue_many(&users, &due, 3, T0).await.unwrap();

    let plan = job_store::explain_claim(&users, 1_000, T0)
        .await
        .unwrap()
        .expect("a plan on PostgreSQL");
    let top = &plan[0]["Plan"];
    let mut nodes = Vec::new();
    plan_nodes(top, &mut nodes);
    let types: Vec<&str> = nodes
        .iter()
        .filter_map(|n| n["Node Type"].as_str())
        .collect();
    assert!(
        !types.iter().any(|t| t.contains("Sort")),
        "the claim sorts: {plan:#}"
    );
    let range_scans: Vec<&serde_json::Value> = nodes
        .iter()
        .filter(|n| {
            n["Node Type"] == "Index Scan"
                && n["Index Name"] == "job_queue_ready"
                && n["Index Cond"]
                    .as_str()
                    .is_some_and(|c| c.contains("priority =") && c.contains("run_at <="))
        })
        .collect();
    assert!(
        !range_scans.is_empty(),
        "due jobs are read as a range of the ready index: {plan:#}"
    );
    let claimed: i64 = range_scans
        .iter()
        .map(|n| n["Actual Rows"].as_i64().unwrap_or(0) * n["Actual Loops"].as_i64().unwrap_or(1))
        .sum();
    assert_eq!(claimed, 10, "the 10 due jobs: {plan:#}");
    // Reading the backlog would touch hundreds of index pages (one per ~300 entries).
    let pages = top["Shared Hit Blocks"].as_i64().unwrap_or(0)
        + top["Shared Read Blocks"].as_i64().unwrap_or(0);
    assert!(pages < 100, "the claim read {pages} pages: {plan:#}");
}
